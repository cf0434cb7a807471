//! The snapshot currently served, and the channel that wakes every waiting
//! long-poll when it changes.
//!
//! The version is a hash of the exported content only (not of resource versions or
//! timestamps), so a label edit that touches no exported key, a relist that finds
//! the same namespaces or a control-plane restart keeps the version — and thousands
//! of Envoys keep their cached snapshot instead of re-downloading it.
//!
//! Owns the version, the serialized body and the wake-up. It must not know where
//! namespaces come from or how they are served: sources call [`Store::publish`],
//! the HTTP layer reads and subscribes.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use kubelet_scope_filter::snapshot::{NamespaceLabels, Snapshot};
use sha2::{Digest, Sha256};
use tokio::sync::watch;

/// Exported labels by namespace name.
pub type Namespaces = BTreeMap<String, NamespaceLabels>;

/// One published snapshot, serialized once and shared by every response.
#[derive(Debug)]
pub struct Published {
    pub version: String,
    pub body: Bytes,
    pub namespaces: Namespaces,
    /// When this version was first published (for the version-age metric).
    pub since: Instant,
}

impl Published {
    fn new(namespaces: Namespaces) -> Published {
        let version = version_of(&namespaces);
        let snapshot = Snapshot {
            version: version.clone(),
            generated_at: jiff::Timestamp::now().to_string(),
            namespaces,
            virtual_pods: BTreeMap::new(),
        };
        Published {
            body: Bytes::from(snapshot.to_json()),
            version,
            namespaces: snapshot.namespaces,
            since: Instant::now(),
        }
    }
}

/// The first 128 bits of the SHA-256 of the canonical JSON of the namespaces
/// (a `BTreeMap` serializes in key order), as hex.
pub fn version_of(namespaces: &Namespaces) -> String {
    let json = serde_json::to_vec(namespaces).unwrap_or_default();
    Sha256::digest(&json)
        .iter()
        .take(16)
        .fold(String::with_capacity(32), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// `None` until the first complete list (or the first valid file).
pub type Current = Option<Arc<Published>>;

#[derive(Clone)]
pub struct Store {
    tx: Arc<watch::Sender<Current>>,
}

impl Default for Store {
    fn default() -> Self {
        Store {
            tx: Arc::new(watch::Sender::new(None)),
        }
    }
}

impl Store {
    pub fn current(&self) -> Current {
        self.tx.borrow().clone()
    }

    pub fn subscribe(&self) -> watch::Receiver<Current> {
        self.tx.subscribe()
    }

    /// Serves `namespaces` unless it equals what is already served; wakes the
    /// waiting long-polls only when the content (and so the version) changed.
    pub fn publish(&self, namespaces: Namespaces) -> bool {
        self.tx.send_if_modified(move |current| {
            if current.as_ref().is_some_and(|p| p.namespaces == namespaces) {
                return false;
            }
            let published = Published::new(namespaces);
            tracing::info!(
                version = %published.version,
                namespaces = published.namespaces.len(),
                "snapshot version published"
            );
            *current = Some(Arc::new(published));
            true
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ns(entries: &[(&str, &[(&str, &str)])]) -> Namespaces {
        entries
            .iter()
            .map(|(name, labels)| {
                let labels = labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect();
                (name.to_string(), NamespaceLabels { labels })
            })
            .collect()
    }

    #[test]
    fn version_follows_content_only() {
        let store = Store::default();
        let mut rx = store.subscribe();
        assert!(store.current().is_none());
        assert!(store.publish(ns(&[("a", &[("team", "x")])])));
        let v1 = store.current().unwrap().version.clone();
        assert!(rx.has_changed().unwrap());
        rx.borrow_and_update();
        assert!(!store.publish(ns(&[("a", &[("team", "x")])])));
        assert!(
            !rx.has_changed().unwrap(),
            "same content must not wake clients"
        );
        assert!(store.publish(ns(&[("a", &[("team", "y")])])));
        let v2 = store.current().unwrap().version.clone();
        assert_ne!(v1, v2);
        assert!(store.publish(ns(&[("a", &[("team", "x")])])));
        assert_eq!(store.current().unwrap().version, v1, "content-addressed");
        assert_eq!(v1.len(), 32);
    }

    #[test]
    fn body_is_a_snapshot_the_filter_accepts() {
        let store = Store::default();
        store.publish(ns(&[("a", &[("team", "x")]), ("b", &[])]));
        let p = store.current().unwrap();
        let s = Snapshot::parse(&p.body).unwrap();
        assert_eq!(s.version, p.version);
        assert_eq!(s.namespaces, p.namespaces);
        assert!(s.generated_at.parse::<jiff::Timestamp>().is_ok());
    }
}
