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
