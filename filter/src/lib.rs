//! kubelet-scope: scopes and labels kubelet responses per tenant.
//!
//! Everything except `glue` is plain Rust with no proxy-wasm dependency, so it is
//! tested natively and reused by the `kubelet-scope` CLI; the glue (compiled only for
//! `wasm32`) turns proxy-wasm callbacks into calls of these modules.
//!
//! The folders are the architecture:
//!
//! * [`policy`]: what a request may reach (endpoint table, HTTP header rules);
//! * [`prometheus`] and [`json`]: the two streaming body rewriters, which share only
//!   the vocabulary of [`body`] and the byte scans of `scan`;
//! * [`rewrite`]: the dispatch from a response to its rewriter;
//! * [`snapshot`]: the namespace map: its format, compiled catalog, delivery and the
//!   poller's lease;
//! * [`config`] and [`metrics`]: the plugin configuration and the names of the
//!   filter's metrics, both contracts with the operator;
//! * `glue` (wasm only): proxy-wasm callbacks, nothing else.

pub mod body;
pub mod config;
pub mod json;
pub mod metrics;
pub mod policy;
pub mod prometheus;
pub mod rewrite;
mod scan;
pub mod snapshot;

#[cfg(target_arch = "wasm32")]
mod glue;
