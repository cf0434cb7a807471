//! Which cluster answers for a token, and who the token is there: the host cluster
//! and every virtual cluster, each with its issuer and a [`Reviewer`].
//!
//! A token's `iss` (read unverified) only picks the candidates: the clusters that
//! issue tokens under that name. Several may share one (vcluster's apiservers and
//! most hosts default to `https://kubernetes.default.svc.cluster.local`): they are
//! then asked in turn, host first, each with its own cached TokenReview, and the
//! first that authenticates the token owns it (two clusters never share a signing
//! key). A distinct issuer per virtual cluster costs one review per token instead of
//! one per candidate.
//!
//! Only ServiceAccount tokens identify a tenant: on the host, the ServiceAccount's
//! namespace (whose tenant the filter looks up, as `namespaceOf`); in a virtual
//! cluster, the virtual cluster itself. Any other user the apiserver authenticates
//! is forbidden.
//!
//! Fails closed: no candidate → 401; a candidate that cannot be asked, or a cluster
//! whose issuer is not known yet (it might be the one) → unavailable, never a guess.
//!
//! Owns the registry, the choice of candidates and the mapping of an authenticated
//! user to an [`Identity`]; [`maintain`] keeps the virtual clusters' clients and the
//! discovered issuers current. HTTP is `authz`'s.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use kube::Client;
use serde::Deserialize;

use super::token_claims::Claims;
use super::token_review::{Reviewed, Reviewer};
use super::virtual_clusters::{self, VirtualCluster};

/// How often a cluster whose client or issuer is missing is retried.
const RETRY: Duration = Duration::from_secs(5);
/// How often a virtual cluster's kubeconfig is reread (a rotated Secret).
const RELOAD: Duration = Duration::from_secs(60);
/// Longest one load or discovery may take: one unreachable virtual cluster must
/// not hold up the others.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);

/// What a cluster's tokens make of their holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// The host: a ServiceAccount is the tenant of its namespace.
    Host,
    /// A virtual cluster: every ServiceAccount of it is its tenant.
    Virtual { host_namespace: String },
}

pub struct Cluster {
    pub name: String,
    pub role: Role,
    /// `None` while it is to be discovered and has not been.
    issuer: RwLock<Option<String>>,
    pub reviewer: Reviewer,
    /// Where a virtual cluster's client comes from (reloaded by [`maintain`]).
    source: Option<VirtualCluster>,
}

impl Cluster {
    /// The host cluster; `issuer` `None`: discovered from its apiserver.
    pub fn host(reviewer: Reviewer, issuer: Option<String>) -> Cluster {
        Cluster {
            name: "host".into(),
            role: Role::Host,
            issuer: RwLock::new(issuer),
            reviewer,
            source: None,
        }
    }

    /// A virtual cluster, its client loaded by [`maintain`].
    pub fn virtual_cluster(vc: VirtualCluster, reviewer: Reviewer) -> Cluster {
        Cluster {
            name: vc.name.clone(),
            role: Role::Virtual {
                host_namespace: vc.host_namespace.clone(),
            },
            issuer: RwLock::new(vc.issuer.clone()),
            reviewer,
            source: Some(vc),
        }
    }

    pub fn issuer(&self) -> Option<String> {
        self.issuer
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn set_issuer(&self, issuer: String) {
        *self.issuer.write().unwrap_or_else(|p| p.into_inner()) = Some(issuer);
    }
}

/// Who a token is, for the filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// A ServiceAccount of the host, in `namespace`.
    Host { namespace: String },
    /// A ServiceAccount of the virtual cluster `name`, whose pods run in
    /// `host_namespace`.
    Virtual {
        name: String,
        host_namespace: String,
    },
}

/// The answer for a token; `cluster` is the one that decided, if any was asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow {
        cluster: String,
        identity: Identity,
    },
    /// Not a valid token of any known cluster: 401.
    Unauthenticated {
        cluster: Option<String>,
        reason: &'static str,
    },
    /// Valid, but not a ServiceAccount: 403.
    Forbidden {
        cluster: String,
        user: String,
    },
    /// Cannot decide now: 503.
    Unavailable {
        cluster: Option<String>,
        reason: String,
    },
}

pub struct Registry {
    /// The host first, then the virtual clusters in the file's order.
    clusters: Vec<Arc<Cluster>>,
}

