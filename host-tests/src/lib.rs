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

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use wasmtime::{Caller, Config, Engine, Extern, Instance, Linker, Memory, Module, Store};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::WasiCtxBuilder;

pub use wasmtime::{Error, Result};

pub mod testkit;

/// proxy-wasm status codes (`WasmResult`).
pub mod status {
    pub const OK: i32 = 0;
    pub const NOT_FOUND: i32 = 1;
    pub const BAD_ARGUMENT: i32 = 2;
    pub const INVALID_MEMORY_ACCESS: i32 = 6;
    pub const CAS_MISMATCH: i32 = 8;
    pub const UNIMPLEMENTED: i32 = 12;
}

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

const BUFFER_HTTP_RESPONSE_BODY: i32 = 1;
const BUFFER_HTTP_CALL_RESPONSE_BODY: i32 = 4;
const BUFFER_VM_CONFIGURATION: i32 = 6;
const BUFFER_PLUGIN_CONFIGURATION: i32 = 7;

const MAP_REQUEST_HEADERS: i32 = 0;
const MAP_RESPONSE_HEADERS: i32 = 2;
const MAP_RESPONSE_TRAILERS: i32 = 3;
const MAP_HTTP_CALL_RESPONSE_HEADERS: i32 = 6;
const MAP_HTTP_CALL_RESPONSE_TRAILERS: i32 = 7;

const STREAM_HTTP_REQUEST: i32 = 0;
const STREAM_HTTP_RESPONSE: i32 = 1;

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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    Counter,
    Gauge,
    Histogram,
}

/// key → (value, cas) of one vm_id.
type SharedMap = HashMap<Vec<u8>, (Vec<u8>, u32)>;

#[derive(Default)]
struct SharedData {
    /// vm_id → its map
    data: HashMap<String, SharedMap>,
    cas: u32,
}

impl SharedData {
    fn next_cas(&mut self) -> u32 {
        if self.cas == 0 {
            self.cas = 1;
        }
        let result = self.cas;
        self.cas = self.cas.wrapping_add(1);
        if self.cas == 0 {
            self.cas = 1;
        }
        result
    }

    fn get(&self, vm_id: &str, key: &[u8]) -> Option<(Vec<u8>, u32)> {
        self.data.get(vm_id)?.get(key).cloned()
    }

    fn set(&mut self, vm_id: &str, key: &[u8], value: &[u8], cas: u32) -> i32 {
        let next = self.next_cas();
        let map = self.data.entry(vm_id.to_owned()).or_default();
        match map.get_mut(key) {
            Some(entry) => {
                if cas != 0 && cas != entry.1 {
                    return status::CAS_MISMATCH;
                }
                *entry = (value.to_vec(), next);
            }
            None => {
                map.insert(key.to_vec(), (value.to_vec(), next));
            }
        }
        status::OK
    }
}

struct ProxyInner {
    shared: Mutex<SharedData>,
    metrics: Mutex<BTreeMap<String, (MetricKind, i64)>>,
    clock_ns: AtomicU64,
    clusters: Mutex<HashSet<String>>,
    log_level: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// One "Envoy process": a compiled module and what its VMs share (shared data,
/// metrics, the clock, the known clusters).
#[derive(Clone)]
pub struct Proxy {
    engine: Engine,
    module: Module,
    inner: Arc<ProxyInner>,
}

impl Proxy {
    /// Compiles the filter at [`default_wasm_path`].
    pub fn load_default() -> Result<Proxy> {
        Proxy::load(&default_wasm_path())
    }

