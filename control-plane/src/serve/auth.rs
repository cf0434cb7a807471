//! Who may read the snapshot: `GET /v1/snapshot` names every namespace with its
//! tenant and team, so with `--allow-serviceaccount` it answers only a bearer token
//! of one of the listed ServiceAccounts (the DaemonSet's), as the apiserver says
//! with a `TokenReview` — kube-rbac-proxy's model.
//!
//! Results are cached, positive and negative, for `--auth-cache-seconds`, keyed by
//! the token's SHA-256 (the token itself is never kept), never past the token's own
//! `exp`, and bounded in number: a flood of distinct tokens costs TokenReviews, not
//! memory. An apiserver that cannot be asked gives 503 for tokens not cached.
//!
//! Owns the verdict for a request's `Authorization` header; it must not look at
//! what is requested, and it never writes anything but TokenReviews.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use kube::api::PostParams;
use kube::{Api, Client};
use sha2::{Digest, Sha256};

/// Cached verdicts at most; beyond it expired entries go, then all of them.
const MAX_CACHED: usize = 4096;

/// What the apiserver says of a token, for this server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// A token of an allowed ServiceAccount (its username).
    Allowed(String),
    /// Not a valid token (or none): 401.
    Unauthenticated,
    /// Valid, but of another user: 403.
    Forbidden(String),
}

/// The TokenReview client with its allowed list and cache.
pub struct Authenticator {
    client: Client,
    /// `system:serviceaccount:<namespace>:<name>` of each allowed ServiceAccount.
    allowed: BTreeSet<String>,
    audiences: Vec<String>,
    ttl: Duration,
    cache: Mutex<HashMap<[u8; 32], (Verdict, Instant)>>,
}

impl Authenticator {
    /// `allowed` are `namespace:name` pairs (checked by the caller's argument parser).
    pub fn new(client: Client, allowed: &[String], audiences: Vec<String>, ttl: Duration) -> Self {
        Authenticator {
            client,
            allowed: allowed
                .iter()
                .map(|sa| format!("system:serviceaccount:{sa}"))
                .collect(),
            audiences,
            ttl,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The verdict for `token`, from the cache or a TokenReview.
    pub async fn verdict(&self, token: &str) -> Result<Verdict, kube::Error> {
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let now = Instant::now();
        if let Some((verdict, until)) = self.cached(&key) {
            if until > now {
                return Ok(verdict);
            }
        }
        let verdict = self.review(token).await?;
        let until = now + self.ttl.min(lifetime_left(token).unwrap_or(self.ttl));
        self.remember(key, verdict.clone(), until, now);
        Ok(verdict)
    }

    fn cached(&self, key: &[u8; 32]) -> Option<(Verdict, Instant)> {
        let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache.get(key).cloned()
    }

    fn remember(&self, key: [u8; 32], verdict: Verdict, until: Instant, now: Instant) {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= MAX_CACHED {
            cache.retain(|_, (_, until)| *until > now);
            if cache.len() >= MAX_CACHED {
                cache.clear();
            }
        }
        cache.insert(key, (verdict, until));
    }

    async fn review(&self, token: &str) -> Result<Verdict, kube::Error> {
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_owned()),
                audiences: (!self.audiences.is_empty()).then(|| self.audiences.clone()),
            },
            ..TokenReview::default()
        };
        let api: Api<TokenReview> = Api::all(self.client.clone());
        let answer = api.create(&PostParams::default(), &review).await?;
        let status = answer.status.unwrap_or_default();
        if status.authenticated != Some(true) {
            return Ok(Verdict::Unauthenticated);
        }
        let user = status.user.and_then(|u| u.username).unwrap_or_default();
        Ok(if self.allowed.contains(&user) {
            Verdict::Allowed(user)
        } else {
            Verdict::Forbidden(user)
        })
    }
}

/// Seconds until the token's `exp` (read without verifying: only to bound the
/// cache; the apiserver decides validity). `None` for a token that is not a JWT
/// with an `exp`.
fn lifetime_left(token: &str) -> Option<Duration> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let exp = serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()?
        .get("exp")?
        .as_u64()?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).ok()?.as_secs();
    Some(Duration::from_secs(exp.saturating_sub(now)))
}

/// Middleware: lets a request through only with an allowed ServiceAccount's token.
pub async fn require(
    State(auth): State<Arc<Authenticator>>,
    request: Request,
    next: Next,
) -> Response {
    let token = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty());
    let Some(token) = token else {
        return unauthenticated();
    };
    match auth.verdict(token).await {
        Ok(Verdict::Allowed(_)) => next.run(request).await,
        Ok(Verdict::Unauthenticated) => unauthenticated(),
        Ok(Verdict::Forbidden(user)) => {
            tracing::info!(%user, "snapshot refused: not an allowed ServiceAccount");
            (StatusCode::FORBIDDEN, "forbidden\n").into_response()
        }
        Err(error) => {
            tracing::warn!(%error, "TokenReview failed");
            (StatusCode::SERVICE_UNAVAILABLE, "cannot review the token\n").into_response()
        }
    }
}

fn unauthenticated() -> Response {
    let mut r = (StatusCode::UNAUTHORIZED, "unauthorized\n").into_response();
    r.headers_mut()
        .insert("www-authenticate", HeaderValue::from_static("Bearer"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(claims: &str) -> String {
        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        format!("{}.{}.sig", b64(r#"{"alg":"RS256"}"#), b64(claims))
    }

    #[test]
    fn the_cache_never_outlives_the_tokens_exp() {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let left = lifetime_left(&jwt(&format!(r#"{{"exp":{}}}"#, now + 30))).unwrap();
        assert!(left <= Duration::from_secs(30) && left >= Duration::from_secs(28));
        let past = lifetime_left(&jwt(&format!(r#"{{"exp":{}}}"#, now - 30))).unwrap();
        assert_eq!(past, Duration::ZERO);
        assert_eq!(lifetime_left(&jwt(r#"{"sub":"x"}"#)), None);
        assert_eq!(lifetime_left("opaque-token"), None);
        assert_eq!(lifetime_left("a.!!!.c"), None);
    }
}
