//! Header maps (`proxy_*_header_map_*`) and the ABI's serialization of header
//! pairs.
//!
//! Owns which map each callback may read or write (Envoy exposes request headers
//! only in `on_request_headers`, and so on) and Envoy's rules for each operation:
//! keys are lower-cased, `get` returns the first value, `replace` keeps one.
//! It must not decide what the client sees: `vm::exchange` takes the maps back
//! after each callback.

use wasmtime::{Caller, Linker};

use super::memory::{give, put_u32, read};
use crate::state::{CallPhase, HostState};
use crate::{lower_keys, status, Headers, Result};

const MAP_REQUEST_HEADERS: i32 = 0;
const MAP_RESPONSE_HEADERS: i32 = 2;
const MAP_RESPONSE_TRAILERS: i32 = 3;
const MAP_HTTP_CALL_RESPONSE_HEADERS: i32 = 6;
const MAP_HTTP_CALL_RESPONSE_TRAILERS: i32 = 7;

pub(super) fn add(linker: &mut Linker<HostState>) -> Result<()> {
    register!(
        linker,
        proxy_get_header_map_pairs,
        proxy_set_header_map_pairs,
        proxy_get_header_map_value,
        proxy_replace_header_map_value,
        proxy_add_header_map_value,
        proxy_remove_header_map_value,
        proxy_get_header_map_size,
    );
    Ok(())
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

/// [`header_map`] when the filter may change it: an HTTP call's response
/// headers are read-only.
fn writable_header_map(state: &mut HostState, map: i32) -> Option<&mut Headers> {
    if map == MAP_HTTP_CALL_RESPONSE_HEADERS {
        return None;
    }
    header_map(state, map)
}

/// `Ok` after `f` changed the writable map `map`, else `BadArgument`.
fn edit(state: &mut HostState, map: i32, f: impl FnOnce(&mut Headers)) -> i32 {
    match writable_header_map(state, map) {
        Some(h) => {
            f(h);
            status::OK
        }
        None => status::BAD_ARGUMENT,
    }
}

/// Reads a key (lower-cased, as Envoy's maps store keys) and a value from the
/// guest, then gives them to `op` on the writable map `map`.
fn edit_entry(
    caller: &mut Caller<'_, HostState>,
    map: i32,
    (kptr, klen): (i32, i32),
    (vptr, vlen): (i32, i32),
    op: impl FnOnce(&mut Headers, Vec<u8>, Vec<u8>),
) -> i32 {
    let (Some(key), Some(value)) = (read(caller, kptr, klen), read(caller, vptr, vlen)) else {
        return status::INVALID_MEMORY_ACCESS;
    };
    let key = key.to_ascii_lowercase();
    edit(caller.data_mut(), map, |h| op(h, key, value))
}

/// Sets the first value of `key` and removes the others (adds it if absent).
fn replace_value(h: &mut Headers, key: Vec<u8>, value: Vec<u8>) {
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
}

fn proxy_get_header_map_pairs(
    mut caller: Caller<'_, HostState>,
    map: i32,
    ptr_ptr: i32,
    size_ptr: i32,
) -> i32 {
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
    give(&mut caller, &bytes, ptr_ptr, size_ptr)
}

fn proxy_set_header_map_pairs(
    mut caller: Caller<'_, HostState>,
    map: i32,
    ptr: i32,
    size: i32,
) -> i32 {
    let Some(bytes) = read(&mut caller, ptr, size) else {
        return status::INVALID_MEMORY_ACCESS;
    };
    let Some(pairs) = deserialize_pairs(&bytes) else {
        return status::BAD_ARGUMENT;
    };
    edit(caller.data_mut(), map, |h| *h = lower_keys(pairs))
}

fn proxy_get_header_map_value(
    mut caller: Caller<'_, HostState>,
    map: i32,
    kptr: i32,
    klen: i32,
    ptr_ptr: i32,
    size_ptr: i32,
) -> i32 {
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
    give(&mut caller, &value, ptr_ptr, size_ptr)
}

fn proxy_replace_header_map_value(
    mut caller: Caller<'_, HostState>,
    map: i32,
    kptr: i32,
    klen: i32,
    vptr: i32,
    vlen: i32,
) -> i32 {
    edit_entry(&mut caller, map, (kptr, klen), (vptr, vlen), replace_value)
}

fn proxy_add_header_map_value(
    mut caller: Caller<'_, HostState>,
    map: i32,
    kptr: i32,
    klen: i32,
    vptr: i32,
    vlen: i32,
) -> i32 {
    edit_entry(
        &mut caller,
        map,
        (kptr, klen),
        (vptr, vlen),
        |h, key, value| h.push((key, value)),
    )
}

fn proxy_remove_header_map_value(
    mut caller: Caller<'_, HostState>,
    map: i32,
    kptr: i32,
    klen: i32,
) -> i32 {
    let Some(key) = read(&mut caller, kptr, klen) else {
        return status::INVALID_MEMORY_ACCESS;
    };
    let key = key.to_ascii_lowercase();
    edit(caller.data_mut(), map, |h| h.retain(|(k, _)| *k != key))
}

/// The bytes of the map's names and values together.
fn proxy_get_header_map_size(mut caller: Caller<'_, HostState>, map: i32, ptr: i32) -> i32 {
    let size = match header_map(caller.data_mut(), map) {
        Some(h) => h.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>() as u32,
        None => return status::BAD_ARGUMENT,
    };
    put_u32(&mut caller, ptr, size)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::headers;

    #[test]
    fn pairs_round_trip_in_the_abi_layout() {
        let h = headers(&[(":status", "200"), ("x", "")]);
        let bytes = serialize_pairs(&h);
        assert_eq!(&bytes[..4], &2u32.to_le_bytes());
        assert_eq!(deserialize_pairs(&bytes), Some(h));
        assert_eq!(deserialize_pairs(&bytes[..bytes.len() - 3]), None);
        assert_eq!(deserialize_pairs(b""), Some(vec![]));
    }
}
