//! Guest memory (reading arguments, writing results, handing the guest data it
//! allocated) and the buffers of `proxy_get/set_buffer_bytes`.
//!
//! Every access is bounds-checked and an out-of-bounds one is
//! `InvalidMemoryAccess`, never a host panic. The buffer functions enforce in
//! which callback each buffer is reachable; they must not change what a callback
//! sees otherwise (the stream's body is filled by `vm::exchange`).

use wasmtime::{Caller, Extern, Linker, Memory};

use crate::state::{CallPhase, HostState};
use crate::{status, Result};

const BUFFER_HTTP_RESPONSE_BODY: i32 = 1;
const BUFFER_HTTP_CALL_RESPONSE_BODY: i32 = 4;
const BUFFER_VM_CONFIGURATION: i32 = 6;
const BUFFER_PLUGIN_CONFIGURATION: i32 = 7;

pub(super) fn add(linker: &mut Linker<HostState>) -> Result<()> {
    register!(linker, proxy_get_buffer_bytes, proxy_set_buffer_bytes);
    Ok(())
}

pub(crate) fn memory(caller: &mut Caller<'_, HostState>) -> Option<Memory> {
    match caller.get_export("memory") {
        Some(Extern::Memory(m)) => Some(m),
        _ => None,
    }
}

/// A copy of `len` bytes of guest memory at `ptr`; `None` when out of bounds.
pub(crate) fn read(caller: &mut Caller<'_, HostState>, ptr: i32, len: i32) -> Option<Vec<u8>> {
    let mem = memory(caller)?;
    let (ptr, len) = (ptr as u32 as usize, len as u32 as usize);
    mem.data(&caller)
        .get(ptr..ptr.checked_add(len)?)
        .map(<[u8]>::to_vec)
}

/// Copies `bytes` to guest memory at `ptr`; false when out of bounds.
fn write(caller: &mut Caller<'_, HostState>, ptr: i32, bytes: &[u8]) -> bool {
    let Some(mem) = memory(caller) else {
        return false;
    };
    let ptr = ptr as u32 as usize;
    match mem.data_mut(caller).get_mut(ptr..ptr + bytes.len()) {
        Some(slot) => {
            slot.copy_from_slice(bytes);
            true
        }
        None => false,
    }
}

pub(crate) fn write_u32(caller: &mut Caller<'_, HostState>, ptr: i32, value: u32) -> bool {
    write(caller, ptr, &value.to_le_bytes())
}

/// The status of a call whose only failure is a write out of bounds.
pub(crate) fn written(ok: bool) -> i32 {
    if ok {
        status::OK
    } else {
        status::INVALID_MEMORY_ACCESS
    }
}

/// Writes `value` at `ptr`: `Ok`, or `InvalidMemoryAccess`.
pub(crate) fn put_u32(caller: &mut Caller<'_, HostState>, ptr: i32, value: u32) -> i32 {
    written(write_u32(caller, ptr, value))
}

/// Writes `value` at `ptr`: `Ok`, or `InvalidMemoryAccess`.
pub(crate) fn put_u64(caller: &mut Caller<'_, HostState>, ptr: i32, value: u64) -> i32 {
    written(write(caller, ptr, &value.to_le_bytes()))
}

/// Hands `data` to the guest: allocates it there (through
/// `proxy_on_memory_allocate`, as hosts do) and writes its address and size to
/// `ptr_ptr`/`size_ptr`. Empty data is a null pointer and size 0, as
/// proxy-wasm-cpp-host writes it, without an allocation.
pub(crate) fn give(
    caller: &mut Caller<'_, HostState>,
    data: &[u8],
    ptr_ptr: i32,
    size_ptr: i32,
) -> i32 {
    if data.is_empty() {
        return written(write_u32(caller, ptr_ptr, 0) && write_u32(caller, size_ptr, 0));
    }
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
    if !write(caller, addr, data) {
        return status::INVALID_MEMORY_ACCESS;
    }
    written(
        write_u32(caller, ptr_ptr, addr as u32) && write_u32(caller, size_ptr, data.len() as u32),
    )
}

/// The whole buffer `kind` as the current callback sees it, or the status to
/// return when it is not there.
fn buffer(state: &mut HostState, kind: i32) -> Result<Vec<u8>, i32> {
    Ok(match kind {
        BUFFER_HTTP_RESPONSE_BODY => match state.phase {
            CallPhase::ResponseBody => match state.stream() {
                Some(s) => s.body.clone(),
                None => return Err(status::NOT_FOUND),
            },
            CallPhase::ResponseTrailers => match state.stream() {
                Some(s) if s.body_reachable => s.body.clone(),
                // Envoy: a buffer object without an instance (size 0).
                Some(_) => Vec::new(),
                None => return Err(status::NOT_FOUND),
            },
            _ => Vec::new(),
        },
        BUFFER_HTTP_CALL_RESPONSE_BODY => match &state.call_response {
            Some(r) => r.body.clone(),
            None => return Err(status::NOT_FOUND),
        },
        BUFFER_PLUGIN_CONFIGURATION if state.phase == CallPhase::Configure => {
            state.plugin_configuration.clone()
        }
        BUFFER_PLUGIN_CONFIGURATION => return Err(status::NOT_FOUND),
        BUFFER_VM_CONFIGURATION => Vec::new(),
        _ => return Err(status::NOT_FOUND),
    })
}

/// `max` bytes of a buffer from `start`, clamped to the buffer.
fn proxy_get_buffer_bytes(
    mut caller: Caller<'_, HostState>,
    kind: i32,
    start: i32,
    max: i32,
    ptr_ptr: i32,
    size_ptr: i32,
) -> i32 {
    let buffer = match buffer(caller.data_mut(), kind) {
        Ok(b) => b,
        Err(status) => return status,
    };
    let (start, max) = (start as u32 as u64, max as u32 as u64);
    if start.checked_add(max).is_none() {
        return status::BAD_ARGUMENT;
    }
    let size = buffer.len() as u64;
    // From past the end: nothing (`give` writes a null pointer and size 0).
    let from = start.min(size);
    let len = max.min(size - from);
    let slice = &buffer[from as usize..(from + len) as usize];
    give(&mut caller, slice, ptr_ptr, size_ptr)
}

/// Envoy's `Buffer::copyFrom` on the response body: drains `length` bytes then
/// prepends at `start == 0`, appends at `start >= size`.
fn proxy_set_buffer_bytes(
    mut caller: Caller<'_, HostState>,
    kind: i32,
    start: i32,
    length: i32,
    ptr: i32,
    size: i32,
) -> i32 {
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
}
