//! Which kubelet endpoint a request path names, and what the filter does with it.
//!
//! The kubelet serves metrics, JSON, health, pod-scoped streams (`/exec`, logs) and
//! node-level debug endpoints on one port. Tenant mode is default-deny: only paths
//! classified here as safe are let through, and any path that is not in canonical
//! form (percent-encoding, `//`, `.` or `..` segments) is treated as unknown rather
//! than guessed at, since the kubelet may resolve it differently than we would.

use crate::config::Config;
use crate::snapshot::catalog::Catalog;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// `/metrics`, `/metrics/cadvisor`, `/metrics/resource`, `/metrics/probes`.
    Metrics,
    Json(JsonEndpoint),
    /// `/healthz` and `/healthz/…`.
    Health,
    PodScoped {
        kind: PodPath,
        namespace: String,
    },
    /// `/logs`, `/configz`, `/debug`, `/spec`, `/checkpoint`, anything else.
    NodeLevel,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonEndpoint {
    /// `/stats/summary`: keep `node`, filter `pods[]` by `podRef.namespace`.
    StatsSummary,
    /// `/pods` and `/runningpods`: a `PodList`, filter `items[]` by `metadata.namespace`.
    PodList,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PodPath {
    ContainerLogs,
    Stats,
    Exec,
    Attach,
    Run,
    PortForward,
}

impl PodPath {
    /// Paths that open a shell or a tunnel into the pod.
    pub fn is_interactive(self) -> bool {
        matches!(
            self,
            PodPath::Exec | PodPath::Attach | PodPath::Run | PodPath::PortForward
        )
    }
}

/// Classifies a request path (`:path`, query string allowed) the way the kubelet
/// routes it.
pub fn classify(path: &str) -> Endpoint {
    let path = path.split_once('?').map_or(path, |(p, _)| p);
    if !is_canonical(path) {
        return Endpoint::NodeLevel;
    }
    match path {
        "/metrics" | "/metrics/cadvisor" | "/metrics/resource" | "/metrics/probes" => {
            return Endpoint::Metrics
        }
        "/stats/summary" => return Endpoint::Json(JsonEndpoint::StatsSummary),
        "/pods" | "/runningpods" => return Endpoint::Json(JsonEndpoint::PodList),
        "/healthz" => return Endpoint::Health,
        _ => {}
    }
    if path.starts_with("/healthz/") {
        return Endpoint::Health;
    }
    let mut segments = path.trim_start_matches('/').split('/');
    let kind = match segments.next() {
        Some("containerLogs") => PodPath::ContainerLogs,
        Some("stats") => PodPath::Stats,
        Some("exec") => PodPath::Exec,
        Some("attach") => PodPath::Attach,
        Some("run") => PodPath::Run,
        Some("portForward") => PodPath::PortForward,
        _ => return Endpoint::NodeLevel,
    };
    // Every pod-scoped route is /<kind>/{namespace}/{pod}/…
    match (segments.next(), segments.next()) {
        (Some(ns), Some(pod)) if !ns.is_empty() && !pod.is_empty() => Endpoint::PodScoped {
            kind,
            namespace: ns.to_owned(),
        },
        _ => Endpoint::NodeLevel,
    }
}

fn is_canonical(path: &str) -> bool {
    path.starts_with('/')
        && !path.contains(['%', '\\', '#'])
        && !path.contains("//")
        && !path[1..].split('/').any(|s| s == "." || s == "..")
}

/// What the filter does with one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Rewrite the response body (Prometheus text or kubelet JSON).
    Rewrite(BodyKind),
    /// Let request and response through untouched.
    PassThrough,
    /// Answer locally with this status and a short plain-text reason.
    Deny { status: u16, reason: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    Exposition,
    Json(JsonEndpoint),
}

impl Decision {
    fn forbidden(reason: impl Into<String>) -> Decision {
        Decision::Deny {
            status: 403,
            reason: reason.into(),
        }
    }
}

/// Decides a request. `catalog` is `None` when the snapshot the config needs is
/// missing or too old to trust; `tenant` is the resolved tenant (from the header or
/// the static setting), if any.
pub fn decide(
    config: &Config,
    catalog: Option<&Catalog>,
    path: &str,
    tenant: Option<&str>,
) -> Decision {
    let endpoint = classify(path);
    let Some(tenancy) = &config.tenancy else {
        // Injection-only (or nothing): every path passes; metrics get labels when
        // the snapshot is there and pass unchanged (fail open) when it is not.
        return match (&endpoint, &config.inject, catalog) {
            (Endpoint::Metrics, Some(_), Some(_)) => Decision::Rewrite(BodyKind::Exposition),
            _ => Decision::PassThrough,
        };
    };
    let namespace = match &endpoint {
        Endpoint::Health => return Decision::PassThrough,
        Endpoint::NodeLevel => {
            return Decision::forbidden(
                "kubelet-scope: this kubelet path is not available to tenants",
            )
        }
        Endpoint::PodScoped { kind, namespace } => {
            if !tenancy.allow_pod_scoped_paths {
                return Decision::forbidden("kubelet-scope: pod-scoped kubelet paths are disabled");
            }
            if kind.is_interactive() && !tenancy.allow_interactive_paths {
                return Decision::forbidden(
                    "kubelet-scope: exec, attach, run and portForward are disabled",
                );
            }
            Some(namespace.as_str())
        }
        Endpoint::Metrics | Endpoint::Json(_) => None,
    };
    let Some(tenant) = tenant.filter(|t| !t.is_empty()) else {
        return Decision::forbidden("kubelet-scope: no tenant in the request");
    };
    let Some(catalog) = catalog else {
        return Decision::Deny {
            status: 503,
            reason: "kubelet-scope: namespace snapshot not available yet".into(),
        };
    };
    if !catalog.knows_tenant(tenant) {
        return Decision::forbidden("kubelet-scope: unknown tenant");
    }
    match (&endpoint, namespace) {
        (_, Some(ns)) => match catalog.namespace(ns.as_bytes()) {
            Some(entry) if entry.owned_by(tenant) => Decision::PassThrough,
            _ => Decision::forbidden("kubelet-scope: namespace not owned by the tenant"),
        },
        (Endpoint::Json(kind), None) => Decision::Rewrite(BodyKind::Json(*kind)),
        _ => Decision::Rewrite(BodyKind::Exposition),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::Snapshot;

    #[test]
    fn classifies_kubelet_paths() {
        use Endpoint::*;
        for p in [
            "/metrics",
            "/metrics/cadvisor",
            "/metrics/resource?x=1",
            "/metrics/probes",
        ] {
            assert_eq!(classify(p), Metrics, "{p}");
        }
        assert_eq!(
            classify("/stats/summary?only_cpu_and_memory=true"),
            Json(JsonEndpoint::StatsSummary)
        );
        assert_eq!(classify("/pods"), Json(JsonEndpoint::PodList));
        assert_eq!(classify("/runningpods"), Json(JsonEndpoint::PodList));
        assert_eq!(classify("/healthz/syncloop"), Health);
        assert_eq!(
            classify("/containerLogs/shop/web-0/nginx?follow=true"),
            PodScoped {
                kind: PodPath::ContainerLogs,
                namespace: "shop".into()
            }
        );
        assert_eq!(
            classify("/stats/shop/web-0/uid/c"),
            PodScoped {
                kind: PodPath::Stats,
                namespace: "shop".into()
            }
        );
        assert_eq!(
            classify("/portForward/shop/web-0"),
            PodScoped {
                kind: PodPath::PortForward,
                namespace: "shop".into()
            }
        );
        for p in [
            "/logs/",
            "/configz",
            "/debug/pprof/",
            "/spec",
            "/checkpoint/a/b/c",
            "/exec/shop",
            "/metrics/",
            "/metrics/slis",
            "/metrics/../exec/a/b/c",
            "/metrics/%2e%2e/configz",
            "//metrics",
            "/stats/",
            "/stats",
            "/pods/",
            "",
            "metrics",
            "/healthzz",
            "/containerLogs/./x/y",
            "/containerLogs/shop/../../configz",
        ] {
            assert_eq!(classify(p), NodeLevel, "{p}");
        }
    }

    fn setup(tenancy: &str) -> (Config, Catalog) {
        let config = Config::parse(
            format!(r#"{{"tenancy": {tenancy}, "snapshot": {{"cluster": "cp"}}}}"#).as_bytes(),
        )
        .unwrap();
        let snapshot = Snapshot::parse(
            br#"{"version":"1","generatedAt":"t","namespaces":{
                "shop":{"labels":{"tenant":"acme"}},"bank":{"labels":{"tenant":"globex"}}}}"#,
        )
        .unwrap();
        let catalog = Catalog::new(&config, Some(&snapshot));
        (config, catalog)
    }

    fn status(d: Decision) -> u16 {
        match d {
            Decision::Deny { status, .. } => status,
            _ => 200,
        }
    }

    #[test]
    fn tenant_mode_is_default_deny() {
        let (config, catalog) =
            setup(r#"{"tenant": {"header": "x-tenant"}, "namespaceLabel": "tenant"}"#);
        let d = |path, tenant| decide(&config, Some(&catalog), path, tenant);
        assert_eq!(
            d("/metrics/cadvisor", Some("acme")),
            Decision::Rewrite(BodyKind::Exposition)
        );
        assert_eq!(
            d("/pods", Some("acme")),
            Decision::Rewrite(BodyKind::Json(JsonEndpoint::PodList))
        );
        assert_eq!(d("/healthz", None), Decision::PassThrough);
        assert_eq!(status(d("/metrics", None)), 403);
        assert_eq!(status(d("/metrics", Some(""))), 403);
        assert_eq!(status(d("/metrics", Some("nobody"))), 403);
        for p in [
            "/configz",
            "/logs/",
            "/exec/shop/web/c",
            "/containerLogs/shop/web/c",
            "/x",
        ] {
            assert_eq!(status(d(p, Some("acme"))), 403, "{p}");
        }
        assert_eq!(status(decide(&config, None, "/metrics", Some("acme"))), 503);
        assert_eq!(status(decide(&config, None, "/configz", Some("acme"))), 403);
    }

    #[test]
    fn pod_scoped_paths_need_opt_in_and_ownership() {
        let (config, catalog) = setup(
            r#"{"tenant": {"static": "acme"}, "namespaceLabel": "tenant", "allowPodScopedPaths": true}"#,
        );
        let d = |path| decide(&config, Some(&catalog), path, Some("acme"));
        assert_eq!(d("/containerLogs/shop/web/c"), Decision::PassThrough);
        assert_eq!(d("/stats/shop/web/uid/c"), Decision::PassThrough);
        assert_eq!(status(d("/containerLogs/bank/web/c")), 403);
        assert_eq!(status(d("/containerLogs/unknown/web/c")), 403);
        assert_eq!(status(d("/exec/shop/web/c")), 403);

        let (config, catalog) = setup(
            r#"{"tenant": {"static": "acme"}, "namespaceLabel": "tenant",
                "allowPodScopedPaths": true, "allowInteractivePaths": true}"#,
        );
        let d = |path| decide(&config, Some(&catalog), path, Some("acme"));
        assert_eq!(d("/exec/shop/web/c"), Decision::PassThrough);
        assert_eq!(status(d("/exec/bank/web/c")), 403);
    }

    #[test]
    fn injection_only_passes_every_path() {
        let config = Config::parse(
            br#"{"inject": {"labels": {"team": "team"}}, "snapshot": {"cluster": "cp"}}"#,
        )
        .unwrap();
        let catalog = Catalog::new(&config, None);
        assert_eq!(
            decide(&config, Some(&catalog), "/metrics/cadvisor", None),
            Decision::Rewrite(BodyKind::Exposition)
        );
        assert_eq!(
            decide(&config, None, "/metrics/cadvisor", None),
            Decision::PassThrough
        );
        for p in ["/pods", "/exec/a/b/c", "/configz"] {
            assert_eq!(
                decide(&config, Some(&catalog), p, None),
                Decision::PassThrough
            );
        }
        let none = Config::parse(b"{}").unwrap();
        assert_eq!(
            decide(&none, Some(&Catalog::new(&none, None)), "/metrics", None),
            Decision::PassThrough
        );
    }
}
