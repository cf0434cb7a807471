//! Asking one apiserver whose a bearer token is: a `TokenReview` for the configured
//! audiences, its answer cached ([`TokenCache`]: positive and negative, bounded,
//! never past the token's `exp`).
//!
//! Used by both checks of the control plane: who may read the snapshot (`auth`) and
//! which tenant a kubelet scraper is (`authz`), each with a [`Reviewer`] of its own
//! per apiserver (their audiences differ). An apiserver that cannot be asked is an
//! error, never a verdict, and is not cached.
//!
//! Owns the TokenReview call and its cache. It never writes anything but
//! TokenReviews, and does not decide what a user may do: only who the token is.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use kube::api::PostParams;
use kube::{Api, Client};

use super::metrics::{Metrics, ReviewLabels, ReviewerLabels};
use super::token_cache::{self, TokenCache, Ttl};
use super::token_claims;

/// Longest a TokenReview may take: Envoy gives up on the check sooner (its
/// ext_authz timeout), and a hung apiserver must not pile up requests here.
const REVIEW_TIMEOUT: Duration = Duration::from_secs(5);

/// What the apiserver says of a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reviewed {
    /// Valid for the audiences asked: the user it authenticates.
    Authenticated(String),
    /// Not a valid token for this apiserver and these audiences.
    Unauthenticated,
}

/// The apiserver could not be asked (or answered with an error, e.g. 403 when
/// this server may not create TokenReviews): neither a yes nor a no.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReviewError(pub String);

impl std::fmt::Display for ReviewError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// TokenReviews with one apiserver, for one set of audiences.
pub struct Reviewer {
    /// Names the reviewer in metrics and logs (`snapshot`, `host`, a virtual cluster).
    name: String,
    /// `None` until the apiserver's credentials are loaded (a virtual cluster's
    /// kubeconfig); replaced when they change.
    client: RwLock<Option<Client>>,
    audiences: Vec<String>,
    cache: TokenCache<Reviewed>,
    metrics: Arc<Metrics>,
}

impl Reviewer {
    /// `audiences` empty: the apiserver's own (what its API accepts).
    pub fn new(
        name: &str,
        client: Option<Client>,
        audiences: Vec<String>,
        ttl: Ttl,
        capacity: usize,
        metrics: Arc<Metrics>,
    ) -> Self {
        Reviewer {
            name: name.to_owned(),
            client: RwLock::new(client),
            audiences,
            cache: TokenCache::new(ttl, capacity),
            metrics,
        }
    }

    /// Uses `client` from now on (new credentials, a new address).
    pub fn set_client(&self, client: Client) {
        *self.client.write().unwrap_or_else(|p| p.into_inner()) = Some(client);
    }

    /// The client, for other requests to the same apiserver (issuer discovery).
    pub fn client(&self) -> Option<Client> {
        self.client
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Whose `token` is, from the cache or a TokenReview.
    pub async fn review(&self, token: &str) -> Result<Reviewed, ReviewError> {
        let key = token_cache::key(token);
        let now = Instant::now();
        let labels = ReviewerLabels {
            reviewer: self.name.clone(),
        };
        if let Some(answer) = self.cache.get(&key, now) {
            self.metrics.review_cache_hits.get_or_create(&labels).inc();
            return Ok(answer);
        }
        let answer = self.ask(token).await;
        let result = match &answer {
            Ok(Reviewed::Authenticated(_)) => "authenticated",
            Ok(Reviewed::Unauthenticated) => "unauthenticated",
            Err(_) => "error",
        };
        self.metrics
            .reviews
            .get_or_create(&ReviewLabels {
                reviewer: self.name.clone(),
                result: result.to_owned(),
            })
            .inc();
        if let Ok(reviewed) = &answer {
            let positive = matches!(reviewed, Reviewed::Authenticated(_));
            let lifetime = token_claims::lifetime_left(token);
            self.cache
                .insert(key, reviewed.clone(), positive, lifetime, now);
            self.metrics
                .review_cache_entries
                .get_or_create(&labels)
                .set(self.cache.len() as i64);
        }
        answer
    }

    async fn ask(&self, token: &str) -> Result<Reviewed, ReviewError> {
        let client = self.client().ok_or_else(|| {
            ReviewError(format!(
                "{}: the apiserver's credentials are not loaded yet",
                self.name
            ))
        })?;
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_owned()),
                audiences: (!self.audiences.is_empty()).then(|| self.audiences.clone()),
            },
            ..TokenReview::default()
        };
        let api = Api::<TokenReview>::all(client);
        let answer =
            tokio::time::timeout(REVIEW_TIMEOUT, api.create(&PostParams::default(), &review))
                .await
                .map_err(|_| ReviewError(format!("{}: TokenReview timed out", self.name)))?
                .map_err(|e| ReviewError(format!("{}: TokenReview failed: {e}", self.name)))?;
        Ok(verdict(&self.audiences, answer))
    }
}

/// The apiserver's answer as a [`Reviewed`]. With audiences asked for, the answer
/// must name one of them (the API's advice to clients: an apiserver that ignored
/// them would otherwise pass a token meant for someone else).
fn verdict(asked: &[String], answer: TokenReview) -> Reviewed {
    let status = answer.status.unwrap_or_default();
    if status.authenticated != Some(true) {
        return Reviewed::Unauthenticated;
    }
    if !asked.is_empty() {
        let granted = status.audiences.unwrap_or_default();
        if !granted.iter().any(|a| asked.contains(a)) {
            return Reviewed::Unauthenticated;
        }
    }
    match status.user.and_then(|u| u.username) {
        Some(user) if !user.is_empty() => Reviewed::Authenticated(user),
        _ => Reviewed::Unauthenticated,
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::authentication::v1::{TokenReviewStatus, UserInfo};

    use super::*;

    fn answer(authenticated: bool, audiences: Option<&[&str]>, user: Option<&str>) -> TokenReview {
        TokenReview {
            status: Some(TokenReviewStatus {
                authenticated: Some(authenticated),
                audiences: audiences.map(|a| a.iter().map(|s| s.to_string()).collect()),
                user: Some(UserInfo {
                    username: user.map(str::to_owned),
                    ..UserInfo::default()
                }),
                ..TokenReviewStatus::default()
            }),
            ..TokenReview::default()
        }
    }

    #[test]
    fn only_an_authenticated_answer_for_an_asked_audience_names_a_user() {
        let sa = "system:serviceaccount:a:b";
        let asked = ["kubelet-scope".to_string()];
        assert_eq!(
            verdict(&asked, answer(true, Some(&["kubelet-scope"]), Some(sa))),
            Reviewed::Authenticated(sa.into())
        );
        for a in [
            answer(false, Some(&["kubelet-scope"]), Some(sa)),
            answer(true, Some(&["https://kubernetes.default.svc"]), Some(sa)),
            answer(true, None, Some(sa)),
            answer(true, Some(&["kubelet-scope"]), None),
            answer(true, Some(&["kubelet-scope"]), Some("")),
            TokenReview::default(),
        ] {
            assert_eq!(verdict(&asked, a), Reviewed::Unauthenticated);
        }
        // No audience asked: the apiserver's own, whatever it reports.
        assert_eq!(
            verdict(&[], answer(true, None, Some(sa))),
            Reviewed::Authenticated(sa.into())
        );
    }
}