    pub fn load(path: &Path) -> Result<Proxy> {
        let bytes = std::fs::read(path).map_err(|e| {
            wasmtime::format_err!(
                "cannot read {} ({e}); build it with `make wasm` or set KUBELET_SCOPE_WASM",
                path.display()
            )
        })?;
        Proxy::from_bytes(&bytes)
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Proxy> {
        let mut config = Config::new();
        config.wasm_simd(true);
        let engine = Engine::new(&config)?;
        let module = Module::new(&engine, bytes)?;
        Ok(Proxy {
            engine,
            module,
            inner: Arc::new(ProxyInner {
                shared: Mutex::new(SharedData::default()),
                metrics: Mutex::new(BTreeMap::new()),
                // 2026-01-01T00:00:00Z
                clock_ns: AtomicU64::new(1_767_225_600_000_000_000),
                clusters: Mutex::new(HashSet::new()),
                log_level: AtomicU64::new(u64::from(level::INFO)),
            }),
        })
    }

    /// Another proxy running the same compiled module, with its own shared data.
    pub fn fresh(&self) -> Proxy {
        Proxy {
            engine: self.engine.clone(),
            module: self.module.clone(),
            inner: Arc::new(ProxyInner {
                shared: Mutex::new(SharedData::default()),
                metrics: Mutex::new(BTreeMap::new()),
                clock_ns: AtomicU64::new(self.inner.clock_ns.load(Ordering::SeqCst)),
                clusters: Mutex::new(HashSet::new()),
                log_level: AtomicU64::new(self.inner.log_level.load(Ordering::SeqCst)),
            }),
        }
    }

    /// Names of the module's imports (`module.name`).
    pub fn imports(&self) -> Vec<String> {
        self.module
            .imports()
            .map(|i| format!("{}.{}", i.module(), i.name()))
            .collect()
    }

    pub fn add_cluster(&self, name: &str) {
        lock(&self.inner.clusters).insert(name.to_owned());
    }

    pub fn set_log_level(&self, level: u32) {
        self.inner
            .log_level
            .store(u64::from(level), Ordering::SeqCst);
    }

    pub fn now_ms(&self) -> u64 {
        self.inner.clock_ns.load(Ordering::SeqCst) / 1_000_000
    }

    pub fn advance_ms(&self, ms: u64) {
        self.inner
            .clock_ns
            .fetch_add(ms * 1_000_000, Ordering::SeqCst);
    }

    /// Shared data of the (empty) `vm_id` all VMs here use.
    pub fn shared_get(&self, key: &str) -> Option<(Vec<u8>, u32)> {
        lock(&self.inner.shared).get("", key.as_bytes())
    }

    pub fn shared_set(&self, key: &str, value: &[u8]) {
        lock(&self.inner.shared).set("", key.as_bytes(), value, 0);
    }

    pub fn shared_keys(&self) -> Vec<String> {
        let shared = lock(&self.inner.shared);
        let mut keys: Vec<String> = shared
            .data
            .values()
            .flat_map(|m| m.keys())
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .collect();
        keys.sort();
        keys
    }

    /// Current value of a metric, by the name the filter defined.
    pub fn metric(&self, name: &str) -> Option<i64> {
        lock(&self.inner.metrics).get(name).map(|(_, v)| *v)
    }

    pub fn metrics(&self) -> BTreeMap<String, (MetricKind, i64)> {
        lock(&self.inner.metrics).clone()
    }

    /// Starts a VM: instantiates the module, runs `_initialize`, creates the root
    /// context and calls `proxy_on_vm_start` and `proxy_on_configure`.
    pub fn start_vm(&self, plugin_configuration: &[u8]) -> Result<Vm> {
        let mut linker: Linker<HostState> = Linker::new(&self.engine);
        wasmtime_wasi::p1::add_to_linker_sync(&mut linker, |s: &mut HostState| &mut s.wasi)?;
        add_proxy_wasm(&mut linker)?;
        // Anything else the module imports traps when called: the test then fails
        // loudly instead of the host inventing a behaviour.
        linker.define_unknown_imports_as_traps(&self.module)?;
        let wasi = WasiCtxBuilder::new().inherit_stderr().build_p1();
        let state = HostState {
            wasi,
            proxy: Arc::clone(&self.inner),
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
        };
        let mut store = Store::new(&self.engine, state);
        let instance = linker.instantiate(&mut store, &self.module)?;
        let memory = instance
            .get_memory(&mut store, "memory")
            .ok_or_else(|| wasmtime::format_err!("the module exports no memory"))?;
        let mut vm = Vm {
            store,
            instance,
            memory,
            root_id: 1,
            next_id: 2,
            failed: None,
            configured: false,
        };
        if let Ok(init) = vm
            .instance
            .get_typed_func::<(), ()>(&mut vm.store, "_initialize")
        {
            init.call(&mut vm.store, ())?;
        }
        let root = vm.root_id;
        vm.call2("proxy_on_context_create", root as i32, 0)?;
        vm.store.data_mut().phase = CallPhase::VmStart;
        let started = vm.call_ret2("proxy_on_vm_start", root as i32, 0)?;
        vm.store.data_mut().phase = CallPhase::Configure;
        let size = plugin_configuration.len() as i32;
        let configured = vm.call_ret2("proxy_on_configure", root as i32, size);
        vm.store.data_mut().phase = CallPhase::None;
        vm.configured = started != 0 && configured? != 0;
        Ok(vm)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CallPhase {
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
struct StreamState {
    request_headers: Headers,
    response_headers: Headers,
    response_trailers: Headers,
    /// The body buffer of the current callback (chunk, or buffered body).
    body: Vec<u8>,
    /// In the trailers callback: whether the body is reachable (last chunk paused).
    body_reachable: bool,
    local_reply: Option<LocalReply>,
    reset: bool,
    /// `proxy_continue_stream` was called for the response.
    resumed: bool,
}

/// A reply sent with `proxy_send_local_response`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalReply {
    pub status: u32,
    pub body: Vec<u8>,
    pub headers: Headers,
    pub details: Vec<u8>,
}

struct CallResponse {
    headers: Headers,
    body: Vec<u8>,
    trailers: Headers,
}

/// An outstanding `proxy_http_call`.
#[derive(Debug, Clone)]
pub struct HttpCall {
    pub token: u32,
    pub cluster: String,
    pub headers: Headers,
    pub body: Vec<u8>,
    pub timeout_ms: u32,
}

impl HttpCall {
    pub fn header(&self, name: &str) -> Option<String> {
        header(&self.headers, name).map(|v| String::from_utf8_lossy(v).into_owned())
    }
}

/// The host side of one VM.
pub struct HostState {
    wasi: WasiP1Ctx,
    proxy: Arc<ProxyInner>,
    vm_id: String,
    plugin_configuration: Vec<u8>,
    phase: CallPhase,
    active: u32,
    streams: HashMap<u32, StreamState>,
    call_response: Option<CallResponse>,
    calls: Vec<HttpCall>,
    next_token: u32,
    tick_period_ms: u32,
    /// (level, message) of every `proxy_log`.
    pub logs: Vec<(u32, String)>,
    metric_ids: Vec<(String, MetricKind)>,
    stop_iteration: bool,
}

impl HostState {
    fn stream(&mut self) -> Option<&mut StreamState> {
        self.streams.get_mut(&self.active)
    }
}

/// The upstream (kubelet) response a test feeds through the filter.
#[derive(Debug, Clone, Default)]
pub struct Upstream {
    pub headers: Headers,
    /// Body chunks as Envoy would deliver them; the last one carries end of stream
    /// unless there are trailers. An empty vector is a response without a body.
    pub chunks: Vec<Vec<u8>>,
    pub trailers: Option<Headers>,
}

impl Upstream {
    /// A 200 with this content type and `body` split in `chunk_size` chunks.
    pub fn ok(content_type: &str, body: &[u8], chunk_size: usize) -> Upstream {
        Upstream {
            headers: headers(&[
                (":status", "200"),
                ("content-type", content_type),
                ("content-length", &body.len().to_string()),
            ]),
            chunks: body.chunks(chunk_size.max(1)).map(<[u8]>::to_vec).collect(),
            trailers: None,
        }
    }
}

/// What the client saw, and what went upstream.
#[derive(Debug, Clone, Default)]
pub struct Exchange {
    /// Request headers as they left for the upstream; `None` when the filter
    /// answered locally in the request phase.
    pub upstream_request: Option<Headers>,
    pub status: u32,
    pub headers: Headers,
    pub body: Vec<u8>,
    pub trailers: Option<Headers>,
    /// The reply came from `proxy_send_local_response`.
    pub local_reply: Option<LocalReply>,
    /// The stream was reset after the response headers went out.
    pub reset: bool,
    /// Actions returned by `on_response_body`, in order.
    pub body_actions: Vec<i32>,
}

impl Exchange {
    pub fn header(&self, name: &str) -> Option<String> {
        header(&self.headers, name).map(|v| String::from_utf8_lossy(v).into_owned())
    }

    pub fn upstream_header(&self, name: &str) -> Option<String> {
        self.upstream_request
            .as_ref()
            .and_then(|h| header(h, name))
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }

    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One VM (one Envoy worker's instance of the filter).
pub struct Vm {
    store: Store<HostState>,
    instance: Instance,
    memory: Memory,
    root_id: u32,
    next_id: u32,
    failed: Option<String>,
    /// `proxy_on_vm_start` and `proxy_on_configure` both returned true.
    pub configured: bool,
}

impl Vm {
    fn check_alive(&self) -> Result<()> {
        match &self.failed {
            Some(why) => Err(wasmtime::format_err!("the VM failed earlier: {why}")),
            None => Ok(()),
        }
    }

    fn trap(&mut self, e: Error) -> Error {
        let msg = format!("{e:?}");
        self.failed = Some(msg.clone());
        wasmtime::format_err!("VM trapped (a panic in the filter?): {msg}")
    }

    fn call1(&mut self, name: &str, a: i32) -> Result<()> {
        self.check_alive()?;
        let f = self
            .instance
            .get_typed_func::<i32, ()>(&mut self.store, name)?;
        f.call(&mut self.store, a).map_err(|e| self.trap(e))
    }

    fn call2(&mut self, name: &str, a: i32, b: i32) -> Result<()> {
        self.check_alive()?;
        let f = self
            .instance
            .get_typed_func::<(i32, i32), ()>(&mut self.store, name)?;
        f.call(&mut self.store, (a, b)).map_err(|e| self.trap(e))
    }

    fn call_ret1(&mut self, name: &str, a: i32) -> Result<i32> {
        self.check_alive()?;
        let f = self
            .instance
            .get_typed_func::<i32, i32>(&mut self.store, name)?;
        f.call(&mut self.store, a).map_err(|e| self.trap(e))
    }

    fn call_ret2(&mut self, name: &str, a: i32, b: i32) -> Result<i32> {
        self.check_alive()?;
        let f = self
            .instance
            .get_typed_func::<(i32, i32), i32>(&mut self.store, name)?;
        f.call(&mut self.store, (a, b)).map_err(|e| self.trap(e))
    }

    fn call_ret3(&mut self, name: &str, a: i32, b: i32, c: i32) -> Result<i32> {
        self.check_alive()?;
        let f = self
            .instance
            .get_typed_func::<(i32, i32, i32), i32>(&mut self.store, name)?;
        f.call(&mut self.store, (a, b, c)).map_err(|e| self.trap(e))
    }

    /// True when a callback trapped; the VM is then unusable, as in Envoy.
    pub fn failed(&self) -> Option<&str> {
        self.failed.as_deref()
    }

    pub fn logs(&self) -> &[(u32, String)] {
        &self.store.data().logs
    }

    pub fn clear_logs(&mut self) {
        self.store.data_mut().logs.clear();
    }

    /// Size of the VM's linear memory in bytes (it never shrinks).
    pub fn memory_bytes(&self) -> usize {
        self.memory.data_size(&self.store)
    }

    pub fn tick_period_ms(&self) -> u32 {
        self.store.data().tick_period_ms
    }

    /// Calls `proxy_on_tick` if the filter asked for ticks.
    pub fn tick(&mut self) -> Result<()> {
        if self.store.data().tick_period_ms == 0 {
            return Ok(());
        }
        let root = self.root_id as i32;
        self.store.data_mut().active = self.root_id;
        let r = self.call1("proxy_on_tick", root);
        self.store.data_mut().active = 0;
        r
    }

    /// Outstanding HTTP calls.
    pub fn pending_calls(&self) -> Vec<HttpCall> {
        self.store.data().calls.clone()
    }

    /// Answers an outstanding call.
    pub fn respond_call(&mut self, token: u32, headers: Headers, body: &[u8]) -> Result<()> {
        self.answer_call(
            token,
            Some(CallResponse {
                headers,
                body: body.to_vec(),
                trailers: Vec::new(),
            }),
        )
    }

    /// Fails an outstanding call (reset, no healthy upstream): Envoy calls back with
    /// no headers and no body.
    pub fn fail_call(&mut self, token: u32) -> Result<()> {
        self.answer_call(token, None)
    }

    fn answer_call(&mut self, token: u32, response: Option<CallResponse>) -> Result<()> {
        let state = self.store.data_mut();
        let before = state.calls.len();
        state.calls.retain(|c| c.token != token);
        if state.calls.len() == before {
            return Err(wasmtime::format_err!("no outstanding call {token}"));
        }
        let (nh, nb, nt) = response.as_ref().map_or((0, 0, 0), |r| {
            (r.headers.len(), r.body.len(), r.trailers.len())
        });
        state.call_response = response;
        state.phase = CallPhase::HttpCallResponse;
        state.active = self.root_id;
        let root = self.root_id as i32;
        self.check_alive()?;
        let f = self
            .instance
            .get_typed_func::<(i32, i32, i32, i32, i32), ()>(
                &mut self.store,
                "proxy_on_http_call_response",
            )?;
        let r = f
            .call(
                &mut self.store,
                (root, token as i32, nh as i32, nb as i32, nt as i32),
            )
            .map_err(|e| self.trap(e));
        let state = self.store.data_mut();
        state.call_response = None;
        state.phase = CallPhase::None;
        state.active = 0;
        r
    }

    /// One HTTP request through the filter: request headers (no request body),
    /// then `upstream`'s response, then the end-of-stream callbacks.
    pub fn exchange(&mut self, request: Headers, upstream: &Upstream) -> Result<Exchange> {
        self.check_alive()?;
        let id = self.next_id;
        self.next_id += 1;
        self.call2("proxy_on_context_create", id as i32, self.root_id as i32)?;
        let result = self.run_exchange(id, request, upstream);
        // Envoy ends every stream with on_log, on_done and on_delete.
        if self.failed.is_none() {
            self.store.data_mut().active = id;
            let ends = self
                .call1("proxy_on_log", id as i32)
                .and_then(|()| self.call_ret1("proxy_on_done", id as i32).map(|_| ()))
                .and_then(|()| self.call1("proxy_on_delete", id as i32));
            self.store.data_mut().active = 0;
            self.store.data_mut().streams.remove(&id);
            ends?;
        }
        result
    }

    fn enter(&mut self, id: u32, phase: CallPhase) {
        let s = self.store.data_mut();
        s.active = id;
        s.phase = phase;
        s.stop_iteration = false;
    }

    fn leave(&mut self) -> bool {
        let s = self.store.data_mut();
        s.active = 0;
        s.phase = CallPhase::None;
        std::mem::take(&mut s.stop_iteration)
    }

    fn stream_state(&mut self, id: u32) -> &mut StreamState {
        self.store.data_mut().streams.entry(id).or_default()
    }

    fn run_exchange(&mut self, id: u32, request: Headers, upstream: &Upstream) -> Result<Exchange> {
        let mut ex = Exchange::default();
        let n = request.len() as i32;
        self.stream_state(id).request_headers = lower_keys(request);
        self.enter(id, CallPhase::RequestHeaders);
        let action = self.call_ret3("proxy_on_request_headers", id as i32, n, 1);
        let stopped = self.leave();
        let action = action?;
        let state = self.stream_state(id);
        let local = state.local_reply.take();
        let request_after = std::mem::take(&mut state.request_headers);
        if let Some(reply) = local {
            // The local reply runs through the encoder chain, this filter included.
            let reply_upstream = Upstream {
                headers: local_reply_headers(&reply),
                chunks: if reply.body.is_empty() {
                    vec![]
                } else {
                    vec![reply.body.clone()]
                },
                trailers: None,
            };
            self.respond(id, &reply_upstream, &mut ex)?;
            ex.local_reply = Some(reply);
            return Ok(ex);
        }
        if stopped || action != ACTION_CONTINUE {
            return Err(wasmtime::format_err!(
                "the filter stopped the request headers without a local reply (action {action})"
            ));
        }
        ex.upstream_request = Some(request_after);
        self.respond(id, upstream, &mut ex)?;
        Ok(ex)
    }

    /// Drives the response callbacks for `upstream` and collects what the client
    /// receives into `ex`.
    fn respond(&mut self, id: u32, upstream: &Upstream, ex: &mut Exchange) -> Result<()> {
        let no_body = upstream.chunks.is_empty() && upstream.trailers.is_none();
        let n = upstream.headers.len() as i32;
        self.stream_state(id).response_headers = lower_keys(upstream.headers.clone());
        self.enter(id, CallPhase::ResponseHeaders);
        let action = self.call_ret3("proxy_on_response_headers", id as i32, n, no_body as i32);
        let stopped = self.leave();
        let action = action?;
        let state = self.stream_state(id);
        let response_headers = std::mem::take(&mut state.response_headers);
        if let Some(reply) = state.local_reply.take() {
            // Before the headers left: the local reply replaces the response
            // (Envoy sends it directly, without running the encoder filters again).
            ex.status = reply.status;
            ex.headers = local_reply_headers(&reply);
            ex.body = reply.body.clone();
            ex.local_reply = Some(reply);
            return Ok(());
        }
        if state.reset {
            ex.reset = true;
            return Ok(());
        }
        if stopped || action != ACTION_CONTINUE {
            return Err(wasmtime::format_err!(
                "the filter stopped the response headers (action {action}); nothing resumes them"
            ));
        }
        ex.headers = response_headers;
        ex.status = header(&ex.headers, ":status")
            .and_then(|s| std::str::from_utf8(s).ok())
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);

        let mut buffered: Option<Vec<u8>> = None;
        let last = upstream.chunks.len();
        for (i, chunk) in upstream.chunks.iter().enumerate() {
            let end = i + 1 == last && upstream.trailers.is_none();
            let mut body = buffered.take().unwrap_or_default();
            body.extend_from_slice(chunk);
            let size = body.len() as i32;
            self.stream_state(id).body = body;
            self.enter(id, CallPhase::ResponseBody);
            let action = self.call_ret3("proxy_on_response_body", id as i32, size, end as i32);
            let stopped = self.leave();
            let action = action?;
            ex.body_actions.push(action);
            let state = self.stream_state(id);
            let body = std::mem::take(&mut state.body);
            if state.reset {
                ex.reset = true;
                return Ok(());
            }
            if state.local_reply.is_some() {
                return Err(wasmtime::format_err!(
                    "local reply after the response headers were sent"
                ));
            }
            if action == ACTION_CONTINUE && !stopped {
                ex.body.extend_from_slice(&body);
            } else if end {
                return Err(wasmtime::format_err!(
                    "the filter paused the last body chunk; nothing resumes it"
                ));
            } else {
                buffered = Some(body);
            }
        }
        if let Some(trailers) = &upstream.trailers {
            let n = trailers.len() as i32;
            let state = self.stream_state(id);
            state.response_trailers = lower_keys(trailers.clone());
            state.body_reachable = buffered.is_some();
            state.body = buffered.take().unwrap_or_default();
            self.enter(id, CallPhase::ResponseTrailers);
            let action = self.call_ret2("proxy_on_response_trailers", id as i32, n);
            let stopped = self.leave();
            let action = action?;
            let state = self.stream_state(id);
            if state.reset {
                ex.reset = true;
                return Ok(());
            }
            if stopped || action != ACTION_CONTINUE {
                return Err(wasmtime::format_err!(
                    "the filter paused the trailers; nothing resumes them"
                ));
            }
            let body = std::mem::take(&mut state.body);
            ex.body.extend_from_slice(&body);
            ex.trailers = Some(std::mem::take(&mut state.response_trailers));
        } else if buffered.is_some() {
            return Err(wasmtime::format_err!("body left buffered at end of stream"));
        }
        Ok(())
    }
}

fn local_reply_headers(reply: &LocalReply) -> Headers {
    let mut h = headers(&[(":status", &reply.status.to_string())]);
    h.extend(lower_keys(reply.headers.clone()));
    if !reply.body.is_empty() && header(&h, "content-length").is_none() {
        h.push((
            b"content-length".to_vec(),
            reply.body.len().to_string().into_bytes(),
        ));
    }
    h
}

fn lower_keys(h: Headers) -> Headers {
    h.into_iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v))
        .collect()
}

// ---------------------------------------------------------------------------
// Guest memory helpers.

fn memory(caller: &mut Caller<'_, HostState>) -> Option<Memory> {
    match caller.get_export("memory") {
        Some(Extern::Memory(m)) => Some(m),
        _ => None,
    }
}

fn read(caller: &mut Caller<'_, HostState>, ptr: i32, len: i32) -> Option<Vec<u8>> {
    let mem = memory(caller)?;
    let (ptr, len) = (ptr as u32 as usize, len as u32 as usize);
    mem.data(&caller)
        .get(ptr..ptr.checked_add(len)?)
        .map(<[u8]>::to_vec)
}

fn write_u32(caller: &mut Caller<'_, HostState>, ptr: i32, value: u32) -> bool {
    let Some(mem) = memory(caller) else {
        return false;
    };
    let ptr = ptr as u32 as usize;
    match mem.data_mut(caller).get_mut(ptr..ptr + 4) {
        Some(slot) => {
            slot.copy_from_slice(&value.to_le_bytes());
            true
        }
        None => false,
    }
}

/// Allocates `data` in the guest (through `proxy_on_memory_allocate`, as hosts do)
/// and writes its address and size to `ptr_ptr`/`size_ptr`.
fn give(caller: &mut Caller<'_, HostState>, data: &[u8], ptr_ptr: i32, size_ptr: i32) -> i32 {
    let alloc = match caller.get_export("proxy_on_memory_allocate") {
        Some(Extern::Func(f)) => f,
        _ => match caller.get_export("malloc") {
            Some(Extern::Func(f)) => f,
            _ => return status::INVALID_MEMORY_ACCESS,
        },
    };
    let Ok(alloc) = alloc.typed::<i32, i32>(&caller) else {
        return status::INVALID_MEMORY_ACCESS;
    };
    let Ok(addr) = alloc.call(&mut *caller, data.len() as i32) else {
        return status::INVALID_MEMORY_ACCESS;
    };
    let Some(mem) = memory(caller) else {
        return status::INVALID_MEMORY_ACCESS;
    };
    let start = addr as u32 as usize;
    match mem
        .data_mut(&mut *caller)
        .get_mut(start..start + data.len())
    {
        Some(dst) => dst.copy_from_slice(data),
        None => return status::INVALID_MEMORY_ACCESS,
    }
    if !write_u32(caller, ptr_ptr, addr as u32) || !write_u32(caller, size_ptr, data.len() as u32) {
        return status::INVALID_MEMORY_ACCESS;
    }
    status::OK
}

/// Serializes header pairs the ABI way.
pub fn serialize_pairs(pairs: &Headers) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(pairs.len() as u32).to_le_bytes());
    for (k, v) in pairs {
        out.extend_from_slice(&(k.len() as u32).to_le_bytes());
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
    }
    for (k, v) in pairs {
        out.extend_from_slice(k);
        out.push(0);
        out.extend_from_slice(v);
        out.push(0);
    }
    out
}

/// Parses serialized header pairs; `None` when malformed.
pub fn deserialize_pairs(bytes: &[u8]) -> Option<Headers> {
    if bytes.is_empty() {
        return Some(Vec::new());
    }
    let n = u32::from_le_bytes(bytes.get(0..4)?.try_into().ok()?) as usize;
    let mut sizes = Vec::with_capacity(n.min(1024));
    for i in 0..n {
        let at = 4 + i * 8;
        let k = u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?) as usize;
        let v = u32::from_le_bytes(bytes.get(at + 4..at + 8)?.try_into().ok()?) as usize;
        sizes.push((k, v));
    }
    let mut p = 4 + n * 8;
    let mut out = Vec::with_capacity(n);
    for (k, v) in sizes {
        let key = bytes.get(p..p + k)?.to_vec();
        p += k + 1;
        let value = bytes.get(p..p + v)?.to_vec();
        p += v + 1;
        out.push((key, value));
    }
    Some(out)
}

