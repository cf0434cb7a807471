//! The dispatch from a response's [`BodyKind`] to its rewriter. It sits above both
//! rewriters so that they share only the vocabulary of [`crate::body`], never each
//! other.

use crate::body::{BodyError, Counters};
use crate::json;
use crate::policy::endpoint::BodyKind;
use crate::prometheus;
use crate::snapshot::catalog::RequestScope;

/// The rewriter for one response body, chosen by [`BodyKind`].
pub enum BodyFilter {
    Exposition(prometheus::Rewriter),
    Json(json::JsonFilter),
}

impl BodyFilter {
    pub fn new(kind: BodyKind, scope: RequestScope, max_json_body_bytes: usize) -> BodyFilter {
        match kind {
            BodyKind::Exposition => BodyFilter::Exposition(prometheus::Rewriter::new(scope)),
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
