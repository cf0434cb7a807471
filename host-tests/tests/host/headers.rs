//! Header handling: what the filter changes in the request before it goes
//! upstream and in the response the client gets, and which tenant headers it
//! believes.

use super::*;

#[test]
fn request_and_response_headers() {
    let proxy = proxy();
    let mut vm = vm_with_snapshot(&proxy, &tenant_config(), Some(SNAPSHOT_V1)).unwrap();
    let body = probes();
    let up = Upstream::ok(TEXT, &body, 1000);

    a_rewritten_request_asks_for_identity_text(&mut vm, &up);
    openmetrics_when_the_client_asks_for_it(&mut vm, &up);
    the_tenant_header_never_reaches_the_kubelet(&mut vm);
    only_one_utf8_tenant_header_is_believed(&mut vm, &up);
    a_response_without_body_passes(&mut vm);
    assert!(vm.failed().is_none());
}

fn a_rewritten_request_asks_for_identity_text(vm: &mut Vm, up: &Upstream) {
    let ex = fetch(
        vm,
        "/metrics/probes",
        &[("x-tenant", "acme"), ("accept", "*/*")],
        up,
    );
    let sent = ex.upstream_request.clone().unwrap();
    assert!(
        header(&sent, "x-tenant").is_none(),
        "tenant header forwarded"
    );
    assert_eq!(header(&sent, "accept-encoding"), Some(&b"identity"[..]));
    assert_eq!(
        header(&sent, "accept"),
        Some(&b"text/plain;version=0.0.4"[..])
    );
    assert_eq!(header(&sent, ":path"), Some(&b"/metrics/probes"[..]));
    assert_eq!(header(&sent, "user-agent"), Some(&b"Prometheus/3.0"[..]));
    assert_eq!(ex.header("content-length"), None);
    assert_eq!(ex.header("content-type").as_deref(), Some(TEXT));
}

fn openmetrics_when_the_client_asks_for_it(vm: &mut Vm, up: &Upstream) {
    let prom = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
    let ex = fetch(
        vm,
        "/metrics/probes",
        &[("x-tenant", "acme"), ("accept", prom)],
        up,
    );
    assert!(ex
        .upstream_header("accept")
        .unwrap()
        .starts_with("application/openmetrics-text"));
}

/// Not even on passed paths.
fn the_tenant_header_never_reaches_the_kubelet(vm: &mut Vm) {
    let ex = fetch(
        vm,
        "/healthz",
        &[("x-tenant", "acme")],
        &Upstream::ok("text/plain", b"ok", 2),
    );
    assert_eq!(ex.upstream_header("x-tenant"), None);
    assert_eq!(
        ex.upstream_header("accept-encoding").as_deref(),
        Some("gzip")
    );
}

fn only_one_utf8_tenant_header_is_believed(vm: &mut Vm, up: &Upstream) {
    // A tenant header sent twice is believed neither time.
    let ex = fetch(
        vm,
        "/metrics/probes",
        &[("x-tenant", "globex"), ("X-Tenant", "acme")],
        up,
    );
    assert_eq!(ex.status, 404);
    // Header names are case-insensitive.
    let ex = fetch(vm, "/metrics/probes", &[("X-TENANT", "acme")], up);
    assert_eq!(ex.status, 200);
    // A non-UTF-8 tenant or path is refused, not a crash.
    let mut h = get("/metrics/probes", &[]);
    h.push((b"x-tenant".to_vec(), b"\xff\xfe".to_vec()));
    assert_eq!(vm.exchange(h, up).unwrap().status, 404);
    let mut h = get("/", &[("x-tenant", "acme")]);
    h[1].1 = b"/metrics/\xff".to_vec();
    assert_eq!(vm.exchange(h, up).unwrap().status, 404);
}

/// No body at all (HEAD-like): headers pass, nothing to flush.
fn a_response_without_body_passes(vm: &mut Vm) {
    let mut empty = Upstream::ok(TEXT, b"", 1);
    empty.chunks.clear();
    let ex = fetch(vm, "/metrics/probes", &[("x-tenant", "acme")], &empty);
    assert_eq!((ex.status, ex.body.len()), (200, 0));
}
