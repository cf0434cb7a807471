//! Shared data (`proxy_get/set_shared_data`): one key-value store per `vm_id`,
//! shared by every VM of a proxy, with proxy-wasm-cpp-host's CAS rules (CAS
//! values are global and never 0; `set` on a missing key ignores the CAS; CAS 0
//! is unconditional).
//!
//! Owns the store and its rules; the proxy holds it behind a lock. It offers no
//! queues (the filter uses none) and must not expire or evict values.

use std::collections::HashMap;

use wasmtime::{Caller, Linker};

use super::memory::{give, put_u32, read};
use crate::proxy::lock;
use crate::state::HostState;
use crate::{status, Result};

pub(super) fn add(linker: &mut Linker<HostState>) -> Result<()> {
    register!(linker, proxy_get_shared_data, proxy_set_shared_data);
    Ok(())
}

/// key → (value, cas) of one vm_id.
type SharedMap = HashMap<Vec<u8>, (Vec<u8>, u32)>;

#[derive(Default)]
pub(crate) struct SharedData {
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

    pub(crate) fn get(&self, vm_id: &str, key: &[u8]) -> Option<(Vec<u8>, u32)> {
        self.data.get(vm_id)?.get(key).cloned()
    }

    pub(crate) fn set(&mut self, vm_id: &str, key: &[u8], value: &[u8], cas: u32) -> i32 {
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

    /// Every key of every vm_id, as text, sorted.
    pub(crate) fn keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self
            .data
            .values()
            .flat_map(|m| m.keys())
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .collect();
        keys.sort();
        keys
    }
}

fn proxy_get_shared_data(
    mut caller: Caller<'_, HostState>,
    kptr: i32,
    klen: i32,
    ptr_ptr: i32,
    size_ptr: i32,
    cas_ptr: i32,
) -> i32 {
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
    let r = give(&mut caller, &value, ptr_ptr, size_ptr);
    if r != status::OK {
        return r;
    }
    put_u32(&mut caller, cas_ptr, cas)
}

fn proxy_set_shared_data(
    mut caller: Caller<'_, HostState>,
    kptr: i32,
    klen: i32,
    vptr: i32,
    vlen: i32,
    cas: i32,
) -> i32 {
    let (Some(key), Some(value)) = (read(&mut caller, kptr, klen), read(&mut caller, vptr, vlen))
    else {
        return status::INVALID_MEMORY_ACCESS;
    };
    let state = caller.data();
    let r = lock(&state.proxy.shared).set(&state.vm_id, &key, &value, cas as u32);
    r
}

#[cfg(test)]
mod tests {
    use super::*;

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
