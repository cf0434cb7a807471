//! What the filter does with one request: rewrite its response, let it through, or
//! answer it locally.
//!
//! Every mode is default-deny. Tenant mode lets through the read endpoints (bodies
//! filtered to the tenant) and, on opt-in, the pod-scoped routes of the tenant's
//! namespaces; injection and pass-through modes let through the read endpoints and
//! the path classes of `allowPaths`. Everything else is answered as a kubelet
//! answers a path it does not serve (see [`super::answer`]), so agents that probe
//! optional endpoints see an absent endpoint, not an error.
//!
//! Pure: no header is read or written here; the glue and the CLI resolve the
//! request's method, path and caller and act on the [`Decision`].

use super::endpoint::{classify, BodyKind, Endpoint};
use crate::config::{Config, TenancyConfig, TenantSource};
use crate::snapshot::catalog::Catalog;

/// What the filter does with one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Rewrite the response body (Prometheus text or kubelet JSON).
    Rewrite(BodyKind),
    /// Let request and response through untouched.
    PassThrough,
    /// Answer locally with this status; `reason` goes to the
    /// `x-kubelet-scope-denied` header and the log, never into the body.
    Deny { status: u16, reason: String },
}

/// The parts of a request a decision depends on.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub method: &'a str,
    /// `:path`, query included.
    pub path: &'a str,
    /// The resolved tenant ([`resolve_tenant`]), in tenant mode.
    pub tenant: Option<&'a str>,
    /// The caller's virtual cluster (`tenancy.virtualClusterHeader`), in tenant mode.
    pub virtual_cluster: Option<&'a str>,
}

impl Decision {
    fn deny(status: u16, reason: impl Into<String>) -> Decision {
        Decision::Deny {
            status,
            reason: reason.into(),
        }
    }
}

/// The tenant of a request in tenant mode: the static one, the trusted header's
/// value, or the tenant that owns the caller's namespace (`namespaceOf`: exactly
/// one owner, from the snapshot; none without a catalog). `caller` is the header
/// value, already taken from the request.
pub fn resolve_tenant(
    config: &Config,
    catalog: Option<&Catalog>,
    caller: Option<&str>,
) -> Option<String> {
    let caller = caller.filter(|c| !c.is_empty());
    match &config.tenancy.as_ref()?.tenant {
        TenantSource::Static(t) => Some(t.clone()),
        TenantSource::Header(_) => caller.map(str::to_owned),
        TenantSource::NamespaceOf(_) => {
            let entry = catalog?.namespace(caller?.as_bytes())?;
            match &*entry.tenants {
                [only] => Some(only.to_string()),
                _ => None,
            }
        }
    }
}

/// Decides a request. `catalog` is `None` when the snapshot the config needs is
/// missing or too old to trust.
pub fn decide(config: &Config, catalog: Option<&Catalog>, request: &Request<'_>) -> Decision {
    let endpoint = classify(request.path);
    if endpoint.is_read() && !matches!(request.method, "GET" | "HEAD") {
        return Decision::deny(405, "kubelet-scope: read endpoints allow only GET and HEAD");
    }
    match &config.tenancy {
        Some(tenancy) => {
            let virtual_cluster = request.virtual_cluster.is_some_and(|v| !v.is_empty());
            decide_for_tenant(tenancy, catalog, &endpoint, request.tenant, virtual_cluster)
        }
        None => decide_without_tenancy(config, catalog, &endpoint),
    }
}

/// Injection and pass-through modes: the read endpoints, and `allowPaths`.
fn decide_without_tenancy(
    config: &Config,
    catalog: Option<&Catalog>,
    endpoint: &Endpoint,
) -> Decision {
    match endpoint {
        // Labels when the snapshot is there; unchanged (fail open) when it is not.
        Endpoint::Metrics if config.inject.is_some() && catalog.is_some() => {
            Decision::Rewrite(BodyKind::Exposition)
        }
        e if e.is_read() => Decision::PassThrough,
        e => match e.class() {
            Some(class) if config.allow_paths.contains(&class) => Decision::PassThrough,
            Some(class) => Decision::deny(
                404,
                format!("kubelet-scope: path class {class:?} is not in allowPaths"),
            ),
            None => Decision::deny(404, "kubelet-scope: not a kubelet path"),
        },
    }
}

