//! [`HostState`]: what the host keeps for one VM between calls into it, and the
//! phase of the callback running now (which decides what the ABI exposes).
//!
//! Plain data: the `abi` functions read and write it, `vm` sets the phase and
//! the active context around each callback. Nothing here calls the guest.

use std::collections::HashMap;
use std::sync::Arc;

use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::WasiCtxBuilder;

use crate::abi::metrics_logs::MetricKind;
use crate::abi::stream::LocalReply;
use crate::abi::timers_http::{CallResponse, HttpCall};
use crate::proxy::ProxyInner;
use crate::Headers;

/// The callback the host is in: Envoy exposes buffers and header maps only in
/// their own callbacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CallPhase {
    None,
    VmStart,
    Configure,
    RequestHeaders,
    ResponseHeaders,
    ResponseBody,
    ResponseTrailers,
    HttpCallResponse,
}

/// Per-stream state the host keeps between callbacks.
#[derive(Default)]
pub(crate) struct StreamState {
    pub(crate) request_headers: Headers,
    pub(crate) response_headers: Headers,
    pub(crate) response_trailers: Headers,
    /// The body buffer of the current callback (chunk, or buffered body).
    pub(crate) body: Vec<u8>,
    /// In the trailers callback: whether the body is reachable (last chunk paused).
    pub(crate) body_reachable: bool,
    pub(crate) local_reply: Option<LocalReply>,
    pub(crate) reset: bool,
    /// `proxy_continue_stream` was called for the response.
    pub(crate) resumed: bool,
}

/// The host side of one VM.
pub struct HostState {
    pub(crate) wasi: WasiP1Ctx,
    pub(crate) proxy: Arc<ProxyInner>,
    pub(crate) vm_id: String,
    pub(crate) plugin_configuration: Vec<u8>,
    pub(crate) phase: CallPhase,
    /// The context id of the callback running now (0: none).
    pub(crate) active: u32,
    pub(crate) streams: HashMap<u32, StreamState>,
    pub(crate) call_response: Option<CallResponse>,
    pub(crate) calls: Vec<HttpCall>,
    pub(crate) next_token: u32,
    pub(crate) tick_period_ms: u32,
    /// (level, message) of every `proxy_log`.
    pub logs: Vec<(u32, String)>,
    pub(crate) metric_ids: Vec<(String, MetricKind)>,
    /// `proxy_send_local_response` was called in this callback: its action is
    /// overridden to stop iteration.
    pub(crate) stop_iteration: bool,
}

impl HostState {
    /// A VM of `proxy` that is given `plugin_configuration` in `proxy_on_configure`.
    pub(crate) fn new(proxy: Arc<ProxyInner>, plugin_configuration: &[u8]) -> HostState {
        HostState {
            wasi: WasiCtxBuilder::new().inherit_stderr().build_p1(),
            proxy,
            vm_id: String::new(),
            plugin_configuration: plugin_configuration.to_vec(),
            phase: CallPhase::None,
            active: 0,
            streams: HashMap::new(),
            call_response: None,
            calls: Vec::new(),
            next_token: 1,
            tick_period_ms: 0,
            logs: Vec::new(),
            metric_ids: Vec::new(),
            stop_iteration: false,
        }
    }

    /// The stream of the active context, if it is one.
    pub(crate) fn stream(&mut self) -> Option<&mut StreamState> {
        self.streams.get_mut(&self.active)
    }
}
