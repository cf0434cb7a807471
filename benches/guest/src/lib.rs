//! The filter's body rewriters as plain wasm exports, so the benchmarks can time
//! exactly the code the proxy-wasm filter runs (same crate, same SIMD build)
//! without an Envoy around it.
//!
//! The host writes inputs into buffers the guest owns (`buffer` returns their
//! address), then calls `configure` and `rewrite`/`copy`. No unsafe code: the
//! guest only hands out addresses; the host writes through wasm memory.

use std::cell::RefCell;
use std::rc::Rc;

use kubelet_scope_filter::config::Config;
use kubelet_scope_filter::policy::endpoint::{BodyKind, JsonEndpoint};
use kubelet_scope_filter::rewrite::BodyFilter;
use kubelet_scope_filter::snapshot::catalog::{Catalog, RequestScope};
use kubelet_scope_filter::snapshot::Snapshot;

const CONFIG: usize = 0;
const SNAPSHOT: usize = 1;
const TENANT: usize = 2;
const BODY: usize = 3;

#[derive(Default)]
struct Guest {
    buffers: [Vec<u8>; 4],
    out: Vec<u8>,
    scope: Option<(RequestScope, usize)>,
}

thread_local! {
    static GUEST: RefCell<Guest> = RefCell::default();
}

/// Sizes buffer `index` (0 config, 1 snapshot, 2 tenant, 3 body) to `len` bytes and
/// returns its address for the host to write into.
#[no_mangle]
pub extern "C" fn buffer(index: u32, len: u32) -> u32 {
    GUEST.with_borrow_mut(|g| match g.buffers.get_mut(index as usize) {
        Some(buffer) => {
            buffer.clear();
            buffer.resize(len as usize, 0);
            buffer.as_mut_ptr() as usize as u32
        }
        None => 0,
    })
}

/// Builds the request scope from the config, snapshot and tenant buffers; 0 on
/// success.
#[no_mangle]
pub extern "C" fn configure() -> u32 {
    GUEST.with_borrow_mut(|g| {
        let Ok(config) = Config::parse(&g.buffers[CONFIG]) else {
            return 1;
        };
        let Ok(snapshot) = Snapshot::parse(&g.buffers[SNAPSHOT]) else {
            return 2;
        };
        let tenant = std::str::from_utf8(&g.buffers[TENANT])
            .ok()
            .filter(|t| !t.is_empty());
        let catalog = Rc::new(Catalog::new(&config, Some(&snapshot)));
        // A config with `virtualClusterHeader`: the tenant buffer names the cluster.
        let virtual_cluster = config
            .tenancy
            .as_ref()
            .and_then(|t| t.virtual_cluster_header.as_ref())
            .and(tenant);
        let tenant = tenant.filter(|_| virtual_cluster.is_none());
        g.scope = Some((
            RequestScope::of_request(catalog, tenant, virtual_cluster),
            config.max_json_body_bytes,
        ));
        0
    })
}

/// Rewrites the body buffer as `kind` (0 Prometheus text, 1 /stats/summary,
/// 2 /pods) in chunks of `chunk` bytes; returns the output length, or `u64::MAX`
/// when the filter refuses the body.
#[no_mangle]
pub extern "C" fn rewrite(kind: u32, chunk: u32) -> u64 {
    let kind = match kind {
        0 => BodyKind::Exposition,
        1 => BodyKind::Json(JsonEndpoint::StatsSummary),
        _ => BodyKind::Json(JsonEndpoint::PodList),
    };
    GUEST.with_borrow_mut(|g| {
        let Some((scope, max_json)) = g.scope.clone() else {
            return u64::MAX;
        };
        let Guest { buffers, out, .. } = g;
        out.clear();
        let mut filter = BodyFilter::new(kind, scope, max_json);
        for piece in buffers[BODY].chunks(chunk.max(1) as usize) {
            if filter.feed(piece, out).is_err() {
                return u64::MAX;
            }
        }
        if filter.finish(out).is_err() {
            return u64::MAX;
        }
        out.len() as u64
    })
}

/// The baseline: copies the body into the output buffer.
#[no_mangle]
pub extern "C" fn copy() -> u64 {
    GUEST.with_borrow_mut(|g| {
        let Guest { buffers, out, .. } = g;
        out.clear();
        out.extend_from_slice(&buffers[BODY]);
        out.len() as u64
    })
}

/// Address of the last output, for the host to check it against native.
#[no_mangle]
pub extern "C" fn output() -> u32 {
    GUEST.with_borrow(|g| g.out.as_ptr() as usize as u32)
}