impl Registry {
    pub fn new(clusters: Vec<Cluster>) -> Registry {
        Registry {
            clusters: clusters.into_iter().map(Arc::new).collect(),
        }
    }

    /// The decision for `token`: its issuer's clusters asked in turn.
    pub async fn decide(&self, token: &str) -> Decision {
        let unauthenticated = |reason| Decision::Unauthenticated {
            cluster: None,
            reason,
        };
        let Some(claims) = Claims::of(token) else {
            return unauthenticated("not a JWT");
        };
        if claims.expired() {
            return unauthenticated("expired");
        }
        let Some(issuer) = claims.issuer else {
            return unauthenticated("no issuer");
        };
        let undiscovered = self.clusters.iter().any(|c| c.issuer().is_none());
        let mut refused_by = None;
        let mut failure = None;
        for cluster in self
            .clusters
            .iter()
            .filter(|c| c.issuer().as_deref() == Some(issuer.as_str()))
        {
            match cluster.reviewer.review(token).await {
                Ok(Reviewed::Authenticated(user)) => return allow(cluster, user),
                Ok(Reviewed::Unauthenticated) => refused_by = Some(cluster.name.clone()),
                Err(e) => failure = Some((cluster.name.clone(), e.0)),
            }
        }
        match (failure, undiscovered, refused_by) {
            (Some((cluster, reason)), _, _) => Decision::Unavailable {
                cluster: Some(cluster),
                reason,
            },
            (None, true, _) => Decision::Unavailable {
                cluster: None,
                reason: "the issuer of a cluster is not known yet".into(),
            },
            (None, false, Some(cluster)) => Decision::Unauthenticated {
                cluster: Some(cluster),
                reason: "refused by the apiserver",
            },
            (None, false, None) => unauthenticated("unknown issuer"),
        }
    }
}

/// The identity of `user`, authenticated by `cluster`.
fn allow(cluster: &Cluster, user: String) -> Decision {
    let namespace = user
        .strip_prefix("system:serviceaccount:")
        .and_then(|rest| rest.split_once(':'))
        .map(|(namespace, _)| namespace.to_owned())
        .filter(|n| !n.is_empty());
    let Some(namespace) = namespace else {
        return Decision::Forbidden {
            cluster: cluster.name.clone(),
            user,
        };
    };
    let identity = match &cluster.role {
        Role::Host => Identity::Host { namespace },
        Role::Virtual { host_namespace } => Identity::Virtual {
            name: cluster.name.clone(),
            host_namespace: host_namespace.clone(),
        },
    };
    Decision::Allow {
        cluster: cluster.name.clone(),
        identity,
    }
}

#[derive(Deserialize)]
struct OpenIdConfiguration {
    issuer: String,
}

/// The issuer an apiserver names in its service-account discovery document.
async fn discover_issuer(client: &Client) -> Result<String, String> {
    let request = axum::http::Request::get("/.well-known/openid-configuration")
        .body(Vec::new())
        .map_err(|e| e.to_string())?;
    let doc: OpenIdConfiguration = client
        .request(request)
        .await
        .map_err(|e| format!("/.well-known/openid-configuration: {e}"))?;
    Ok(doc.issuer)
}

