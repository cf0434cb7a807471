//! What every body rewriter (Prometheus text, kubelet JSON) shares: counters and the
//! error that makes tenant mode fail closed.

use std::fmt;

/// Per-body counters. "Items" are series for Prometheus text and array elements
/// (pods) for JSON.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    pub seen: u64,
    pub kept: u64,
    pub dropped: u64,
    /// Series that received at least one injected label.
    pub injected: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

/// A body the filter cannot rewrite safely. In tenant mode the response is refused
/// (nothing more of the body is sent); the message is the reason given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BodyError(pub String);

impl fmt::Display for BodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BodyError {}

use crate::catalog::RequestScope;
use crate::endpoint::BodyKind;
use crate::exposition;
use crate::json;

/// The rewriter for one response body, chosen by [`BodyKind`].
pub enum BodyFilter {
    Exposition(exposition::Rewriter),
    Json(json::JsonFilter),
}

impl BodyFilter {
    pub fn new(kind: BodyKind, scope: RequestScope, max_json_body_bytes: usize) -> BodyFilter {
        match kind {
            BodyKind::Exposition => BodyFilter::Exposition(exposition::Rewriter::new(scope)),
            BodyKind::Json(endpoint) => {
                BodyFilter::Json(json::JsonFilter::new(endpoint, scope, max_json_body_bytes))
            }
        }
    }

    /// Rewrites what it can of `chunk` into `out` (streaming: any split gives the
    /// same output).
    pub fn feed(&mut self, chunk: &[u8], out: &mut Vec<u8>) -> Result<(), BodyError> {
        match self {
            BodyFilter::Exposition(r) => r.feed(chunk, out),
            BodyFilter::Json(f) => f.feed(chunk, out),
        }
    }

    /// Ends the body, writing what was held back.
    pub fn finish(&mut self, out: &mut Vec<u8>) -> Result<(), BodyError> {
        match self {
            BodyFilter::Exposition(r) => r.finish(out),
            BodyFilter::Json(f) => f.finish(out),
        }
    }

    pub fn counters(&self) -> Counters {
        match self {
            BodyFilter::Exposition(r) => r.counters(),
            BodyFilter::Json(f) => f.counters(),
        }
    }
}
