//! The proxy-wasm host functions (`env.proxy_*`), one file per ABI area; each
//! file's `add` registers its functions.
//!
//! Each host function is a plain `fn` named as the import it implements, taking
//! the guest's arguments as `i32`/`i64` and returning a status. This is the only
//! place that implements ABI semantics (see the crate docs); it reads the
//! [`HostState`] of the calling VM and the shared state of its proxy, and must
//! not call guest exports other than the allocator (`memory::give`).

use wasmtime::Linker;

use crate::{HostState, Result};

/// Registers host functions under `env`, each by its own name.
macro_rules! register {
    ($linker:expr, $($f:ident),+ $(,)?) => {
        $( $linker.func_wrap("env", stringify!($f), $f)?; )+
    };
}

pub(crate) mod headers;
pub(crate) mod memory;
pub(crate) mod metrics_logs;
pub(crate) mod shared_data;
pub(crate) mod stream;
pub(crate) mod timers_http;

/// Every proxy-wasm host function this host implements.
pub(crate) fn add_proxy_wasm(linker: &mut Linker<HostState>) -> Result<()> {
    metrics_logs::add(linker)?;
    timers_http::add(linker)?;
    memory::add(linker)?;
    headers::add(linker)?;
    shared_data::add(linker)?;
    stream::add(linker)?;
    Ok(())
}
