//! Names of the filter's metrics (defined with `proxy_define_metric`). Envoy keeps
//! them in its `wasmcustom` stat namespace: `wasmcustom.kubelet_scope_…` in
//! `/stats`, and plain `kubelet_scope_…` (namespace stripped, no `envoy_` prefix) in
//! `/stats/prometheus`. Counters are shared by every VM of the Envoy; gauges are
//! written by every VM with the same value.

/// Counters: requests by decision.
pub const REQUESTS_REWRITTEN: &str = "kubelet_scope_requests_rewritten_total";
pub const REQUESTS_PASSED: &str = "kubelet_scope_requests_passed_total";
pub const REQUESTS_DENIED: &str = "kubelet_scope_requests_denied_total";

/// Counters: refusals by reason (each also counts as denied or as a reset stream).
/// A denied path (404, or `tenancy.deniedStatus`): not a kubelet path, not
/// available to tenants or not in `allowPaths`, no or unknown tenant, namespace
/// not owned.
pub const REFUSED_FORBIDDEN: &str = "kubelet_scope_refused_forbidden_total";
/// 405: a method other than GET or HEAD on a read endpoint.
pub const REFUSED_METHOD: &str = "kubelet_scope_refused_method_total";
/// Tenant mode: a non-2xx kubelet answer on a rewritten path, whose body was
/// replaced with the plain status text (kubelet error bodies can name other
/// tenants' pods); a redirect to a path the tenant may not use counts here too.
pub const ERROR_BODY_REPLACED: &str = "kubelet_scope_error_body_replaced_total";
/// 503: no snapshot yet, or one older than `maxStalenessSeconds`.
pub const REFUSED_UNAVAILABLE: &str = "kubelet_scope_refused_unavailable_total";
/// 502: the kubelet answered with a `Content-Encoding` other than identity.
pub const REFUSED_CONTENT_ENCODING: &str = "kubelet_scope_refused_content_encoding_total";
/// 502: the kubelet answered with a content type the rewriter does not read.
pub const REFUSED_CONTENT_TYPE: &str = "kubelet_scope_refused_content_type_total";
/// The body could not be rewritten: 502 before the headers went out, else the
/// stream is reset.
pub const REFUSED_BODY: &str = "kubelet_scope_refused_body_total";
/// Injection-only mode: unreadable responses passed through unchanged.
pub const UNREADABLE_PASSED: &str = "kubelet_scope_unreadable_passed_total";
/// A last line without a final newline on a response that ended in trailers:
/// proxy-wasm gives no way to add body bytes there, so it is dropped.
pub const BODY_TAIL_DROPPED: &str = "kubelet_scope_body_tail_dropped_total";

/// Counters: series (Prometheus text) or items (JSON) and bytes of rewritten bodies.
pub const SERIES_SEEN: &str = "kubelet_scope_series_seen_total";
pub const SERIES_KEPT: &str = "kubelet_scope_series_kept_total";
pub const SERIES_DROPPED: &str = "kubelet_scope_series_dropped_total";
pub const SERIES_INJECTED: &str = "kubelet_scope_series_injected_total";
pub const BYTES_IN: &str = "kubelet_scope_body_bytes_in_total";
pub const BYTES_OUT: &str = "kubelet_scope_body_bytes_out_total";

/// Counters: snapshot polls (200 or 304) and failed polls (errors, timeouts,
/// non-200/304 answers, rejected snapshots).
pub const FETCH_SUCCESS: &str = "kubelet_scope_snapshot_fetch_success_total";
pub const FETCH_FAILURE: &str = "kubelet_scope_snapshot_fetch_failure_total";
/// Polls whose snapshot did not parse (also counted as failures); the old one stays.
pub const SNAPSHOT_REJECTED: &str = "kubelet_scope_snapshot_rejected_total";
/// A VM loaded a new snapshot version.
pub const SNAPSHOT_LOADED: &str = "kubelet_scope_snapshot_loaded_total";

/// Gauges: seconds since the last successful poll, and namespaces in the snapshot.
pub const SNAPSHOT_AGE: &str = "kubelet_scope_snapshot_age_seconds";
pub const SNAPSHOT_NAMESPACES: &str = "kubelet_scope_snapshot_namespaces";

/// Every counter, for documentation and tests.
pub const COUNTERS: &[&str] = &[
    REQUESTS_REWRITTEN,
    REQUESTS_PASSED,
    REQUESTS_DENIED,
    REFUSED_FORBIDDEN,
    REFUSED_METHOD,
    ERROR_BODY_REPLACED,
    REFUSED_UNAVAILABLE,
    REFUSED_CONTENT_ENCODING,
    REFUSED_CONTENT_TYPE,
    REFUSED_BODY,
    UNREADABLE_PASSED,
    BODY_TAIL_DROPPED,
    SERIES_SEEN,
    SERIES_KEPT,
    SERIES_DROPPED,
    SERIES_INJECTED,
    BYTES_IN,
    BYTES_OUT,
    FETCH_SUCCESS,
    FETCH_FAILURE,
    SNAPSHOT_REJECTED,
    SNAPSHOT_LOADED,
];

pub const GAUGES: &[&str] = &[SNAPSHOT_AGE, SNAPSHOT_NAMESPACES];
