//! [`Vm`]: one instance of the filter (one Envoy worker's), and the calls into
//! it: starting it, ticks, answers to its HTTP calls. HTTP streams are driven by
//! the child module `exchange`.
//!
//! Owns the store and the instance; a trap marks the VM failed and every later
//! call refuses to run. It must not implement host functions (`abi` does), only
//! set the phase and the active context they read.

use wasmtime::{Instance, Memory, Store, WasmParams, WasmResults};

use crate::abi::timers_http::CallResponse;
use crate::state::{CallPhase, HostState};
use crate::{Error, Headers, HttpCall, Result};

mod exchange;

pub use exchange::{Exchange, Upstream};

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
    /// Runs `_initialize`, creates the root context and calls `proxy_on_vm_start`
    /// and `proxy_on_configure` (with a configuration of `configuration_size`
    /// bytes, which the state holds).
    pub(crate) fn start(
        mut store: Store<HostState>,
        instance: Instance,
        configuration_size: usize,
    ) -> Result<Vm> {
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
        let root = vm.root_id as i32;
        vm.call::<_, ()>("proxy_on_context_create", (root, 0))?;
        vm.store.data_mut().phase = CallPhase::VmStart;
        let started: i32 = vm.call("proxy_on_vm_start", (root, 0))?;
        vm.store.data_mut().phase = CallPhase::Configure;
        let size = configuration_size as i32;
        let configured = vm.call::<_, i32>("proxy_on_configure", (root, size));
        vm.store.data_mut().phase = CallPhase::None;
        vm.configured = started != 0 && configured? != 0;
        Ok(vm)
    }

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

    /// Calls the guest's export `name`, unless the VM failed earlier; a trap
    /// marks it failed.
    fn call<P: WasmParams, R: WasmResults>(&mut self, name: &str, args: P) -> Result<R> {
        self.check_alive()?;
        let f = self
            .instance
            .get_typed_func::<P, R>(&mut self.store, name)?;
        f.call(&mut self.store, args).map_err(|e| self.trap(e))
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
        let r = self.call("proxy_on_tick", root);
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
        let r = self.call(
            "proxy_on_http_call_response",
            (root, token as i32, nh as i32, nb as i32, nt as i32),
        );
        let state = self.store.data_mut();
        state.call_response = None;
        state.phase = CallPhase::None;
        state.active = 0;
        r
    }
}
