//! The proxy-wasm glue: turns Envoy's callbacks into calls of the pure modules.
//!
//! * [`root::Root`] (one per VM, i.e. per Envoy worker): configuration, the snapshot
//!   cache (shared data → parsed [`crate::snapshot::catalog::Catalog`], re-decoded only when the
//!   version key changes), the poll lease and the long poll itself.
//! * [`stream::Stream`] (one per HTTP request): decision, request header edits,
//!   response checks and the streaming body rewrite.
//!
//! Host calls go through `proxy_wasm::hostcalls` (which return `Result`) rather than
//! the trait helpers (which `unwrap`), and only in the states where Envoy accepts
//! them: the SDK panics on any status it does not expect, and a panic kills the VM.
//! In particular the response body buffer is only touched inside the body callback
//! (or in the trailers callback after a `Pause`), where Envoy has one.

mod metrics;
mod root;
mod state;
mod stream;

// `proxy_wasm::main!` expands to the module's `#[no_mangle] extern "C" fn
// _initialize()` (the reactor entry point the host calls first), which runs the
// static constructors through an `unsafe` call. That is the only unsafe code of
// the crate; the allowance is scoped to this module.
#[allow(unsafe_code)]
mod entry {
    proxy_wasm::main! {{
        proxy_wasm::set_log_level(proxy_wasm::types::LogLevel::Info);
        proxy_wasm::set_root_context(super::root::new_root);
    }}
}
