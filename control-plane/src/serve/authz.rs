//! The authorization service of Envoy's `ext_authz` filter (HTTP service mode), on
//! its own listener (`--authz-listen`): Envoy sends each tenant request's headers to
//! `/v1/authz<original path>` (any method) and forwards the request only on a 200,
//! with the headers set here; any other status goes back to the client as is.
//!
//! | token | status | headers set for the filter |
//! |---|---|---|
//! | a host ServiceAccount's, namespace N | 200 | `x-kubelet-scope-namespace: N` |
//! | a ServiceAccount's of virtual cluster V, host namespace H | 200 | `x-kubelet-scope-tenant: V`, `x-kubelet-scope-host-namespace: H`, `x-kubelet-scope-namespace: H` |
//! | none, not a JWT, expired, unknown issuer, refused by its apiserver | 401, `WWW-Authenticate: Bearer` | |
//! | valid, but not a ServiceAccount | 403 | |
//! | its apiserver cannot be asked | 503, `Retry-After` | |
//!
//! `x-kubelet-scope-namespace` is the host namespace whose tenant the caller is: a
//! host ServiceAccount's own, a virtual cluster's host namespace (so today's filter,
//! with `namespaceOf`, gives a virtual cluster the tenant of its host namespace).
//! The denial's reason is in `x-kubelet-scope-denied`, never in the body.
//!
//! Owns the HTTP shape of the answer only; who the token is, is `issuers`'.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;

use super::auth::bearer_token;
use super::issuers::{Decision, Identity, Registry};
use super::metrics::{AuthzLabels, Metrics};

pub const NAMESPACE_HEADER: &str = "x-kubelet-scope-namespace";
pub const TENANT_HEADER: &str = "x-kubelet-scope-tenant";
pub const HOST_NAMESPACE_HEADER: &str = "x-kubelet-scope-host-namespace";
pub const DENIED_HEADER: &str = "x-kubelet-scope-denied";

#[derive(Clone)]
pub struct AuthzState {
    pub registry: Arc<Registry>,
    pub metrics: Arc<Metrics>,
}

/// `/v1/authz` and everything under it, any method; nothing else.
pub fn router(state: AuthzState) -> Router {
    Router::new()
        .route("/v1/authz", any(check))
        .route("/v1/authz/{*path}", any(check))
        .with_state(state)
}

async fn check(State(state): State<AuthzState>, headers: HeaderMap) -> Response {
    let decision = match bearer_token(&headers) {
        Some(token) => state.registry.decide(token).await,
        None => Decision::Unauthenticated {
            cluster: None,
            reason: "no bearer token",
        },
    };
    let (cluster, response) = answer(decision);
    state
        .metrics
        .authz_decisions
        .get_or_create(&AuthzLabels {
            cluster,
            code: response.status().as_u16().to_string(),
        })
        .inc();
    response
}

/// The deciding cluster's name (empty if none) and the response for `decision`.
fn answer(decision: Decision) -> (String, Response) {
    match decision {
        Decision::Allow { cluster, identity } => {
            let headers: Vec<(&str, &str)> = match &identity {
                Identity::Host { namespace } => vec![(NAMESPACE_HEADER, namespace)],
                Identity::Virtual {
                    name,
                    host_namespace,
                } => vec![
                    (TENANT_HEADER, name),
                    (HOST_NAMESPACE_HEADER, host_namespace),
                    (NAMESPACE_HEADER, host_namespace),
                ],
            };
            let mut response = StatusCode::OK.into_response();
            for (name, value) in headers {
                // Names come from the apiserver or the validated file: DNS labels.
                let Ok(value) = HeaderValue::from_str(value) else {
                    return (cluster, denied(StatusCode::FORBIDDEN, "unusable name"));
                };
                response
                    .headers_mut()
                    .insert(HeaderName::from_static(name), value);
            }
            tracing::debug!(%cluster, ?identity, "ext_authz: allowed");
            (cluster, response)
        }
        Decision::Unauthenticated { cluster, reason } => {
            tracing::debug!(?cluster, reason, "ext_authz: unauthenticated");
            let mut r = denied(StatusCode::UNAUTHORIZED, reason);
            r.headers_mut()
                .insert("www-authenticate", HeaderValue::from_static("Bearer"));
            (cluster.unwrap_or_default(), r)
        }
        Decision::Forbidden { cluster, user } => {
            tracing::info!(%cluster, %user, "ext_authz: not a ServiceAccount");
            (
                cluster,
                denied(StatusCode::FORBIDDEN, "not a ServiceAccount"),
            )
        }
        Decision::Unavailable { cluster, reason } => {
            tracing::warn!(?cluster, %reason, "ext_authz: cannot review the token");
            let mut r = denied(StatusCode::SERVICE_UNAVAILABLE, "cannot review the token");
            r.headers_mut()
                .insert("retry-after", HeaderValue::from_static("1"));
            (cluster.unwrap_or_default(), r)
        }
    }
}

fn denied(status: StatusCode, reason: &'static str) -> Response {
    let body = status.canonical_reason().unwrap_or("denied");
    let mut r = (status, format!("{body}\n")).into_response();
    r.headers_mut()
        .insert(DENIED_HEADER, HeaderValue::from_static(reason));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header<'a>(r: &'a Response, name: &str) -> Option<&'a str> {
        r.headers().get(name).map(|v| v.to_str().unwrap())
    }

    #[test]
    fn a_virtual_tenant_is_named_with_its_host_namespace() {
        let (cluster, r) = answer(Decision::Allow {
            cluster: "k8s1".into(),
            identity: Identity::Virtual {
                name: "k8s1".into(),
                host_namespace: "vcluster-k8s1".into(),
            },
        });
        assert_eq!((cluster.as_str(), r.status()), ("k8s1", StatusCode::OK));
        assert_eq!(header(&r, TENANT_HEADER), Some("k8s1"));
        assert_eq!(header(&r, HOST_NAMESPACE_HEADER), Some("vcluster-k8s1"));
        assert_eq!(header(&r, NAMESPACE_HEADER), Some("vcluster-k8s1"));
        let (_, r) = answer(Decision::Allow {
            cluster: "host".into(),
            identity: Identity::Host {
                namespace: "shop".into(),
            },
        });
        assert_eq!(header(&r, NAMESPACE_HEADER), Some("shop"));
        assert_eq!(header(&r, TENANT_HEADER), None);
        assert_eq!(header(&r, HOST_NAMESPACE_HEADER), None);
    }

    #[test]
    fn denials_carry_their_reason_in_a_header_only() {
        let (_, r) = answer(Decision::Unauthenticated {
            cluster: None,
            reason: "unknown issuer",
        });
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(header(&r, "www-authenticate"), Some("Bearer"));
        assert_eq!(header(&r, DENIED_HEADER), Some("unknown issuer"));
        assert_eq!(header(&r, NAMESPACE_HEADER), None);
        let (c, r) = answer(Decision::Forbidden {
            cluster: "host".into(),
            user: "admin".into(),
        });
        assert_eq!((c.as_str(), r.status()), ("host", StatusCode::FORBIDDEN));
        let (_, r) = answer(Decision::Unavailable {
            cluster: None,
            reason: "down".into(),
        });
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(header(&r, "retry-after"), Some("1"));
    }
}
