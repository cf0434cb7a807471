//! Time, ticks and HTTP calls: `proxy_get_current_time_nanoseconds`,
//! `proxy_set_tick_period_milliseconds` and `proxy_http_call`.
//!
//! The host never runs a timer or sends a request: it records the tick period and
//! the outstanding calls, and the test drives the clock ([`crate::Proxy::advance_ms`]),
//! the ticks ([`crate::Vm::tick`]) and the answers ([`crate::Vm::respond_call`]).
//! A call needs `:method`, `:path` and `:authority` and a known cluster, else
//! `BadArgument`.

use std::sync::atomic::Ordering;

use wasmtime::{Caller, Linker};

use super::headers::deserialize_pairs;
use super::memory::{put_u32, put_u64, read};
use crate::proxy::lock;
use crate::state::HostState;
use crate::{header, header_text, status, Headers, Result};

pub(super) fn add(linker: &mut Linker<HostState>) -> Result<()> {
    register!(
        linker,
        proxy_get_current_time_nanoseconds,
        proxy_set_tick_period_milliseconds,
        proxy_http_call,
    );
    Ok(())
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
        header_text(&self.headers, name)
    }
}

/// The answer to a call, readable during `proxy_on_http_call_response`.
pub(crate) struct CallResponse {
    pub(crate) headers: Headers,
    pub(crate) body: Vec<u8>,
    pub(crate) trailers: Headers,
}

fn proxy_get_current_time_nanoseconds(mut caller: Caller<'_, HostState>, ptr: i32) -> i32 {
    let now = caller.data().proxy.clock_ns.load(Ordering::SeqCst);
    put_u64(&mut caller, ptr, now)
}

fn proxy_set_tick_period_milliseconds(mut caller: Caller<'_, HostState>, period: i32) -> i32 {
    caller.data_mut().tick_period_ms = period as u32;
    status::OK
}

/// Records the call for the test to answer; writes its token.
#[allow(clippy::too_many_arguments)] // the ABI's signature
fn proxy_http_call(
    mut caller: Caller<'_, HostState>,
    uptr: i32,
    ulen: i32,
    hptr: i32,
    hlen: i32,
    bptr: i32,
    blen: i32,
    _tptr: i32,
    _tlen: i32,
    timeout: i32,
    token_ptr: i32,
) -> i32 {
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
    put_u32(&mut caller, token_ptr, token)
}
