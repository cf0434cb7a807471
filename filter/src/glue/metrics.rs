//! Metric handles of one VM (`proxy_define_metric` ids), defined once per VM.

use proxy_wasm::hostcalls;
use proxy_wasm::types::MetricType;

use crate::body::Counters;
use crate::metrics as name;

/// A metric that failed to define is `None` and silently not recorded.
#[derive(Debug, Default)]
pub struct Metrics {
    pub requests_rewritten: Option<u32>,
    pub requests_passed: Option<u32>,
    pub requests_denied: Option<u32>,
    pub refused_forbidden: Option<u32>,
    pub refused_method: Option<u32>,
    pub error_body_replaced: Option<u32>,
    pub refused_unavailable: Option<u32>,
    pub refused_content_encoding: Option<u32>,
    pub refused_content_type: Option<u32>,
    pub refused_body: Option<u32>,
    pub unreadable_passed: Option<u32>,
    pub body_tail_dropped: Option<u32>,
    series_seen: Option<u32>,
    series_kept: Option<u32>,
    series_dropped: Option<u32>,
    series_injected: Option<u32>,
    bytes_in: Option<u32>,
    bytes_out: Option<u32>,
    pub fetch_success: Option<u32>,
    pub fetch_failure: Option<u32>,
    pub snapshot_rejected: Option<u32>,
    pub snapshot_loaded: Option<u32>,
    pub snapshot_age: Option<u32>,
    pub snapshot_namespaces: Option<u32>,
}

fn counter(n: &str) -> Option<u32> {
    hostcalls::define_metric(MetricType::Counter, n).ok()
}

fn gauge(n: &str) -> Option<u32> {
    hostcalls::define_metric(MetricType::Gauge, n).ok()
}

impl Metrics {
    pub fn define() -> Metrics {
        Metrics {
            requests_rewritten: counter(name::REQUESTS_REWRITTEN),
            requests_passed: counter(name::REQUESTS_PASSED),
            requests_denied: counter(name::REQUESTS_DENIED),
            refused_forbidden: counter(name::REFUSED_FORBIDDEN),
            refused_method: counter(name::REFUSED_METHOD),
            error_body_replaced: counter(name::ERROR_BODY_REPLACED),
            refused_unavailable: counter(name::REFUSED_UNAVAILABLE),
            refused_content_encoding: counter(name::REFUSED_CONTENT_ENCODING),
            refused_content_type: counter(name::REFUSED_CONTENT_TYPE),
            refused_body: counter(name::REFUSED_BODY),
            unreadable_passed: counter(name::UNREADABLE_PASSED),
            body_tail_dropped: counter(name::BODY_TAIL_DROPPED),
            series_seen: counter(name::SERIES_SEEN),
            series_kept: counter(name::SERIES_KEPT),
            series_dropped: counter(name::SERIES_DROPPED),
            series_injected: counter(name::SERIES_INJECTED),
            bytes_in: counter(name::BYTES_IN),
            bytes_out: counter(name::BYTES_OUT),
            fetch_success: counter(name::FETCH_SUCCESS),
            fetch_failure: counter(name::FETCH_FAILURE),
            snapshot_rejected: counter(name::SNAPSHOT_REJECTED),
            snapshot_loaded: counter(name::SNAPSHOT_LOADED),
            snapshot_age: gauge(name::SNAPSHOT_AGE),
            snapshot_namespaces: gauge(name::SNAPSHOT_NAMESPACES),
        }
    }

    pub fn add_body(&self, c: &Counters) {
        add(self.series_seen, c.seen);
        add(self.series_kept, c.kept);
        add(self.series_dropped, c.dropped);
        add(self.series_injected, c.injected);
        add(self.bytes_in, c.bytes_in);
        add(self.bytes_out, c.bytes_out);
    }
}

pub fn inc(id: Option<u32>) {
    add(id, 1);
}

pub fn add(id: Option<u32>, n: u64) {
    if let (Some(id), true) = (id, n > 0) {
        let _ = hostcalls::increment_metric(id, i64::try_from(n).unwrap_or(i64::MAX));
    }
}

pub fn set(id: Option<u32>, value: u64) {
    if let Some(id) = id {
        let _ = hostcalls::record_metric(id, value);
    }
}
