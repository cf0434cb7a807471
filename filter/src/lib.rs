//! kubelet-scope: scopes and labels kubelet responses per tenant.
//!
//! Everything except [`glue`] is plain Rust with no proxy-wasm dependency, so it is
//! tested natively and reused by the `kubelet-scope` CLI; the glue (compiled only for
//! `wasm32`) turns proxy-wasm callbacks into calls of these modules.

pub mod body;
pub mod catalog;
pub mod config;
pub mod endpoint;
pub mod exposition;
pub mod fetch;
pub mod http;
pub mod json;
pub mod labels;
pub mod lease;
pub mod metrics;
mod scan;
pub mod snapshot;

#[cfg(target_arch = "wasm32")]
mod glue;