/// The header map of type `map` in the current callback, if Envoy exposes it there.
fn header_map(state: &mut HostState, map: i32) -> Option<&mut Headers> {
    let phase = state.phase;
    match map {
        MAP_REQUEST_HEADERS if phase == CallPhase::RequestHeaders => {
            Some(&mut state.stream()?.request_headers)
        }
        MAP_RESPONSE_HEADERS if phase == CallPhase::ResponseHeaders => {
            Some(&mut state.stream()?.response_headers)
        }
        MAP_RESPONSE_TRAILERS if phase == CallPhase::ResponseTrailers => {
            Some(&mut state.stream()?.response_trailers)
        }
        MAP_HTTP_CALL_RESPONSE_HEADERS => state.call_response.as_mut().map(|r| &mut r.headers),
        MAP_HTTP_CALL_RESPONSE_TRAILERS => state.call_response.as_mut().map(|r| &mut r.trailers),
        _ => None,
    }
}

fn metric_kind(t: i32) -> Option<MetricKind> {
    match t {
        0 => Some(MetricKind::Counter),
        1 => Some(MetricKind::Gauge),
        2 => Some(MetricKind::Histogram),
        _ => None,
    }
}

fn add_proxy_wasm(linker: &mut Linker<HostState>) -> Result<()> {
    linker.func_wrap(
        "env",
        "proxy_log",
        |mut caller: Caller<'_, HostState>, level: i32, ptr: i32, len: i32| -> i32 {
            let Some(msg) = read(&mut caller, ptr, len) else {
                return status::INVALID_MEMORY_ACCESS;
            };
            let msg = String::from_utf8_lossy(&msg).into_owned();
            let threshold = caller.data().proxy.log_level.load(Ordering::SeqCst) as u32;
            if std::env::var_os("HOST_TESTS_LOG").is_some() && level as u32 >= threshold {
                eprintln!("[wasm level {level}] {msg}");
            }
            caller.data_mut().logs.push((level as u32, msg));
            status::OK
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_log_level",
        |mut caller: Caller<'_, HostState>, ptr: i32| -> i32 {
            let level = caller.data().proxy.log_level.load(Ordering::SeqCst) as u32;
            if write_u32(&mut caller, ptr, level) {
                status::OK
            } else {
                status::INVALID_MEMORY_ACCESS
            }
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_current_time_nanoseconds",
        |mut caller: Caller<'_, HostState>, ptr: i32| -> i32 {
            let now = caller.data().proxy.clock_ns.load(Ordering::SeqCst);
            let Some(mem) = memory(&mut caller) else {
                return status::INVALID_MEMORY_ACCESS;
            };
            let p = ptr as u32 as usize;
            match mem.data_mut(&mut caller).get_mut(p..p + 8) {
                Some(slot) => {
                    slot.copy_from_slice(&now.to_le_bytes());
                    status::OK
                }
                None => status::INVALID_MEMORY_ACCESS,
            }
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_tick_period_milliseconds",
        |mut caller: Caller<'_, HostState>, period: i32| -> i32 {
            caller.data_mut().tick_period_ms = period as u32;
            status::OK
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_buffer_bytes",
        |mut caller: Caller<'_, HostState>,
         kind: i32,
         start: i32,
         max: i32,
         ptr_ptr: i32,
         size_ptr: i32|
         -> i32 {
            let state = caller.data_mut();
            let buffer: Vec<u8> = match kind {
                BUFFER_HTTP_RESPONSE_BODY => match state.phase {
                    CallPhase::ResponseBody => match state.stream() {
                        Some(s) => s.body.clone(),
                        None => return status::NOT_FOUND,
                    },
                    CallPhase::ResponseTrailers => match state.stream() {
                        Some(s) if s.body_reachable => s.body.clone(),
                        // Envoy: a buffer object without an instance (size 0).
                        Some(_) => Vec::new(),
                        None => return status::NOT_FOUND,
                    },
                    _ => Vec::new(),
                },
                BUFFER_HTTP_CALL_RESPONSE_BODY => match &state.call_response {
                    Some(r) => r.body.clone(),
                    None => return status::NOT_FOUND,
                },
                BUFFER_PLUGIN_CONFIGURATION if state.phase == CallPhase::Configure => {
                    state.plugin_configuration.clone()
                }
                BUFFER_PLUGIN_CONFIGURATION => return status::NOT_FOUND,
                BUFFER_VM_CONFIGURATION => Vec::new(),
                _ => return status::NOT_FOUND,
            };
            let (start, max) = (start as u32 as u64, max as u32 as u64);
            if start.checked_add(max).is_none() {
                return status::BAD_ARGUMENT;
            }
            let size = buffer.len() as u64;
            let len = if start > size {
                0
            } else {
                max.min(size - start)
            };
            if len == 0 {
                // proxy-wasm-cpp-host writes a null pointer and zero size.
                if !write_u32(&mut caller, ptr_ptr, 0) || !write_u32(&mut caller, size_ptr, 0) {
                    return status::INVALID_MEMORY_ACCESS;
                }
                return status::OK;
            }
            let slice = &buffer[start as usize..(start + len) as usize];
            give(&mut caller, slice, ptr_ptr, size_ptr)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_buffer_bytes",
        |mut caller: Caller<'_, HostState>,
         kind: i32,
         start: i32,
         length: i32,
         ptr: i32,
         size: i32|
         -> i32 {
            let Some(data) = read(&mut caller, ptr, size) else {
                return status::INVALID_MEMORY_ACCESS;
            };
            let state = caller.data_mut();
            if kind != BUFFER_HTTP_RESPONSE_BODY {
                // Configuration and call responses are read-only; others unused.
                return status::BAD_ARGUMENT;
            }
            let phase = state.phase;
            let Some(stream) = state.stream() else {
                return status::NOT_FOUND;
            };
            let writable = match phase {
                CallPhase::ResponseBody => true,
                CallPhase::ResponseTrailers => stream.body_reachable,
                _ => false,
            };
            if !writable {
                // Envoy: BufferBase::copyFrom on a buffer with no instance.
                return status::BAD_ARGUMENT;
            }
            let (start, length) = (start as u32 as usize, length as u32 as usize);
            let body = &mut stream.body;
            if start == 0 {
                // Envoy's Buffer::copyFrom: drain(length) then prepend.
                let drain = length.min(body.len());
                let mut replaced = data;
                replaced.extend_from_slice(&body[drain..]);
                *body = replaced;
                status::OK
            } else if start >= body.len() {
                body.extend_from_slice(&data);
                status::OK
            } else {
                status::BAD_ARGUMENT
            }
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_header_map_pairs",
        |mut caller: Caller<'_, HostState>, map: i32, ptr_ptr: i32, size_ptr: i32| -> i32 {
            let pairs = match header_map(caller.data_mut(), map) {
                Some(h) => h.clone(),
                // Envoy serializes a missing map as no pairs.
                None => Vec::new(),
            };
            let bytes = if pairs.is_empty() {
                Vec::new()
            } else {
                serialize_pairs(&pairs)
            };
            if bytes.is_empty() {
                if !write_u32(&mut caller, ptr_ptr, 0) || !write_u32(&mut caller, size_ptr, 0) {
                    return status::INVALID_MEMORY_ACCESS;
                }
                return status::OK;
            }
            give(&mut caller, &bytes, ptr_ptr, size_ptr)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_header_map_pairs",
        |mut caller: Caller<'_, HostState>, map: i32, ptr: i32, size: i32| -> i32 {
            let Some(bytes) = read(&mut caller, ptr, size) else {
                return status::INVALID_MEMORY_ACCESS;
            };
            let Some(pairs) = deserialize_pairs(&bytes) else {
                return status::BAD_ARGUMENT;
            };
            match header_map(caller.data_mut(), map) {
                Some(h) if map != MAP_HTTP_CALL_RESPONSE_HEADERS => {
                    *h = lower_keys(pairs);
                    status::OK
                }
                _ => status::BAD_ARGUMENT,
            }
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_header_map_value",
        |mut caller: Caller<'_, HostState>,
         map: i32,
         kptr: i32,
         klen: i32,
         ptr_ptr: i32,
         size_ptr: i32|
         -> i32 {
            let Some(key) = read(&mut caller, kptr, klen) else {
                return status::INVALID_MEMORY_ACCESS;
            };
            let key = key.to_ascii_lowercase();
            let value = match header_map(caller.data_mut(), map) {
                None => return status::BAD_ARGUMENT,
                Some(h) => match h.iter().find(|(k, _)| *k == key) {
                    Some((_, v)) => v.clone(),
                    None => return status::NOT_FOUND,
                },
            };
            if value.is_empty() {
                if !write_u32(&mut caller, ptr_ptr, 0) || !write_u32(&mut caller, size_ptr, 0) {
                    return status::INVALID_MEMORY_ACCESS;
                }
                return status::OK;
            }
            give(&mut caller, &value, ptr_ptr, size_ptr)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_replace_header_map_value",
        |mut caller: Caller<'_, HostState>,
         map: i32,
         kptr: i32,
         klen: i32,
         vptr: i32,
         vlen: i32|
         -> i32 {
            let (Some(key), Some(value)) =
                (read(&mut caller, kptr, klen), read(&mut caller, vptr, vlen))
            else {
                return status::INVALID_MEMORY_ACCESS;
            };
            let key = key.to_ascii_lowercase();
            match header_map(caller.data_mut(), map) {
                Some(h) if map != MAP_HTTP_CALL_RESPONSE_HEADERS => {
                    match h.iter().position(|(k, _)| *k == key) {
                        Some(i) => {
                            h[i].1 = value;
                            let mut seen = false;
                            h.retain(|(k, _)| {
                                if *k != key {
                                    return true;
                                }
                                let keep = !seen;
                                seen = true;
                                keep
                            });
                        }
                        None => h.push((key, value)),
                    }
                    status::OK
                }
                _ => status::BAD_ARGUMENT,
            }
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_add_header_map_value",
        |mut caller: Caller<'_, HostState>,
         map: i32,
         kptr: i32,
         klen: i32,
         vptr: i32,
         vlen: i32|
         -> i32 {
            let (Some(key), Some(value)) =
                (read(&mut caller, kptr, klen), read(&mut caller, vptr, vlen))
            else {
                return status::INVALID_MEMORY_ACCESS;
            };
            match header_map(caller.data_mut(), map) {
                Some(h) if map != MAP_HTTP_CALL_RESPONSE_HEADERS => {
                    h.push((key.to_ascii_lowercase(), value));
                    status::OK
                }
                _ => status::BAD_ARGUMENT,
            }
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_remove_header_map_value",
        |mut caller: Caller<'_, HostState>, map: i32, kptr: i32, klen: i32| -> i32 {
            let Some(key) = read(&mut caller, kptr, klen) else {
                return status::INVALID_MEMORY_ACCESS;
            };
            let key = key.to_ascii_lowercase();
            match header_map(caller.data_mut(), map) {
                Some(h) if map != MAP_HTTP_CALL_RESPONSE_HEADERS => {
                    h.retain(|(k, _)| *k != key);
                    status::OK
                }
                _ => status::BAD_ARGUMENT,
            }
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_header_map_size",
        |mut caller: Caller<'_, HostState>, map: i32, ptr: i32| -> i32 {
            let size = match header_map(caller.data_mut(), map) {
                Some(h) => h.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>() as u32,
                None => return status::BAD_ARGUMENT,
            };
            if write_u32(&mut caller, ptr, size) {
                status::OK
            } else {
                status::INVALID_MEMORY_ACCESS
            }
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_shared_data",
        |mut caller: Caller<'_, HostState>,
         kptr: i32,
         klen: i32,
         ptr_ptr: i32,
         size_ptr: i32,
         cas_ptr: i32|
         -> i32 {
            let Some(key) = read(&mut caller, kptr, klen) else {
                return status::INVALID_MEMORY_ACCESS;
            };
            let found = {
                let state = caller.data();
                lock(&state.proxy.shared).get(&state.vm_id, &key)
            };
            let Some((value, cas)) = found else {
                return status::NOT_FOUND;
            };
            if value.is_empty() {
                if !write_u32(&mut caller, ptr_ptr, 0) || !write_u32(&mut caller, size_ptr, 0) {
                    return status::INVALID_MEMORY_ACCESS;
                }
            } else {
                let r = give(&mut caller, &value, ptr_ptr, size_ptr);
                if r != status::OK {
                    return r;
                }
            }
            if write_u32(&mut caller, cas_ptr, cas) {
                status::OK
            } else {
                status::INVALID_MEMORY_ACCESS
            }
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_shared_data",
        |mut caller: Caller<'_, HostState>,
         kptr: i32,
         klen: i32,
         vptr: i32,
         vlen: i32,
         cas: i32|
         -> i32 {
            let (Some(key), Some(value)) =
                (read(&mut caller, kptr, klen), read(&mut caller, vptr, vlen))
            else {
                return status::INVALID_MEMORY_ACCESS;
            };
            let state = caller.data();
            let r = lock(&state.proxy.shared).set(&state.vm_id, &key, &value, cas as u32);
            r
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_continue_stream",
        |mut caller: Caller<'_, HostState>, stream: i32| -> i32 {
            match stream {
                STREAM_HTTP_REQUEST => status::OK,
                STREAM_HTTP_RESPONSE => {
                    if let Some(s) = caller.data_mut().stream() {
                        s.resumed = true;
                    }
                    status::OK
                }
                _ => status::BAD_ARGUMENT,
            }
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_close_stream",
        |mut caller: Caller<'_, HostState>, stream: i32| -> i32 {
            match stream {
                STREAM_HTTP_REQUEST | STREAM_HTTP_RESPONSE => {
                    if let Some(s) = caller.data_mut().stream() {
                        s.reset = true;
                    }
                    status::OK
                }
                _ => status::BAD_ARGUMENT,
            }
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_send_local_response",
        |mut caller: Caller<'_, HostState>,
         status_code: i32,
         dptr: i32,
         dlen: i32,
         bptr: i32,
         blen: i32,
         hptr: i32,
         hlen: i32,
         _grpc: i32|
         -> i32 {
            let (Some(details), Some(body), Some(h)) = (
                read(&mut caller, dptr, dlen),
                read(&mut caller, bptr, blen),
                read(&mut caller, hptr, hlen),
            ) else {
                return status::INVALID_MEMORY_ACCESS;
            };
            let headers = deserialize_pairs(&h).unwrap_or_default();
            let state = caller.data_mut();
            state.stop_iteration = true;
            match state.stream() {
                Some(s) => {
                    s.local_reply = Some(LocalReply {
                        status: status_code as u32,
                        body,
                        headers,
                        details,
                    });
                    status::OK
                }
                None => status::NOT_FOUND,
            }
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_http_call",
        |mut caller: Caller<'_, HostState>,
         uptr: i32,
         ulen: i32,
         hptr: i32,
         hlen: i32,
         bptr: i32,
         blen: i32,
         _tptr: i32,
         _tlen: i32,
         timeout: i32,
         token_ptr: i32|
         -> i32 {
            let (Some(cluster), Some(h), Some(body)) = (
                read(&mut caller, uptr, ulen),
                read(&mut caller, hptr, hlen),
                read(&mut caller, bptr, blen),
            ) else {
                return status::INVALID_MEMORY_ACCESS;
            };
            let cluster = String::from_utf8_lossy(&cluster).into_owned();
            let Some(headers) = deserialize_pairs(&h) else {
                return status::BAD_ARGUMENT;
            };
            let known = lock(&caller.data().proxy.clusters).contains(&cluster);
            let has = |n: &str| header(&headers, n).is_some();
            if !known || timeout < 0 || !(has(":path") && has(":method") && has(":authority")) {
                return status::BAD_ARGUMENT;
            }
            let state = caller.data_mut();
            let token = state.next_token;
            state.next_token += 1;
            state.calls.push(HttpCall {
                token,
                cluster,
                headers,
                body,
                timeout_ms: timeout as u32,
            });
            if write_u32(&mut caller, token_ptr, token) {
                status::OK
            } else {
                status::INVALID_MEMORY_ACCESS
            }
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_define_metric",
        |mut caller: Caller<'_, HostState>, kind: i32, nptr: i32, nlen: i32, id_ptr: i32| -> i32 {
            let Some(kind) = metric_kind(kind) else {
                return status::BAD_ARGUMENT;
            };
            let Some(name) = read(&mut caller, nptr, nlen) else {
                return status::INVALID_MEMORY_ACCESS;
            };
            let name = String::from_utf8_lossy(&name).into_owned();
            let state = caller.data_mut();
            lock(&state.proxy.metrics)
                .entry(name.clone())
                .or_insert((kind, 0));
            let id = match state.metric_ids.iter().position(|(n, _)| *n == name) {
                Some(i) => i,
                None => {
                    state.metric_ids.push((name, kind));
                    state.metric_ids.len() - 1
                }
            };
            if write_u32(&mut caller, id_ptr, id as u32 + 1) {
                status::OK
            } else {
                status::INVALID_MEMORY_ACCESS
            }
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_increment_metric",
        |caller: Caller<'_, HostState>, id: i32, offset: i64| -> i32 {
            let state = caller.data();
            let Some((name, kind)) = state.metric_ids.get((id as usize).wrapping_sub(1)) else {
                return status::NOT_FOUND;
            };
            if *kind == MetricKind::Counter && offset < 0 {
                return status::BAD_ARGUMENT;
            }
            if let Some(m) = lock(&state.proxy.metrics).get_mut(name) {
                m.1 += offset;
            }
            status::OK
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_record_metric",
        |caller: Caller<'_, HostState>, id: i32, value: i64| -> i32 {
            let state = caller.data();
            let Some((name, kind)) = state.metric_ids.get((id as usize).wrapping_sub(1)) else {
                return status::NOT_FOUND;
            };
            if let Some(m) = lock(&state.proxy.metrics).get_mut(name) {
                match kind {
                    MetricKind::Counter => m.1 += value,
                    _ => m.1 = value,
                }
            }
            status::OK
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_metric",
        |mut caller: Caller<'_, HostState>, id: i32, ptr: i32| -> i32 {
            let value = {
                let state = caller.data();
                let Some((name, _)) = state.metric_ids.get((id as usize).wrapping_sub(1)) else {
                    return status::NOT_FOUND;
                };
                lock(&state.proxy.metrics).get(name).map_or(0, |m| m.1)
            };
            let Some(mem) = memory(&mut caller) else {
                return status::INVALID_MEMORY_ACCESS;
            };
            let p = ptr as u32 as usize;
            match mem.data_mut(&mut caller).get_mut(p..p + 8) {
                Some(slot) => {
                    slot.copy_from_slice(&(value as u64).to_le_bytes());
                    status::OK
                }
                None => status::INVALID_MEMORY_ACCESS,
            }
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_property",
        |_: Caller<'_, HostState>, _: i32, _: i32, _: i32, _: i32| -> i32 { status::NOT_FOUND },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_property",
        |_: Caller<'_, HostState>, _: i32, _: i32, _: i32, _: i32| -> i32 { status::OK },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_effective_context",
        |mut caller: Caller<'_, HostState>, id: i32| -> i32 {
            caller.data_mut().active = id as u32;
            status::OK
        },
    )?;
    linker.func_wrap("env", "proxy_done", |_: Caller<'_, HostState>| -> i32 {
        status::OK
    })?;
    linker.func_wrap(
        "env",
        "proxy_get_status",
        |mut caller: Caller<'_, HostState>, code_ptr: i32, ptr_ptr: i32, size_ptr: i32| -> i32 {
            let ok = write_u32(&mut caller, code_ptr, 0)
                && write_u32(&mut caller, ptr_ptr, 0)
                && write_u32(&mut caller, size_ptr, 0);
            if ok {
                status::OK
            } else {
                status::INVALID_MEMORY_ACCESS
            }
        },
    )?;
    Ok(())
}

/// Status for ABI calls this host does not implement (none used by the filter).
pub const UNIMPLEMENTED: i32 = status::UNIMPLEMENTED;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_round_trip_in_the_abi_layout() {
        let h = headers(&[(":status", "200"), ("x", "")]);
        let bytes = serialize_pairs(&h);
        assert_eq!(&bytes[..4], &2u32.to_le_bytes());
        assert_eq!(deserialize_pairs(&bytes), Some(h));
        assert_eq!(deserialize_pairs(&bytes[..bytes.len() - 3]), None);
        assert_eq!(deserialize_pairs(b""), Some(vec![]));
    }

    #[test]
    fn shared_data_cas_follows_proxy_wasm_cpp_host() {
        let mut s = SharedData::default();
        // A missing key is created whatever CAS is given.
        assert_eq!(s.set("", b"k", b"1", 77), status::OK);
        let (_, cas) = s.get("", b"k").unwrap();
        assert_ne!(cas, 0);
        assert_eq!(s.set("", b"k", b"2", cas + 1), status::CAS_MISMATCH);
        assert_eq!(s.set("", b"k", b"2", cas), status::OK);
        assert_eq!(s.set("", b"k", b"3", cas), status::CAS_MISMATCH);
        // CAS 0 is unconditional; vm_ids are separate namespaces.
        assert_eq!(s.set("", b"k", b"4", 0), status::OK);
        assert_eq!(s.get("", b"k").map(|v| v.0), Some(b"4".to_vec()));
        assert_eq!(s.get("other", b"k"), None);
        s.cas = u32::MAX;
        assert_eq!(s.next_cas(), u32::MAX);
        assert_eq!(s.next_cas(), 1, "CAS values skip 0");
    }
}
