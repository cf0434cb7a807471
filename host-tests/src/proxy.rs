//! [`Proxy`]: one "Envoy process", a compiled module and what its VMs share
//! (shared data, metrics, the clock, the known clusters, the log level).
//!
//! It owns the process-wide state and the linking of a new VM; it does not call
//! into the guest beyond starting a VM (`vm` does) nor implement any host
//! function (`abi` does).

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use wasmtime::{Config, Engine, Linker, Module, Store};

use crate::abi::shared_data::SharedData;
use crate::abi::{self, metrics_logs::MetricKind};
use crate::{default_wasm_path, level, HostState, Result, Vm};

/// What every VM of a [`Proxy`] reads and writes through the ABI.
pub(crate) struct ProxyInner {
    pub(crate) shared: Mutex<SharedData>,
    pub(crate) metrics: Mutex<BTreeMap<String, (MetricKind, i64)>>,
    pub(crate) clock_ns: AtomicU64,
    pub(crate) clusters: Mutex<HashSet<String>>,
    pub(crate) log_level: AtomicU64,
}

impl ProxyInner {
    /// Empty shared data, metrics and clusters, with this clock and log level.
    fn new(clock_ns: u64, log_level: u64) -> ProxyInner {
        ProxyInner {
            shared: Mutex::new(SharedData::default()),
            metrics: Mutex::new(BTreeMap::new()),
            clock_ns: AtomicU64::new(clock_ns),
            clusters: Mutex::new(HashSet::new()),
            log_level: AtomicU64::new(log_level),
        }
    }
}

/// Locks `m`, ignoring poisoning: a test that panicked while holding a lock must
/// not hide the state from the next assertion.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
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
            inner: Arc::new(ProxyInner::new(
                // 2026-01-01T00:00:00Z
                1_767_225_600_000_000_000,
                u64::from(level::INFO),
            )),
        })
    }

    /// Another proxy running the same compiled module, with its own shared data.
    pub fn fresh(&self) -> Proxy {
        Proxy {
            engine: self.engine.clone(),
            module: self.module.clone(),
            inner: Arc::new(ProxyInner::new(
                self.inner.clock_ns.load(Ordering::SeqCst),
                self.inner.log_level.load(Ordering::SeqCst),
            )),
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
        lock(&self.inner.shared).keys()
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
        let linker = self.linker()?;
        let state = HostState::new(Arc::clone(&self.inner), plugin_configuration);
        let mut store = Store::new(&self.engine, state);
        let instance = linker.instantiate(&mut store, &self.module)?;
        Vm::start(store, instance, plugin_configuration.len())
    }

    /// WASI preview 1 and the proxy-wasm host functions.
    fn linker(&self) -> Result<Linker<HostState>> {
        let mut linker: Linker<HostState> = Linker::new(&self.engine);
        wasmtime_wasi::p1::add_to_linker_sync(&mut linker, |s: &mut HostState| &mut s.wasi)?;
        abi::add_proxy_wasm(&mut linker)?;
        // Anything else the module imports traps when called: the test then fails
        // loudly instead of the host inventing a behaviour.
        linker.define_unknown_imports_as_traps(&self.module)?;
        Ok(linker)
    }
}