/// Keeps every cluster usable: loads the virtual clusters' kubeconfigs (and
/// reloads them every [`RELOAD`], swapping the client when they changed), and
/// discovers the issuers not configured. Runs until aborted.
pub async fn maintain(registry: Arc<Registry>, host: Option<Client>) {
    let mut loaded: Vec<Option<(Vec<u8>, Instant)>> = vec![None; registry.clusters.len()];
    loop {
        for (cluster, loaded) in registry.clusters.iter().zip(loaded.iter_mut()) {
            if let Some(vc) = &cluster.source {
                let due = loaded.as_ref().is_none_or(|(_, at)| at.elapsed() >= RELOAD);
                if due {
                    let loading = virtual_clusters::client(vc, host.as_ref());
                    let loaded_now = tokio::time::timeout(STEP_TIMEOUT, loading)
                        .await
                        .unwrap_or_else(|_| Err("timed out".into()));
                    match loaded_now {
                        Ok((client, fingerprint)) => {
                            let changed = loaded.as_ref().is_none_or(|(f, _)| *f != fingerprint);
                            if changed {
                                tracing::info!(cluster = %cluster.name, source = %vc.kubeconfig, "virtual cluster's apiserver credentials loaded");
                                cluster.reviewer.set_client(client);
                            }
                            *loaded = Some((fingerprint, Instant::now()));
                        }
                        Err(error) => {
                            tracing::warn!(cluster = %cluster.name, %error, "cannot load the virtual cluster's kubeconfig; retrying");
                        }
                    }
                }
            }
            if cluster.issuer().is_none() {
                if let Some(client) = cluster.reviewer.client() {
                    let discovered = tokio::time::timeout(STEP_TIMEOUT, discover_issuer(&client))
                        .await
                        .unwrap_or_else(|_| Err("timed out".into()));
                    match discovered {
                        Ok(issuer) => {
                            tracing::info!(cluster = %cluster.name, %issuer, "issuer discovered");
                            cluster.set_issuer(issuer);
                        }
                        Err(error) => {
                            tracing::warn!(cluster = %cluster.name, %error, "cannot discover the issuer; retrying");
                        }
                    }
                }
            }
        }
        tokio::time::sleep(RETRY).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serve::metrics::Metrics;
    use crate::serve::token_cache::Ttl;
    use crate::serve::token_claims::tests::{jwt, now};

    fn reviewer(name: &str) -> Reviewer {
        let ttl = Ttl {
            positive: Duration::from_secs(1),
            negative: Duration::from_secs(1),
        };
        Reviewer::new(name, None, vec![], ttl, 8, Arc::new(Metrics::default()))
    }

    fn vc(name: &str, issuer: Option<&str>) -> Cluster {
        let mut v = virtual_clusters::parse(&format!(
            "virtualClusters:\n- {{name: {name}, hostNamespace: vcluster-{name}}}"
        ))
        .unwrap()
        .remove(0);
        v.issuer = issuer.map(str::to_owned);
        Cluster::virtual_cluster(v, reviewer(name))
    }

    fn token(iss: &str) -> String {
        jwt(&format!(r#"{{"iss":"{iss}","exp":{}}}"#, now() + 600))
    }

    #[tokio::test]
    async fn tokens_no_cluster_issues_are_refused_unasked() {
        let registry = Registry::new(vec![
            Cluster::host(reviewer("host"), Some("https://host".into())),
            vc("k8s1", Some("https://k8s1")),
        ]);
        let expired = jwt(&format!(r#"{{"iss":"https://k8s1","exp":{}}}"#, now() - 1));
        for (t, reason) in [
            ("admin-token".to_string(), "not a JWT"),
            (expired, "expired"),
            (jwt(r#"{"sub":"x"}"#), "no issuer"),
            (token("https://other"), "unknown issuer"),
        ] {
            assert_eq!(
                registry.decide(&t).await,
                Decision::Unauthenticated {
                    cluster: None,
                    reason
                },
                "{t}"
            );
        }
        // A candidate that cannot be asked (no credentials yet) is no verdict.
        assert!(matches!(
            registry.decide(&token("https://k8s1")).await,
            Decision::Unavailable { cluster: Some(c), .. } if c == "k8s1"
        ));
    }

    #[tokio::test]
    async fn while_an_issuer_is_undiscovered_no_token_is_called_unknown() {
        let registry = Registry::new(vec![
            Cluster::host(reviewer("host"), Some("https://host".into())),
            vc("k8s1", None),
        ]);
        assert!(matches!(
            registry.decide(&token("https://k8s1")).await,
            Decision::Unavailable { cluster: None, .. }
        ));
    }

    #[test]
    fn only_serviceaccounts_are_tenants() {
        let host = Cluster::host(reviewer("host"), None);
        let k8s1 = vc("k8s1", None);
        assert_eq!(
            allow(&host, "system:serviceaccount:shop:agent".into()),
            Decision::Allow {
                cluster: "host".into(),
                identity: Identity::Host {
                    namespace: "shop".into()
                }
            }
        );
        assert_eq!(
            allow(&k8s1, "system:serviceaccount:datadog:agent".into()),
            Decision::Allow {
                cluster: "k8s1".into(),
                identity: Identity::Virtual {
                    name: "k8s1".into(),
                    host_namespace: "vcluster-k8s1".into()
                }
            }
        );
        for user in [
            "admin",
            "system:serviceaccount:",
            "system:serviceaccount::x",
            "system:node:n",
        ] {
            assert!(
                matches!(allow(&host, user.into()), Decision::Forbidden { .. }),
                "{user}"
            );
        }
    }
}
