//! The filter's rewriters compiled to `wasm32-wasip1` (the benchmark guest), run
//! in wasmtime with the same engine settings a proxy-wasm host would use.

use std::path::Path;

use wasmtime::{Engine, Instance, Linker, Memory, Module, Store, TypedFunc};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::WasiCtxBuilder;

use crate::Kind;

type Error = Box<dyn std::error::Error + Send + Sync>;

pub struct WasmGuest {
    store: Store<WasiP1Ctx>,
    memory: Memory,
    buffer: TypedFunc<(u32, u32), u32>,
    configure: TypedFunc<(), u32>,
    rewrite: TypedFunc<(u32, u32), u64>,
    copy: TypedFunc<(), u64>,
    output: TypedFunc<(), u32>,
}

impl WasmGuest {
    /// Loads the guest module (`kubelet_scope_bench_guest.wasm`).
    pub fn load(path: &Path) -> Result<WasmGuest, Error> {
        let mut config = wasmtime::Config::new();
        config.wasm_simd(true);
        config.cranelift_opt_level(wasmtime::OptLevel::Speed);
        let engine = Engine::new(&config)?;
        let module = Module::from_file(&engine, path).map_err(|e| {
            format!(
                "cannot load {}: {e} (run `make bench`, which builds it)",
                path.display()
            )
        })?;
        let mut linker: Linker<WasiP1Ctx> = Linker::new(&engine);
        wasmtime_wasi::p1::add_to_linker_sync(&mut linker, |ctx| ctx)?;
        // The guest links the whole filter crate, whose proxy-wasm glue imports the
        // proxy-wasm host ABI; the rewriters never call it.
        linker.define_unknown_imports_as_traps(&module)?;
        let mut store = Store::new(&engine, WasiCtxBuilder::new().inherit_stderr().build_p1());
        let instance: Instance = linker.instantiate(&mut store, &module)?;
        if let Ok(init) = instance.get_typed_func::<(), ()>(&mut store, "_initialize") {
            init.call(&mut store, ())?;
        }
        let memory = instance
            .get_memory(&mut store, "memory")
            .ok_or("guest exports no memory")?;
        Ok(WasmGuest {
            buffer: instance.get_typed_func(&mut store, "buffer")?,
            configure: instance.get_typed_func(&mut store, "configure")?,
            rewrite: instance.get_typed_func(&mut store, "rewrite")?,
            copy: instance.get_typed_func(&mut store, "copy")?,
            output: instance.get_typed_func(&mut store, "output")?,
            store,
            memory,
        })
    }

    fn write(&mut self, index: u32, bytes: &[u8]) -> Result<(), Error> {
        let len = u32::try_from(bytes.len())?;
        let at = self.buffer.call(&mut self.store, (index, len))?;
        self.memory.write(&mut self.store, at as usize, bytes)?;
        Ok(())
    }

    /// Sets the configuration, snapshot and tenant, and the body to rewrite.
    pub fn prepare(
        &mut self,
        config: &str,
        snapshot: &[u8],
        tenant: Option<&str>,
        body: &[u8],
    ) -> Result<(), Error> {
        self.write(0, config.as_bytes())?;
        self.write(1, snapshot)?;
        self.write(2, tenant.unwrap_or("").as_bytes())?;
        self.write(3, body)?;
        match self.configure.call(&mut self.store, ())? {
            0 => Ok(()),
            code => Err(format!("guest rejected the configuration ({code})").into()),
        }
    }

    /// Rewrites the body in `chunk`-byte chunks; returns the output length.
    pub fn rewrite(&mut self, kind: Kind, chunk: u32) -> Result<u64, Error> {
        match self.rewrite.call(&mut self.store, (kind as u32, chunk))? {
            u64::MAX => Err("the guest refused the body".into()),
            len => Ok(len),
        }
    }

    /// Copies the body into the output buffer inside the guest (the baseline).
    pub fn copy(&mut self) -> Result<u64, Error> {
        Ok(self.copy.call(&mut self.store, ())?)
    }

    /// The last output, `len` bytes long.
    pub fn output(&mut self, len: u64) -> Result<Vec<u8>, Error> {
        let at = self.output.call(&mut self.store, ())?;
        let mut out = vec![0; usize::try_from(len)?];
        self.memory.read(&self.store, at as usize, &mut out)?;
        Ok(out)
    }
}
