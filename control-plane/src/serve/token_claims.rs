//! What a bearer token says about itself, read *without* verifying its signature:
//! `iss`, only to choose which apiserver to ask, and `exp`, only to bound how long
//! an answer about it may be reused (or to refuse it without asking anyone).
//!
//! Owns the parsing of a JWT's payload. Nothing read here grants anything: whether
//! a token is valid, and whose it is, is always a `TokenReview`'s answer.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use serde::Deserialize;

/// The claims of a JWT that are read before it is reviewed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Claims {
    /// `iss`: which cluster says it issued the token.
    #[serde(rename = "iss")]
    pub issuer: Option<String>,
    /// `exp`, seconds since the epoch.
    #[serde(rename = "exp")]
    pub expires: Option<u64>,
}

impl Claims {
    /// The claims of `token`; `None` when it is not a JWT with a JSON payload
    /// (static tokens, bootstrap tokens, garbage).
    pub fn of(token: &str) -> Option<Claims> {
        let mut parts = token.split('.');
        let (_header, payload) = (parts.next()?, parts.next()?);
        parts.next()?; // a signature part, even if empty
        if parts.next().is_some() {
            return None; // five parts: an encrypted JWE, not a signed token
        }
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload.trim_end_matches('='))
            .ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Time until `exp`, zero once it passed; `None` without an `exp`.
    pub fn lifetime_left(&self) -> Option<Duration> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).ok()?.as_secs();
        Some(Duration::from_secs(self.expires?.saturating_sub(now)))
    }

    /// Whether `exp` is there and has passed: such a token is refused unasked.
    pub fn expired(&self) -> bool {
        self.lifetime_left() == Some(Duration::ZERO)
    }
}

/// Time until `token`'s `exp` (see [`Claims::lifetime_left`]); `None` for a token
/// that is not a JWT with an `exp`.
pub fn lifetime_left(token: &str) -> Option<Duration> {
    Claims::of(token)?.lifetime_left()
}

#[cfg(test)]
pub mod tests {
    use super::*;

    pub fn jwt(claims: &str) -> String {
        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        format!("{}.{}.sig", b64(r#"{"alg":"RS256"}"#), b64(claims))
    }

    pub fn now() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    #[test]
    fn the_lifetime_is_read_from_exp() {
        let left = lifetime_left(&jwt(&format!(r#"{{"exp":{}}}"#, now() + 30))).unwrap();
        assert!(left <= Duration::from_secs(30) && left >= Duration::from_secs(28));
        let past = lifetime_left(&jwt(&format!(r#"{{"exp":{}}}"#, now() - 30))).unwrap();
        assert_eq!(past, Duration::ZERO);
        assert_eq!(lifetime_left(&jwt(r#"{"sub":"x"}"#)), None);
        assert_eq!(lifetime_left("opaque-token"), None);
        assert_eq!(lifetime_left("a.!!!.c"), None);
    }

    #[test]
    fn the_issuer_is_read_unverified_and_garbage_has_none() {
        let c = Claims::of(&jwt(r#"{"iss":"https://k8s1","exp":1,"aud":["x"]}"#)).unwrap();
        assert_eq!(c.issuer.as_deref(), Some("https://k8s1"));
        assert!(c.expired());
        assert!(!Claims::of(&jwt(r#"{"iss":"x"}"#)).unwrap().expired());
        for garbage in [
            "admin-token",
            "a.b",
            "a.b.c.d.e",
            "",
            "..",
            "a.bm90anNvbg.c",
        ] {
            assert_eq!(Claims::of(garbage), None, "{garbage:?}");
        }
        // Padded base64 (some issuers emit it) is read too; a non-string iss is not a JWT of ours.
        let padded = format!(
            "h.{}.s",
            base64::engine::general_purpose::URL_SAFE.encode(r#"{"iss":"p"}"#)
        );
        assert_eq!(Claims::of(&padded).unwrap().issuer.as_deref(), Some("p"));
        assert_eq!(Claims::of(&jwt(r#"{"iss":7}"#)), None);
    }
}
