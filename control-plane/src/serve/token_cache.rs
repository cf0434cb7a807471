//! Answers about tokens, reused for a short time: kube-rbac-proxy's model (and the
//! apiserver's own token cache), positive and negative answers each with their own
//! time to live.
//!
//! Entries are keyed by the token's SHA-256 (the token itself is never kept), never
//! outlive the token's own `exp`, and are bounded in number: when the cache is full,
//! expired entries go first, then the negative answer that expires soonest, and
//! only then a positive one — so a flood of bad tokens costs TokenReviews, not
//! memory, and does not push out the answers of the tokens in use.
//!
//! Owns the entries and their lifetimes only; what an answer means is the caller's.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// How long answers are reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ttl {
    pub positive: Duration,
    pub negative: Duration,
}

/// The cache key of a token.
pub type Key = [u8; 32];

pub fn key(token: &str) -> Key {
    Sha256::digest(token.as_bytes()).into()
}

struct Entry<V> {
    value: V,
    positive: bool,
    until: Instant,
}

pub struct TokenCache<V> {
    ttl: Ttl,
    capacity: usize,
    entries: Mutex<HashMap<Key, Entry<V>>>,
}

impl<V: Clone> TokenCache<V> {
    /// At most `capacity` entries (at least one).
    pub fn new(ttl: Ttl, capacity: usize) -> Self {
        TokenCache {
            ttl,
            capacity: capacity.max(1),
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The answer stored for `key`, if it is still to be used at `now`.
    pub fn get(&self, key: &Key, now: Instant) -> Option<V> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries
            .get(key)
            .filter(|e| e.until > now)
            .map(|e| e.value.clone())
    }

    /// Stores an answer obtained at `now` for a token with `lifetime` left (its
    /// `exp`; `None` when it has none): it is reused until the TTL for its kind or
    /// the token's expiry, whichever comes first. An answer that could not be
    /// reused at all (TTL zero, token expired) is not stored.
    pub fn insert(
        &self,
        key: Key,
        value: V,
        positive: bool,
        lifetime: Option<Duration>,
        now: Instant,
    ) {
        let ttl = if positive {
            self.ttl.positive
        } else {
            self.ttl.negative
        };
        let keep = lifetime.map_or(ttl, |left| ttl.min(left));
        if keep.is_zero() {
            return;
        }
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= self.capacity && !entries.contains_key(&key) {
            entries.retain(|_, e| e.until > now);
            if entries.len() >= self.capacity {
                let victim = entries
                    .iter()
                    .min_by_key(|(_, e)| (e.positive, e.until))
                    .map(|(k, _)| *k);
                if let Some(victim) = victim {
                    entries.remove(&victim);
                }
            }
        }
        entries.insert(
            key,
            Entry {
                value,
                positive,
                until: now + keep,
            },
        );
    }

    /// Entries held (expired ones included until they are pushed out).
    pub fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Ttl = Ttl {
        positive: Duration::from_secs(30),
        negative: Duration::from_secs(5),
    };

    fn k(i: u32) -> Key {
        key(&format!("token-{i}"))
    }

    #[test]
    fn answers_live_for_their_kinds_ttl_and_never_past_the_tokens_exp() {
        let cache = TokenCache::new(TTL, 16);
        let t0 = Instant::now();
        cache.insert(k(1), "yes", true, None, t0);
        cache.insert(k(2), "no", false, None, t0);
        cache.insert(k(3), "short", true, Some(Duration::from_secs(2)), t0);
        let at = |s| t0 + Duration::from_secs(s);
        assert_eq!(cache.get(&k(1), at(29)), Some("yes"));
        assert_eq!(cache.get(&k(1), at(30)), None);
        assert_eq!(cache.get(&k(2), at(4)), Some("no"));
        assert_eq!(cache.get(&k(2), at(5)), None);
        assert_eq!(cache.get(&k(3), at(1)), Some("short"));
        assert_eq!(cache.get(&k(3), at(2)), None, "past the token's exp");
        // An expired token's answer, or one with a zero TTL, is not stored at all.
        cache.insert(k(4), "expired", true, Some(Duration::ZERO), t0);
        assert_eq!(cache.len(), 3);
        let uncached = TokenCache::new(
            Ttl {
                positive: Duration::ZERO,
                negative: Duration::ZERO,
            },
            4,
        );
        uncached.insert(k(1), "x", true, None, t0);
        assert_eq!(uncached.len(), 0);
    }

    #[test]
    fn the_cache_is_bounded_and_a_flood_of_negatives_keeps_the_positives() {
        let cache = TokenCache::new(TTL, 8);
        let t0 = Instant::now();
        for i in 0..4 {
            cache.insert(k(i), i, true, None, t0);
        }
        for i in 100..10_000 {
            cache.insert(k(i), i, false, None, t0);
            assert!(cache.len() <= 8);
        }
        for i in 0..4 {
            assert_eq!(cache.get(&k(i), t0), Some(i), "positive {i} kept");
        }
        // Full of positives only: the one expiring soonest goes.
        let cache = TokenCache::new(TTL, 3);
        cache.insert(k(1), 1, true, Some(Duration::from_secs(3)), t0);
        cache.insert(k(2), 2, true, None, t0);
        cache.insert(k(3), 3, true, None, t0);
        cache.insert(k(4), 4, true, None, t0);
        assert_eq!(cache.len(), 3);
        assert_eq!(cache.get(&k(1), t0), None);
        assert_eq!(cache.get(&k(4), t0), Some(4));
        // Expired entries are the first to go.
        let later = t0 + Duration::from_secs(31);
        cache.insert(k(5), 5, false, None, later);
        assert_eq!(cache.len(), 1);
        // Replacing an entry of a full cache evicts nothing.
        let cache = TokenCache::new(TTL, 2);
        cache.insert(k(1), 1, true, None, t0);
        cache.insert(k(2), 2, true, None, t0);
        cache.insert(k(2), 20, true, None, t0);
        assert_eq!(
            (cache.get(&k(1), t0), cache.get(&k(2), t0)),
            (Some(1), Some(20))
        );
    }
}
