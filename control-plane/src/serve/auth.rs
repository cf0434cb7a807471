//! Who may read the snapshot: `GET /v1/snapshot` names every namespace with its
//! tenant and team, so with `--allow-serviceaccount` it answers only a bearer token
//! of one of the listed ServiceAccounts (the DaemonSet's), as the apiserver says
//! with a `TokenReview` — kube-rbac-proxy's model.
//!
//! The review and its cache (positive and negative, `--auth-cache-seconds`, bounded,
//! never past the token's `exp`) are [`Reviewer`]'s, shared with the ext_authz
//! endpoint; an apiserver that cannot be asked gives 503 for tokens not cached.
//!
//! Owns the verdict for a request's `Authorization` header; it must not look at
//! what is requested, and it never writes anything but TokenReviews.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::token_review::{ReviewError, Reviewed, Reviewer};

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

/// The allowed list, with the host apiserver's [`Reviewer`].
pub struct Authenticator {
    reviewer: Reviewer,
    /// `system:serviceaccount:<namespace>:<name>` of each allowed ServiceAccount.
    allowed: BTreeSet<String>,
}

impl Authenticator {
    /// `allowed` are `namespace:name` pairs (checked by the caller's argument parser).
    pub fn new(reviewer: Reviewer, allowed: &[String]) -> Self {
        Authenticator {
            reviewer,
            allowed: allowed
                .iter()
                .map(|sa| format!("system:serviceaccount:{sa}"))
                .collect(),
        }
    }

    /// The verdict for `token`, from the cache or a TokenReview.
    pub async fn verdict(&self, token: &str) -> Result<Verdict, ReviewError> {
        Ok(match self.reviewer.review(token).await? {
            Reviewed::Unauthenticated => Verdict::Unauthenticated,
            Reviewed::Authenticated(user) if self.allowed.contains(&user) => Verdict::Allowed(user),
            Reviewed::Authenticated(user) => Verdict::Forbidden(user),
        })
    }
}

/// The bearer token of a request: exactly one `Authorization: Bearer <token>`.
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let value = values.next()?;
    if values.next().is_some() {
        return None;
    }
    value
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// Middleware: lets a request through only with an allowed ServiceAccount's token.
pub async fn require(
    State(auth): State<Arc<Authenticator>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(token) = bearer_token(request.headers()) else {
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

pub fn unauthenticated() -> Response {
    let mut r = (StatusCode::UNAUTHORIZED, "unauthorized\n").into_response();
    r.headers_mut()
        .insert("www-authenticate", HeaderValue::from_static("Bearer"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exactly_one_bearer_token_is_taken() {
        let headers = |values: &[&str]| {
            let mut h = HeaderMap::new();
            for v in values {
                h.append(AUTHORIZATION, HeaderValue::from_str(v).unwrap());
            }
            h
        };
        assert_eq!(bearer_token(&headers(&["Bearer abc"])), Some("abc"));
        assert_eq!(bearer_token(&headers(&["Bearer  abc "])), Some("abc"));
        for none in [
            &[][..],
            &["Bearer "],
            &["Basic abc"],
            &["bearer"],
            &["Bearer a", "Bearer b"],
        ] {
            assert_eq!(bearer_token(&headers(none)), None, "{none:?}");
        }
    }
}
