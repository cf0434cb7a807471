//! Metrics (`proxy_define/increment/record/get_metric`) and logs (`proxy_log`,
//! `proxy_get_log_level`).
//!
//! A metric name is one stat for the whole proxy (counters add up across VMs),
//! as in Envoy; a metric id is the VM's own. Every log line is kept in the VM's
//! state for the tests (and printed when `HOST_TESTS_LOG` is set); the log level
//! is the proxy's. Nothing here is reset between streams.

use std::sync::atomic::Ordering;

use wasmtime::{Caller, Linker};

use super::memory::{put_u32, put_u64, read};
use crate::proxy::lock;
use crate::state::HostState;
use crate::{status, Result};

pub(super) fn add(linker: &mut Linker<HostState>) -> Result<()> {
    register!(
        linker,
        proxy_log,
        proxy_get_log_level,
        proxy_define_metric,
        proxy_increment_metric,
        proxy_record_metric,
        proxy_get_metric,
    );
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    Counter,
    Gauge,
    Histogram,
}

fn metric_kind(t: i32) -> Option<MetricKind> {
    match t {
        0 => Some(MetricKind::Counter),
        1 => Some(MetricKind::Gauge),
        2 => Some(MetricKind::Histogram),
        _ => None,
    }
}

/// The name and kind behind a metric id the VM was given (ids start at 1).
fn metric_by_id(state: &HostState, id: i32) -> Option<&(String, MetricKind)> {
    state.metric_ids.get((id as usize).wrapping_sub(1))
}

fn proxy_log(mut caller: Caller<'_, HostState>, level: i32, ptr: i32, len: i32) -> i32 {
    let Some(msg) = read(&mut caller, ptr, len) else {
        return status::INVALID_MEMORY_ACCESS;
    };
    let msg = String::from_utf8_lossy(&msg).into_owned();
    let threshold = caller.data().proxy.log_level.load(Ordering::SeqCst) as u32;
    if std::env::var_os("HOST_TESTS_LOG").is_some() && level as u32 >= threshold {
        eprintln!("[wasm level {level}] {msg}");
    }
    caller.data_mut().logs.push((level as u32, msg));
    status::OK
}

fn proxy_get_log_level(mut caller: Caller<'_, HostState>, ptr: i32) -> i32 {
    let level = caller.data().proxy.log_level.load(Ordering::SeqCst) as u32;
    put_u32(&mut caller, ptr, level)
}

/// Defines the metric for the whole proxy (once) and gives this VM an id for it.
fn proxy_define_metric(
    mut caller: Caller<'_, HostState>,
    kind: i32,
    nptr: i32,
    nlen: i32,
    id_ptr: i32,
) -> i32 {
    let Some(kind) = metric_kind(kind) else {
        return status::BAD_ARGUMENT;
    };
    let Some(name) = read(&mut caller, nptr, nlen) else {
        return status::INVALID_MEMORY_ACCESS;
    };
    let name = String::from_utf8_lossy(&name).into_owned();
    let state = caller.data_mut();
    lock(&state.proxy.metrics)
        .entry(name.clone())
        .or_insert((kind, 0));
    let id = match state.metric_ids.iter().position(|(n, _)| *n == name) {
        Some(i) => i,
        None => {
            state.metric_ids.push((name, kind));
            state.metric_ids.len() - 1
        }
    };
    put_u32(&mut caller, id_ptr, id as u32 + 1)
}

fn proxy_increment_metric(caller: Caller<'_, HostState>, id: i32, offset: i64) -> i32 {
    let state = caller.data();
    let Some((name, kind)) = metric_by_id(state, id) else {
        return status::NOT_FOUND;
    };
    if *kind == MetricKind::Counter && offset < 0 {
        return status::BAD_ARGUMENT;
    }
    if let Some(m) = lock(&state.proxy.metrics).get_mut(name) {
        m.1 += offset;
    }
    status::OK
}

/// Sets a gauge or histogram; a counter adds the value.
fn proxy_record_metric(caller: Caller<'_, HostState>, id: i32, value: i64) -> i32 {
    let state = caller.data();
    let Some((name, kind)) = metric_by_id(state, id) else {
        return status::NOT_FOUND;
    };
    if let Some(m) = lock(&state.proxy.metrics).get_mut(name) {
        match kind {
            MetricKind::Counter => m.1 += value,
            _ => m.1 = value,
        }
    }
    status::OK
}

fn proxy_get_metric(mut caller: Caller<'_, HostState>, id: i32, ptr: i32) -> i32 {
    let value = {
        let state = caller.data();
        let Some((name, _)) = metric_by_id(state, id) else {
            return status::NOT_FOUND;
        };
        lock(&state.proxy.metrics).get(name).map_or(0, |m| m.1)
    };
    put_u64(&mut caller, ptr, value as u64)
}
