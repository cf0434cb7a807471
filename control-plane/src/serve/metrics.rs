//! Prometheus metrics of the control plane (`GET /metrics`, OpenMetrics text).
//!
//! Owns the registry: every metric's name, help and type. The sources and the HTTP
//! layer only bump the counters and gauges they are handed; the snapshot gauges are
//! sampled from the [`Store`] when `/metrics` is scraped, so this module keeps no
//! copy of the snapshot and must not be the place where readiness is decided (the
//! store is).

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::store::Store;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The route (`/v1/snapshot`, …), or `other` for unknown paths so that scanners
    /// cannot blow up the series count.
    pub path: String,
    pub code: String,
}

/// One [`Reviewer`](super::token_review::Reviewer): `snapshot`, `host` or a
/// virtual cluster's name.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReviewerLabels {
    pub reviewer: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReviewLabels {
    pub reviewer: String,
    /// `authenticated`, `unauthenticated` or `error`.
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AuthzLabels {
    /// The cluster that answered for the token (`host`, a virtual cluster), or
    /// empty when none was asked (no token, unknown issuer, expired).
    pub cluster: String,
    pub code: String,
}

pub struct Metrics {
    registry: Registry,
    namespaces: Gauge,
    version_age: Gauge<f64, AtomicU64>,
    ready: Gauge,
    /// Relists after the first list (410 Gone, watch restarts).
    pub watch_restarts: Counter,
    /// Failed watch/list calls, or namespaces files that could not be read.
    pub source_errors: Counter,
    pub long_polls_waiting: Gauge,
    pub requests: Family<RequestLabels, Counter>,
    /// TokenReviews sent (cache misses), by reviewer and answer.
    pub reviews: Family<ReviewLabels, Counter>,
    pub review_cache_hits: Family<ReviewerLabels, Counter>,
    pub review_cache_entries: Family<ReviewerLabels, Gauge>,
    /// Answers of the ext_authz endpoint.
    pub authz_decisions: Family<AuthzLabels, Counter>,
}

/// Registers each metric (a clone: they share their value) under its name and help,
/// one line a metric so that the list reads as the table of what `/metrics` shows.
macro_rules! register {
    ($registry:expr; $($name:literal => $metric:expr, $help:literal;)*) => {
        $($registry.register($name, $help, $metric.clone());)*
    };
}

impl Default for Metrics {
    fn default() -> Self {
        let mut m = Metrics {
            registry: Registry::with_prefix("kubelet_scope"),
            namespaces: Gauge::default(),
            version_age: Gauge::default(),
            ready: Gauge::default(),
            watch_restarts: Counter::default(),
            source_errors: Counter::default(),
            long_polls_waiting: Gauge::default(),
            requests: Family::default(),
            reviews: Family::default(),
            review_cache_hits: Family::default(),
            review_cache_entries: Family::default(),
            authz_decisions: Family::default(),
        };
        register! { m.registry;
            "snapshot_namespaces" => m.namespaces,
                "Namespaces in the served snapshot";
            "snapshot_version_age_seconds" => m.version_age,
                "Seconds since the served snapshot version was first published";
            "ready" => m.ready,
                "1 once the first complete namespace list (or valid file) is served";
            "watch_restarts" => m.watch_restarts,
                "Namespace relists after the first one (410 Gone, expired watches)";
            "watch_errors" => m.source_errors,
                "Failed namespace list/watch calls or unreadable namespaces files";
            "long_polls_waiting" => m.long_polls_waiting,
                "Snapshot long-poll requests currently waiting for a change";
            "http_requests" => m.requests,
                "HTTP requests by route and status code";
            "token_reviews" => m.reviews,
                "TokenReviews sent to an apiserver (cache misses), by reviewer and result";
            "token_review_cache_hits" => m.review_cache_hits,
                "Token verdicts answered from the cache, by reviewer";
            "token_review_cache_entries" => m.review_cache_entries,
                "Token verdicts held in the cache, by reviewer";
            "authz_decisions" => m.authz_decisions,
                "ext_authz answers by the cluster that reviewed the token and status code";
        }
        m
    }
}

impl Metrics {
    /// Renders the registry; the snapshot gauges are sampled now.
    pub fn encode(&self, store: &Store) -> String {
        match store.current() {
            Some(p) => {
                self.namespaces.set(p.namespaces.len() as i64);
                self.version_age.set(p.since.elapsed().as_secs_f64());
                self.ready.set(1);
            }
            None => {
                self.ready.set(0);
            }
        }
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
