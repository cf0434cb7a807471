//! Benchmark inputs and runners shared by the criterion benchmarks (and by the
//! end-to-end Envoy benchmark, which serves the same synthetic bodies).
//!
//! * [`synthetic`] scales real captures to a busy node: 110 pods (the kubelet's
//!   default `maxPods`) spread over 20 namespaces. The captures are third-party ones
//!   (testdata/README.md), so the benchmarks need them (`../shared` beside the clone
//!   or `KUBELET_SCOPE_FIXTURES`); the tests and the demo do not.
//! * [`WasmGuest`] runs the filter's rewriters compiled to `wasm32-wasip1` (SIMD)
//!   inside wasmtime; [`native`] runs the same code natively.

use std::path::PathBuf;

pub mod synthetic;

#[cfg(feature = "wasm")]
mod wasm;
#[cfg(feature = "wasm")]
pub use wasm::WasmGuest;

/// The body kinds, numbered as the wasm guest's `rewrite` export expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Exposition = 0,
    StatsSummary = 1,
    PodList = 2,
}

/// A third-party capture (found as every test finds them, `kubelet-scope-testdata`):
/// the benchmarks time one and scale others, so they cannot run without them.
pub fn capture(name: &str) -> Vec<u8> {
    kubelet_scope_testdata::third_party(name).unwrap_or_else(|| {
        panic!("the benchmarks need the third-party captures (set KUBELET_SCOPE_FIXTURES)")
    })
}

/// Injection of the `team` label.
pub const INJECT_CONFIG: &str =
    r#"{"inject":{"labels":{"team":"team"}},"snapshot":{"cluster":"control-plane"}}"#;

/// Tenant filtering by the `tenant` namespace label.
pub const FILTER_CONFIG: &str = r#"{"tenancy":{"tenant":{"header":"x-tenant"},"namespaceLabel":"tenant"},
    "snapshot":{"cluster":"control-plane"}}"#;

/// The benchmarks' tenant, owning half of the synthetic namespaces.
pub const TENANT: &str = "acme";

/// A virtual cluster's view: the "tenant" of its cases names the virtual cluster.
pub const VIRTUAL_CONFIG: &str = r#"{"tenancy":{"tenant":{"header":"x-tenant"},"namespaceLabel":"tenant",
    "virtualClusterHeader":"x-virtual-cluster"},"snapshot":{"cluster":"control-plane"}}"#;

/// The benchmarks' virtual cluster, whose pods are those of [`TENANT`]'s
/// namespaces ([`synthetic::snapshot`]): it keeps what the tenant keeps, translated.
pub const VIRTUAL_CLUSTER: &str = "k8s1";

/// Envoy hands the filter the body in slices of this order.
pub const CHUNK: usize = 64 * 1024;

/// A body the benchmarks rewrite.
pub struct Body {
    pub name: &'static str,
    pub kind: Kind,
    pub bytes: Vec<u8>,
}

/// The bodies `make bench` times and `make bench-instructions` counts: the
/// largest real capture and a synthetic 110-pod node.
pub fn bodies() -> Vec<Body> {
    vec![
        Body {
            name: "cadvisor capture 2.2MB",
            kind: Kind::Exposition,
            bytes: capture("cadvisor-k8s1.21-eks-docker-datadog.txt"),
        },
        Body {
            name: "cadvisor 110 pods",
            kind: Kind::Exposition,
            bytes: synthetic::cadvisor(110),
        },
        Body {
            name: "/pods 110 pods",
            kind: Kind::PodList,
            bytes: synthetic::pod_list(110),
        },
        Body {
            name: "/stats/summary 110 pods",
            kind: Kind::StatsSummary,
            bytes: synthetic::stats_summary(110),
        },
    ]
}

/// The rewrites of a body of `kind` that are measured, as (case, filter config,
/// tenant): label injection (Prometheus text only), tenant filtering, and a
/// virtual cluster's view of the same pods (filtered and translated).
pub fn cases(kind: Kind) -> Vec<(&'static str, &'static str, Option<&'static str>)> {
    let filter = ("filter", FILTER_CONFIG, Some(TENANT));
    let translate = ("virtual", VIRTUAL_CONFIG, Some(VIRTUAL_CLUSTER));
    if kind == Kind::Exposition {
        vec![("inject", INJECT_CONFIG, None), filter, translate]
    } else {
        vec![filter, translate]
    }
}

/// The release wasm guest `make bench` builds (`KUBELET_SCOPE_BENCH_GUEST`
/// overrides it).
pub fn guest_path() -> PathBuf {
    std::env::var_os("KUBELET_SCOPE_BENCH_GUEST").map_or_else(
        || {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../target/wasm32-wasip1/release/kubelet_scope_bench_guest.wasm")
        },
        PathBuf::from,
    )
}

/// The filter's rewriters called natively, as the CLI does.
pub mod native {
    use std::rc::Rc;

    use kubelet_scope_filter::config::Config;
    use kubelet_scope_filter::policy::endpoint::{BodyKind, JsonEndpoint};
    use kubelet_scope_filter::rewrite::BodyFilter;
    use kubelet_scope_filter::snapshot::catalog::{Catalog, RequestScope};
    use kubelet_scope_filter::snapshot::Snapshot;

    use crate::Kind;

    pub struct Native {
        scope: RequestScope,
        max_json: usize,
    }

    impl Native {
        pub fn new(config: &str, snapshot: &[u8], tenant: Option<&str>) -> Native {
            let config = Config::parse(config.as_bytes()).expect("benchmark config");
            let snapshot = Snapshot::parse(snapshot).expect("benchmark snapshot");
            let catalog = Rc::new(Catalog::new(&config, Some(&snapshot)));
            // As the wasm guest: with `virtualClusterHeader`, `tenant` names the cluster.
            let virtual_cluster = config
                .tenancy
                .as_ref()
                .and_then(|t| t.virtual_cluster_header.as_ref())
                .and(tenant);
            let tenant = tenant.filter(|_| virtual_cluster.is_none());
            Native {
                scope: RequestScope::of_request(catalog, tenant, virtual_cluster),
                max_json: config.max_json_body_bytes,
            }
        }

        /// Rewrites `body` in chunks of `chunk` bytes into `out` (cleared first).
        pub fn rewrite(&self, kind: Kind, body: &[u8], chunk: usize, out: &mut Vec<u8>) {
            let kind = match kind {
                Kind::Exposition => BodyKind::Exposition,
                Kind::StatsSummary => BodyKind::Json(JsonEndpoint::StatsSummary),
                Kind::PodList => BodyKind::Json(JsonEndpoint::PodList),
            };
            out.clear();
            let mut filter = BodyFilter::new(kind, self.scope.clone(), self.max_json);
            for piece in body.chunks(chunk) {
                filter.feed(piece, out).expect("benchmark body refused");
            }
            filter.finish(out).expect("benchmark body refused");
        }
    }
}
