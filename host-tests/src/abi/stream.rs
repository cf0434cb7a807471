//! Streams and contexts: `proxy_continue_stream`, `proxy_close_stream`,
//! `proxy_send_local_response`, `proxy_set_effective_context`, `proxy_done`,
//! `proxy_get_status` and the (empty) properties.
//!
//! These only record what the filter asked for on the active stream (a reset, a
//! local reply, a resume); `vm::exchange` acts on it once the callback returns,
//! as Envoy does. Properties are not modelled: `get` finds nothing, `set` is
//! accepted and forgotten.

use wasmtime::{Caller, Linker};

use super::headers::deserialize_pairs;
use super::memory::{read, write_u32, written};
use crate::state::HostState;
use crate::{status, Headers, Result};

const STREAM_HTTP_REQUEST: i32 = 0;
const STREAM_HTTP_RESPONSE: i32 = 1;

pub(super) fn add(linker: &mut Linker<HostState>) -> Result<()> {
    register!(
        linker,
        proxy_continue_stream,
        proxy_close_stream,
        proxy_send_local_response,
        proxy_get_property,
        proxy_set_property,
        proxy_set_effective_context,
        proxy_done,
        proxy_get_status,
    );
    Ok(())
}

/// A reply sent with `proxy_send_local_response`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalReply {
    pub status: u32,
    pub body: Vec<u8>,
    pub headers: Headers,
    pub details: Vec<u8>,
}

fn proxy_continue_stream(mut caller: Caller<'_, HostState>, stream: i32) -> i32 {
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
}

fn proxy_close_stream(mut caller: Caller<'_, HostState>, stream: i32) -> i32 {
    match stream {
        STREAM_HTTP_REQUEST | STREAM_HTTP_RESPONSE => {
            if let Some(s) = caller.data_mut().stream() {
                s.reset = true;
            }
            status::OK
        }
        _ => status::BAD_ARGUMENT,
    }
}

/// Records the reply on the active stream and makes the callback stop iteration.
#[allow(clippy::too_many_arguments)] // the ABI's signature
fn proxy_send_local_response(
    mut caller: Caller<'_, HostState>,
    status_code: i32,
    dptr: i32,
    dlen: i32,
    bptr: i32,
    blen: i32,
    hptr: i32,
    hlen: i32,
    _grpc: i32,
) -> i32 {
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
}

fn proxy_get_property(_: Caller<'_, HostState>, _: i32, _: i32, _: i32, _: i32) -> i32 {
    status::NOT_FOUND
}

fn proxy_set_property(_: Caller<'_, HostState>, _: i32, _: i32, _: i32, _: i32) -> i32 {
    status::OK
}

fn proxy_set_effective_context(mut caller: Caller<'_, HostState>, id: i32) -> i32 {
    caller.data_mut().active = id as u32;
    status::OK
}

fn proxy_done(_: Caller<'_, HostState>) -> i32 {
    status::OK
}

/// The status of the last call: always 0 and no message.
fn proxy_get_status(
    mut caller: Caller<'_, HostState>,
    code_ptr: i32,
    ptr_ptr: i32,
    size_ptr: i32,
) -> i32 {
    written(
        write_u32(&mut caller, code_ptr, 0)
            && write_u32(&mut caller, ptr_ptr, 0)
            && write_u32(&mut caller, size_ptr, 0),
    )
}