/// A tenant's request; a virtual cluster's (`virtual_cluster`) gets its pods'
/// metrics, `/stats/summary` and `/pods` (rewritten to its names) and health, no
/// pod-scoped path (the kubelet knows only the host's names), and needs no tenant.
fn decide_for_tenant(
    tenancy: &TenancyConfig,
    catalog: Option<&Catalog>,
    endpoint: &Endpoint,
    tenant: Option<&str>,
    virtual_cluster: bool,
) -> Decision {
    let denied = |reason: &str| Decision::deny(tenancy.denied_status, reason);
    let namespace = match endpoint {
        Endpoint::Health => return Decision::PassThrough,
        Endpoint::Unknown => return denied("kubelet-scope: not a kubelet path"),
        Endpoint::Node(_) => {
            return denied("kubelet-scope: this kubelet path is not available to tenants")
        }
        Endpoint::PodScoped { .. } if virtual_cluster => {
            return denied("kubelet-scope: pod-scoped paths are not available to virtual clusters")
        }
        Endpoint::PodScoped { kind, namespace } => {
            if !tenancy.allow_pod_scoped_paths {
                return denied("kubelet-scope: pod-scoped kubelet paths are disabled");
            }
            if kind.is_interactive() && !tenancy.allow_interactive_paths {
                return denied("kubelet-scope: exec, attach, run and portForward are disabled");
            }
            Some(namespace.as_str())
        }
        Endpoint::Metrics | Endpoint::Json(_) => None,
    };
    let Some(catalog) = catalog else {
        return Decision::deny(503, "kubelet-scope: namespace snapshot not available yet");
    };
    let rewrite = match endpoint {
        Endpoint::Json(kind) => Decision::Rewrite(BodyKind::Json(*kind)),
        _ => Decision::Rewrite(BodyKind::Exposition),
    };
    if virtual_cluster {
        return rewrite;
    }
    let Some(tenant) = tenant.filter(|t| !t.is_empty()) else {
        return denied("kubelet-scope: no tenant in the request");
    };
    if !catalog.knows_tenant(tenant) {
        return denied("kubelet-scope: unknown tenant");
    }
    match namespace {
        Some(ns) => match catalog.namespace(ns.as_bytes()) {
            Some(entry) if entry.owned_by(tenant) => Decision::PassThrough,
            _ => denied("kubelet-scope: namespace not owned by the tenant"),
        },
        None => rewrite,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::endpoint::JsonEndpoint;
    use crate::snapshot::Snapshot;

    fn setup(tenancy: &str) -> (Config, Catalog) {
        let config = Config::parse(
            format!(r#"{{"tenancy": {tenancy}, "snapshot": {{"cluster": "cp"}}}}"#).as_bytes(),
        )
        .unwrap();
        let snapshot = Snapshot::parse(
            br#"{"version":"1","generatedAt":"t","namespaces":{
                "shop":{"labels":{"tenant":"acme"}},"bank":{"labels":{"tenant":"globex"}},
                "globex":{"labels":{}}}}"#,
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

    fn get<'a>(path: &'a str, tenant: Option<&'a str>) -> Request<'a> {
        Request {
            method: "GET",
            path,
            tenant,
            virtual_cluster: None,
        }
    }

    #[test]
    fn a_virtual_cluster_reads_its_views_and_nothing_pod_scoped() {
        let (config, catalog) = setup(
            r#"{"tenant": {"header": "x-tenant"}, "namespaceLabel": "tenant",
                "virtualClusterHeader": "x-vc", "allowPodScopedPaths": true}"#,
        );
        let d = |path, catalog: Option<&Catalog>| {
            let mut r = get(path, None);
            r.virtual_cluster = Some("k8s1");
            decide(&config, catalog, &r)
        };
        // No tenant needed: the virtual cluster is the caller.
        assert_eq!(
            d("/metrics/cadvisor", Some(&catalog)),
            Decision::Rewrite(BodyKind::Exposition)
        );
        assert_eq!(
            d("/stats/summary", Some(&catalog)),
            Decision::Rewrite(BodyKind::Json(JsonEndpoint::StatsSummary))
        );
        assert_eq!(d("/healthz", Some(&catalog)), Decision::PassThrough);
        for denied in ["/containerLogs/shop/p/c", "/configz", "/nope"] {
            assert_eq!(status(d(denied, Some(&catalog))), 404, "{denied}");
        }
        assert_eq!(status(d("/metrics", None)), 503);
    }

    #[test]
    fn tenant_mode_is_default_deny_and_denied_looks_absent() {
        let (config, catalog) =
            setup(r#"{"tenant": {"header": "x-tenant"}, "namespaceLabel": "tenant"}"#);
        let d = |path, tenant| decide(&config, Some(&catalog), &get(path, tenant));
        assert_eq!(
            d("/metrics/cadvisor", Some("acme")),
            Decision::Rewrite(BodyKind::Exposition)
        );
        assert_eq!(
            d("/metrics/slis", Some("acme")),
            Decision::Rewrite(BodyKind::Exposition)
        );
        for p in ["/pods", "/pods/", "/runningpods", "/runningpods/"] {
            assert_eq!(
                d(p, Some("acme")),
                Decision::Rewrite(BodyKind::Json(JsonEndpoint::PodList)),
                "{p}"
            );
        }
        assert_eq!(d("/healthz", None), Decision::PassThrough);
        assert_eq!(status(d("/metrics", None)), 404);
        assert_eq!(status(d("/metrics", Some(""))), 404);
        assert_eq!(status(d("/metrics", Some("nobody"))), 404);
        for p in [
            "/configz",
            "/logs/",
            "/spec",
            "/stats/container",
            "/exec/shop/web/c",
            "/containerLogs/shop/web/c",
            "/x",
        ] {
            assert_eq!(status(d(p, Some("acme"))), 404, "{p}");
        }
        assert_eq!(
            status(decide(&config, None, &get("/metrics", Some("acme")))),
            503
        );
        assert_eq!(
            status(decide(&config, None, &get("/configz", Some("acme")))),
            404
        );
        let (config, catalog) = setup(
            r#"{"tenant": {"header": "x-tenant"}, "namespaceLabel": "tenant", "deniedStatus": 403}"#,
        );
        assert_eq!(
            status(decide(
                &config,
                Some(&catalog),
                &get("/configz", Some("acme"))
            )),
            403
        );
    }

    #[test]
    fn read_endpoints_take_only_get_and_head() {
        let (config, catalog) =
            setup(r#"{"tenant": {"header": "x-tenant"}, "namespaceLabel": "tenant"}"#);
        let inject = Config::parse(
            br#"{"inject": {"labels": {"team": "team"}}, "snapshot": {"cluster": "cp"}}"#,
        )
        .unwrap();
        let inject_catalog = Catalog::new(&inject, None);
        for (config, catalog) in [(&config, &catalog), (&inject, &inject_catalog)] {
            for path in ["/metrics", "/stats/summary", "/pods", "/healthz"] {
                for method in ["POST", "PUT", "DELETE", "PATCH", "OPTIONS", "get"] {
                    let r = Request {
                        method,
                        path,
                        tenant: Some("acme"),
                        virtual_cluster: None,
                    };
                    assert_eq!(
                        status(decide(config, Some(catalog), &r)),
                        405,
                        "{method} {path}"
                    );
                }
                let r = Request {
                    method: "HEAD",
                    path,
                    tenant: Some("acme"),
                    virtual_cluster: None,
                };
                assert_ne!(
                    status(decide(config, Some(catalog), &r)),
                    405,
                    "HEAD {path}"
                );
            }
        }
    }

    #[test]
    fn pod_scoped_paths_need_opt_in_and_ownership() {
        let (config, catalog) = setup(
            r#"{"tenant": {"static": "acme"}, "namespaceLabel": "tenant", "allowPodScopedPaths": true}"#,
        );
        let d = |path| decide(&config, Some(&catalog), &get(path, Some("acme")));
        assert_eq!(d("/containerLogs/shop/web/c"), Decision::PassThrough);
        assert_eq!(d("/stats/shop/web/uid/c"), Decision::PassThrough);
        assert_eq!(status(d("/containerLogs/bank/web/c")), 404);
        assert_eq!(status(d("/containerLogs/unknown/web/c")), 404);
        assert_eq!(status(d("/exec/shop/web/c")), 404);
        // Kubelets up to 1.20 serve `/stats/{pod}/{container}` from namespace
        // `default`: `shop` here would be a pod name, not the namespace.
        assert_eq!(status(d("/stats/shop/web")), 404);

        let (config, catalog) = setup(
            r#"{"tenant": {"static": "acme"}, "namespaceLabel": "tenant",
                "allowPodScopedPaths": true, "allowInteractivePaths": true}"#,
        );
        let d = |path| decide(&config, Some(&catalog), &get(path, Some("acme")));
        assert_eq!(d("/exec/shop/web/c"), Decision::PassThrough);
        assert_eq!(status(d("/exec/bank/web/c")), 404);
    }

    #[test]
    fn injection_mode_passes_read_endpoints_and_allowed_classes_only() {
        let config = Config::parse(
            br#"{"inject": {"labels": {"team": "team"}}, "snapshot": {"cluster": "cp"}}"#,
        )
        .unwrap();
        let catalog = Catalog::new(&config, None);
        let d = |config: &Config, catalog: Option<&Catalog>, path| {
            decide(config, catalog, &get(path, None))
        };
        assert_eq!(
            d(&config, Some(&catalog), "/metrics/cadvisor"),
            Decision::Rewrite(BodyKind::Exposition)
        );
        assert_eq!(d(&config, None, "/metrics/cadvisor"), Decision::PassThrough);
        for p in ["/pods", "/stats/summary", "/healthz", "/runningpods/"] {
            assert_eq!(d(&config, Some(&catalog), p), Decision::PassThrough, "{p}");
        }
        for p in [
            "/exec/kube-system/etcd/etcd",
            "/run/kube-system/etcd/etcd",
            "/attach/a/b/c",
            "/portForward/a/b",
            "/configz",
            "/logs/",
            "/checkpoint/a/b/c",
            "/containerLogs/a/b/c",
            "/debug/pprof/",
            "/nonsense",
        ] {
            assert_eq!(status(d(&config, Some(&catalog), p)), 404, "{p}");
        }
        let open =
            Config::parse(br#"{"passThrough": true, "allowPaths": ["containerLogs"]}"#).unwrap();
        let open_catalog = Catalog::new(&open, None);
        assert_eq!(
            d(&open, Some(&open_catalog), "/containerLogs/a/b/c"),
            Decision::PassThrough
        );
        assert_eq!(
            d(&open, Some(&open_catalog), "/metrics"),
            Decision::PassThrough
        );
        assert_eq!(status(d(&open, Some(&open_catalog), "/exec/a/b/c")), 404);
    }

    #[test]
    fn the_tenant_of_a_namespace_is_its_label_not_its_name() {
        let (config, catalog) =
            setup(r#"{"tenant": {"namespaceOf": {"header": "x-ns"}}, "namespaceLabel": "tenant"}"#);
        let resolve = |caller| resolve_tenant(&config, Some(&catalog), caller);
        assert_eq!(resolve(Some("shop")).as_deref(), Some("acme"));
        assert_eq!(resolve(Some("bank")).as_deref(), Some("globex"));
        // A namespace named like a tenant, without that tenant's label.
        assert_eq!(resolve(Some("globex")), None);
        assert_eq!(resolve(Some("acme")), None);
        assert_eq!(resolve(Some("")), None);
        assert_eq!(resolve(None), None);
        assert_eq!(resolve_tenant(&config, None, Some("shop")), None);
        assert_eq!(
            status(decide(
                &config,
                Some(&catalog),
                &get("/metrics", resolve(Some("globex")).as_deref())
            )),
            404
        );
        let (config, _) = setup(r#"{"tenant": {"header": "x-t"}, "namespaceLabel": "tenant"}"#);
        assert_eq!(
            resolve_tenant(&config, None, Some("globex")).as_deref(),
            Some("globex")
        );
    }
}
