//! `wasi-run MODULE.wasm [ARGS…]`: runs a `wasm32-wasip1` command module on wasmtime
//! with the arguments, the environment and stdio inherited and `/` preopened
//! (absolute paths work; relative ones resolve against `/`), and exits with the
//! module's exit code.
//!
//! Made to be cargo's runner for the wasm target, so that the pure modules' unit
//! tests also run compiled to wasm:
//!
//! ```sh
//! cargo build -p kubelet-scope-host-tests --bin wasi-run
//! CARGO_TARGET_WASM32_WASIP1_RUNNER=$PWD/target/debug/wasi-run \
//!     cargo test -p kubelet-scope-filter --target wasm32-wasip1 --lib --tests
//! ```
//!
//! (The release profile's fat LTO makes a release build of wasmtime take very long
//! on small machines; the debug runner only compiles each test module a little
//! slower.) Test dependencies must build for WASI: `proptest` needs
//! `default-features = false, features = ["std", "bit-set"]` (its default `fork`
//! feature pulls in `wait-timeout`, which does not). Wasm has no unwinding: a
//! failing test aborts the whole test binary (non-zero exit, the panic message is
//! printed only with `--nocapture`), and `#[should_panic]` tests cannot pass.

use std::process::ExitCode;

use wasmtime::{Config, Engine, Linker, Module, Store};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::{FsPerms, I32Exit, WasiCtxBuilder};

fn main() -> ExitCode {
    match run() {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("wasi-run: {e:?}");
            ExitCode::from(101)
        }
    }
}

fn run() -> wasmtime::Result<u8> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(path) = args.first() else {
        wasmtime::bail!("usage: wasi-run MODULE.wasm [ARGS...]");
    };
    let mut config = Config::new();
    config.wasm_simd(true);
    config.async_stack_size(16 << 20);
    config.max_wasm_stack(8 << 20);
    let engine = Engine::new(&config)?;
    let module = Module::from_file(&engine, path)?;

    let mut builder = WasiCtxBuilder::new();
    builder.inherit_stdio().inherit_env().args(&args);
    // Only `/`: wasi-libc matches `/` and `.` preopens alike (both are the empty
    // prefix), so with both absolute paths would resolve against `.`. Tests find
    // their files through `env!("CARGO_MANIFEST_DIR")`, which is absolute.
    builder.preopened_dir("/", "/", FsPerms::ReadWrite)?;
    let wasi: WasiP1Ctx = builder.build_p1();

    let mut linker: Linker<WasiP1Ctx> = Linker::new(&engine);
    wasmtime_wasi::p1::add_to_linker_sync(&mut linker, |ctx| ctx)?;
    // A test binary of a proxy-wasm crate also imports the proxy-wasm ABI; tests
    // do not call it, and a call traps.
    linker.define_unknown_imports_as_traps(&module)?;
    let mut store = Store::new(&engine, wasi);
    let instance = linker.instantiate(&mut store, &module)?;
    let start = instance.get_typed_func::<(), ()>(&mut store, "_start")?;
    match start.call(&mut store, ()) {
        Ok(()) => Ok(0),
        Err(e) => match e.downcast_ref::<I32Exit>() {
            Some(I32Exit(code)) => Ok(u8::try_from(*code).unwrap_or(1)),
            None => Err(e),
        },
    }
}
