//! Which kubelet endpoint a request path names, as the kubelet routes it.
//!
//! The table follows `pkg/kubelet/server/server.go` of kubelets 1.20–1.35: the
//! Prometheus endpoints are exact `http.ServeMux` patterns (`/metrics/cadvisor/`
//! with a slash is a 404 there), the JSON ones are go-restful web services that
//! also answer with a trailing slash (`/pods/`, `/stats/summary/`), `/runningpods`
//! is the subtree `/runningpods/` (the mux redirects the bare form), and the
//! pod-scoped routes take a fixed number of segments. Paths no kubelet of those
//! versions serves are [`Endpoint::Unknown`], and so is any path not in canonical
//! form (percent-encoding, `//`, `.` or `..` segments): the kubelet may resolve it
//! differently than we would, so it is never guessed at.
//!
//! This module only names endpoints; what a request may do with one is
//! [`super::decide`]'s.

use crate::config::PathClass;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// Prometheus text: `/metrics`, `/metrics/cadvisor`, `/metrics/resource`,
    /// `/metrics/probes`, `/metrics/slis` (1.26+) and `/metrics/resource/v1alpha1`
    /// (up to 1.17, still asked for by old agents).
    Metrics,
    Json(JsonEndpoint),
    /// `/healthz` and its named checks.
    Health,
    /// Routes under `/{kind}/{namespace}/{pod}/…`.
    PodScoped {
        kind: PodPath,
        namespace: String,
    },
    /// Node-level routes that read or change the node, by class.
    Node(PathClass),
    /// Not a route of kubelets 1.20–1.35 (or not canonical).
    Unknown,
}

impl Endpoint {
    /// The read endpoints: what monitoring agents scrape. Only `GET` and `HEAD`.
    pub fn is_read(&self) -> bool {
        matches!(
            self,
            Endpoint::Metrics | Endpoint::Json(_) | Endpoint::Health
        )
    }

