//! The release `kubelet_scope_filter.wasm` driven the way Envoy drives it.
//!
//! One test binary, so the module is compiled once (see `testkit::proxy`); every
//! test takes a fresh proxy (own shared data and metrics). The modules are the
//! areas; this file holds the helpers they share and nothing that runs on its own.

use kubelet_scope_host_tests::testkit::*;
use kubelet_scope_host_tests::*;
// `third_party!(name)`: a third-party capture, or a return (SKIPPED) without them.
use kubelet_scope_testdata::third_party;

mod config;
mod fuzz;
mod hardening;
mod headers;
mod memory;
mod snapshot;
mod streaming;
mod tenancy;

const TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

fn read(p: &std::path::Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// A `/metrics/probes` body of the project's own (namespaces `default`, acme's in
/// [`SNAPSHOT_V1`], and `kube-system`), for the tests that need any real body.
fn probes() -> Vec<u8> {
    kubelet_scope_testdata::synthetic("probes-k8s1.20-synthetic.txt")
}

/// Checks what the client got against the pure rewriter's verdict.
fn assert_matches_native(ex: &Exchange, expected: &Result<Vec<u8>, (u16, Vec<u8>)>, what: &str) {
    match expected {
        Ok(out) => {
            assert_eq!(ex.status, 200, "{what}: {:?}", ex.local_reply);
            assert!(!ex.reset, "{what}: reset");
            if ex.body != *out {
                let at = ex.body.iter().zip(out).position(|(a, b)| a != b);
                panic!(
                    "{what}: body differs (len {} vs {}, first difference at {at:?})",
                    ex.body.len(),
                    out.len()
                );
            }
        }
        Err((status, _)) if *status > 0 => {
            assert_eq!(ex.status, u32::from(*status), "{what}");
            assert!(ex.local_reply.is_some(), "{what}: not a local reply");
        }
        Err((_, partial)) => {
            assert!(
                ex.reset || ex.status == 502,
                "{what}: body error not refused"
            );
            assert!(
                partial.starts_with(&ex.body),
                "{what}: sent bytes that are not filtered output"
            );
        }
    }
}

fn tenant_header(tenant: Option<&str>) -> Vec<(&str, &str)> {
    tenant.map(|t| vec![("x-tenant", t)]).unwrap_or_default()
}

/// A GET of `path` with the `extra` headers through `vm`, answered by `up`; the
/// exchange itself must not fail.
fn fetch(vm: &mut Vm, path: &str, extra: &[(&str, &str)], up: &Upstream) -> Exchange {
    vm.exchange(get(path, extra), up).unwrap()
}

/// The snapshot version in the proxy's shared data.
fn shared_version(proxy: &Proxy) -> Option<Vec<u8>> {
    proxy.shared_get("kubelet-scope/version").map(|v| v.0)
}

/// Whether the VM logged a line containing `text`.
fn logged(vm: &Vm, text: &str) -> bool {
    vm.logs().iter().any(|(_, l)| l.contains(text))
}
