//! A proxy-wasm ABI 0.2.1 host on wasmtime, to drive `kubelet_scope_filter.wasm`
//! the way Envoy does.
//!
//! Only what real hosts do, with Envoy's semantics (checked against
//! `source/extensions/common/wasm/context.cc` and proxy-wasm-cpp-host's
//! `src/exports.cc`/`shared_data.cc`):
//!
//! * **Body buffers** (`proxy_get/set_buffer_bytes`): in a body callback the buffer
//!   is the current chunk, or everything buffered so far when the previous callback
//!   returned `Pause` (Envoy's `StopIterationAndBuffer`). `set` at `start == 0`
//!   drains `length` bytes then prepends the data (a shorter `length` *inserts*),
//!   at `start >= size` appends, anything else is `BadArgument`. In the trailers
//!   callback the body is only reachable when the last chunk paused; otherwise
//!   `get` returns nothing and `set` is `BadArgument`. Reads are clamped to the
//!   buffer.
//! * **Header maps**: request headers are readable and writable only during
//!   `on_request_headers`, response headers only during `on_response_headers`
//!   (`BadArgument` elsewhere, as Envoy drops its pointer once the callback
//!   returns `Continue`); keys are lower-cased; `get` returns the first value.
//! * **`proxy_send_local_response`**: in the request phase the local reply goes
//!   through the filter's response callbacks (Envoy runs local replies through the
//!   encoder chain); in the response phase, before the headers left, it replaces the
//!   response. The callback's return value is overridden to stop iteration.
//! * **`proxy_close_stream(HttpResponse)`**: the stream is reset; nothing more of
//!   the body reaches the client, and the current chunk is not sent.
//! * **Shared data**: one store per `vm_id` shared by all VMs of a [`Proxy`]; CAS
//!   values are global and never 0; `set` on a missing key ignores the CAS.
//! * **Ticks, HTTP calls**: the test drives time ([`Proxy::advance_ms`]), ticks
//!   ([`Vm::tick`]) and answers calls ([`Vm::respond_call`], [`Vm::fail_call`]).
//!   A call needs `:method`, `:path` and `:authority` and a known cluster, else
//!   `BadArgument`.
//! * **Metrics**: a metric name is one stat for the whole proxy (counters add up
//!   across VMs), as in Envoy.
//!
//! A trap in the VM (a panic in the filter is an `unreachable` trap) is returned as
//! an error and marks the VM as failed, as Envoy marks a crashed VM.
//!
//! # Layout
//!
//! This file holds the public vocabulary (status codes, log levels, header pairs);
//! the rest is private modules whose public types are re-exported here:
//!
//! * `proxy`: [`Proxy`], one "Envoy process" and what its VMs share;
//! * `vm`: [`Vm`], one instance of the filter, and `vm::exchange`, which drives an
//!   HTTP stream through its callbacks ([`Upstream`] in, [`Exchange`] out);
//! * `state`: [`HostState`], what the host keeps for one VM between calls;
//! * `abi`: the host functions the module imports, one file per ABI area (guest
//!   memory and buffers, header maps, shared data, timers and HTTP calls, metrics
//!   and logs, streams and contexts). Only `abi` implements ABI semantics; the
//!   other modules call into the guest and keep the state the ABI reads.

use std::path::{Path, PathBuf};

pub use wasmtime::{Error, Result};

mod abi;
mod proxy;
mod state;
pub mod testkit;
mod vm;

pub use abi::headers::{deserialize_pairs, serialize_pairs};
pub use abi::metrics_logs::MetricKind;
pub use abi::stream::LocalReply;
pub use abi::timers_http::HttpCall;
pub use proxy::Proxy;
pub use state::HostState;
pub use vm::{Exchange, Upstream, Vm};

/// proxy-wasm status codes (`WasmResult`).
pub mod status {
    pub const OK: i32 = 0;
    pub const NOT_FOUND: i32 = 1;
    pub const BAD_ARGUMENT: i32 = 2;
    pub const INVALID_MEMORY_ACCESS: i32 = 6;
    pub const CAS_MISMATCH: i32 = 8;
    pub const UNIMPLEMENTED: i32 = 12;
}

/// Status for ABI calls this host does not implement (none used by the filter).
pub const UNIMPLEMENTED: i32 = status::UNIMPLEMENTED;

/// `proxy_on_*` return values.
pub const ACTION_CONTINUE: i32 = 0;
pub const ACTION_PAUSE: i32 = 1;

/// Log levels of the ABI.
pub mod level {
    pub const TRACE: u32 = 0;
    pub const DEBUG: u32 = 1;
    pub const INFO: u32 = 2;
    pub const WARN: u32 = 3;
    pub const ERROR: u32 = 4;
    pub const CRITICAL: u32 = 5;
}

/// The path of the release filter: `$KUBELET_SCOPE_WASM`, else the workspace's
/// default target directory.
pub fn default_wasm_path() -> PathBuf {
    match std::env::var_os("KUBELET_SCOPE_WASM") {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../target/wasm32-wasip1/release/kubelet_scope_filter.wasm"),
    }
}

/// Header pairs, as the ABI carries them (names and values are bytes).
pub type Headers = Vec<(Vec<u8>, Vec<u8>)>;

/// Builds [`Headers`] from string pairs.
pub fn headers(pairs: &[(&str, &str)]) -> Headers {
    pairs
        .iter()
        .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
        .collect()
}

/// First value of `name` (case-insensitive) in `h`.
pub fn header<'a>(h: &'a Headers, name: &str) -> Option<&'a [u8]> {
    h.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name.as_bytes()))
        .map(|(_, v)| v.as_slice())
}

/// Every value of `name` in `h`.
pub fn header_all<'a>(h: &'a Headers, name: &str) -> Vec<&'a [u8]> {
    h.iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case(name.as_bytes()))
        .map(|(_, v)| v.as_slice())
        .collect()
}

/// The first value of `name` in `h` as text (lossy), for the public accessors.
fn header_text(h: &Headers, name: &str) -> Option<String> {
    header(h, name).map(|v| String::from_utf8_lossy(v).into_owned())
}

/// `h` with lower-cased names, as Envoy stores header maps.
fn lower_keys(h: Headers) -> Headers {
    h.into_iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v))
        .collect()
}