    /// The class a non-read endpoint belongs to, for `allowPaths`.
    pub fn class(&self) -> Option<PathClass> {
        match self {
            Endpoint::PodScoped { kind, .. } => Some(kind.class()),
            Endpoint::Node(class) => Some(*class),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonEndpoint {
    /// `/stats/summary`: keep `node`, filter `pods[]` by `podRef.namespace`.
    StatsSummary,
    /// `/pods` and `/runningpods/`: a `PodList`, filter `items[]` by
    /// `metadata.namespace`.
    PodList,
}

/// What a rewritten endpoint's body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    Exposition,
    Json(JsonEndpoint),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PodPath {
    ContainerLogs,
    /// `/stats/{namespace}/{pod}/{uid}/{container}` (cAdvisor JSON, kubelet 1.20
    /// with `--enable-cadvisor-json-endpoints`).
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

    fn class(self) -> PathClass {
        match self {
            PodPath::ContainerLogs => PathClass::ContainerLogs,
            PodPath::Stats => PathClass::CadvisorJson,
            _ => PathClass::Exec,
        }
    }

    /// How many segments follow `/{kind}/` in the kubelet's routes: namespace, pod,
    /// then container, or uid and container (`portForward` has no container).
    fn segment_counts(self) -> &'static [usize] {
        match self {
            PodPath::ContainerLogs => &[3],
            PodPath::Stats => &[4],
            PodPath::Exec | PodPath::Attach | PodPath::Run => &[3, 4],
            PodPath::PortForward => &[2, 3],
        }
    }
}

/// Classifies a request path (`:path`, query string allowed) the way the kubelet
/// routes it.
pub fn classify(path: &str) -> Endpoint {
    let path = path.split_once('?').map_or(path, |(p, _)| p);
    if !is_canonical(path) {
        return Endpoint::Unknown;
    }
    match path {
        "/metrics"
        | "/metrics/cadvisor"
        | "/metrics/resource"
        | "/metrics/resource/v1alpha1"
        | "/metrics/probes"
        | "/metrics/slis" => return Endpoint::Metrics,
        "/stats/summary" | "/stats/summary/" => return Endpoint::Json(JsonEndpoint::StatsSummary),
        // `/runningpods` is answered by the kubelet with a redirect to
        // `/runningpods/`, which passes because its target is allowed.
        "/pods" | "/pods/" | "/runningpods" | "/runningpods/" => {
            return Endpoint::Json(JsonEndpoint::PodList)
        }
        "/healthz" | "/healthz/ping" | "/healthz/log" | "/healthz/syncloop" => {
            return Endpoint::Health
        }
        "/configz" | "/flagz" | "/statusz" => return Endpoint::Node(PathClass::Debug),
        "/spec" | "/spec/" | "/stats" | "/stats/" | "/stats/container" | "/stats/container/" => {
            return Endpoint::Node(PathClass::CadvisorJson)
        }
        _ => {}
    }
    let Some((first, rest)) = path[1..].split_once('/') else {
        return Endpoint::Unknown;
    };
    let kind = match first {
        "containerLogs" => PodPath::ContainerLogs,
        "stats" => PodPath::Stats,
        "exec" => PodPath::Exec,
        "attach" => PodPath::Attach,
        "run" => PodPath::Run,
        "portForward" => PodPath::PortForward,
        "logs" => return Endpoint::Node(PathClass::NodeLogs),
        "debug" => return Endpoint::Node(PathClass::Debug),
        "checkpoint" => return Endpoint::Node(PathClass::Checkpoint),
        _ => return Endpoint::Unknown,
    };
    let segments: Vec<&str> = rest.split('/').collect();
    if segments.iter().any(|s| s.is_empty()) || !kind.segment_counts().contains(&segments.len()) {
        // Includes the legacy `/stats/{pod}/{container}`, which kubelets up to
        // 1.20 route into namespace `default`, whatever the path seems to name.
        return Endpoint::Unknown;
    }
    match segments.first() {
        Some(namespace) => Endpoint::PodScoped {
            kind,
            namespace: (*namespace).to_owned(),
        },
        None => Endpoint::Unknown,
    }
}

fn is_canonical(path: &str) -> bool {
    path.starts_with('/')
        && !path.contains(['%', '\\', '#'])
        && !path.contains("//")
        && !path[1..].split('/').any(|s| s == "." || s == "..")
}

#[cfg(test)]
mod tests {
    use super::*;

    use Endpoint::*;

    #[test]
    fn read_endpoints_as_the_kubelet_routes_them() {
        for p in [
            "/metrics",
            "/metrics/cadvisor",
            "/metrics/resource?x=1",
            "/metrics/resource/v1alpha1",
            "/metrics/probes",
            "/metrics/slis",
        ] {
            assert_eq!(classify(p), Metrics, "{p}");
        }
        for p in ["/stats/summary?only_cpu_and_memory=true", "/stats/summary/"] {
            assert_eq!(classify(p), Json(JsonEndpoint::StatsSummary), "{p}");
        }
        for p in ["/pods", "/pods/", "/runningpods", "/runningpods/"] {
            assert_eq!(classify(p), Json(JsonEndpoint::PodList), "{p}");
        }
        assert_eq!(classify("/healthz/syncloop"), Health);
    }

    #[test]
    fn pod_scoped_routes_take_their_segment_counts() {
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
        for p in ["/portForward/shop/web-0", "/portForward/shop/web-0/uid"] {
            assert_eq!(
                classify(p),
                PodScoped {
                    kind: PodPath::PortForward,
                    namespace: "shop".into()
                },
                "{p}"
            );
        }
        for p in ["/exec/shop/web-0/c", "/exec/shop/web-0/uid/c?command=sh"] {
            assert!(
                matches!(
                    classify(p),
                    PodScoped {
                        kind: PodPath::Exec,
                        ..
                    }
                ),
                "{p}"
            );
        }
    }

    #[test]
    fn node_level_routes_by_class() {
        for (p, class) in [
            ("/logs/", PathClass::NodeLogs),
            ("/logs/syslog", PathClass::NodeLogs),
            ("/configz", PathClass::Debug),
            ("/debug/pprof/", PathClass::Debug),
            ("/debug/flags/v", PathClass::Debug),
            ("/checkpoint/a/b/c", PathClass::Checkpoint),
            ("/spec", PathClass::CadvisorJson),
            ("/spec/", PathClass::CadvisorJson),
            ("/stats/", PathClass::CadvisorJson),
            ("/stats/container", PathClass::CadvisorJson),
        ] {
            assert_eq!(classify(p), Node(class), "{p}");
        }
    }

    #[test]
    fn what_no_kubelet_serves_or_is_not_canonical_is_unknown() {
        for p in [
            "/exec/shop",
            "/exec/shop/web",
            "/exec/shop/web/uid/c/extra",
            "/containerLogs/shop/web",
            "/containerLogs/shop/web/c/extra",
            "/containerLogs/shop//c",
            "/metrics/",
            "/metrics/cadvisor/",
            "/metrics/slis/",
            "/metrics/../exec/a/b/c",
            "/metrics/%2e%2e/configz",
            "//metrics",
            "/stats/summary/x",
            "/stats/web-0/nginx",
            "/stats/shop/web-0/nginx",
            "/pods/x",
            "",
            "/",
            "metrics",
            "/healthz/",
            "/healthzz",
            "/containerLogs/./x/y",
            "/containerLogs/shop/../../configz",
        ] {
            assert_eq!(classify(p), Unknown, "{p}");
        }
    }
}
