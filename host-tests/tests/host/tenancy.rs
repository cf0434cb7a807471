//! Tenant mode's refusals and status codes, and what injection mode lets
//! through instead.

use kubelet_scope_filter::metrics as m;

use super::*;

#[test]
fn tenant_mode_refusals_and_status_codes() {
    let proxy = proxy();
    let mut vm = vm_with_snapshot(&proxy, &tenant_config(), Some(SNAPSHOT_V1)).unwrap();
    let body = probes();

    refuses_what_tenants_may_not_see(&mut vm, &Upstream::ok(TEXT, &body, 512));
    passes_health_and_the_tenants_own_pod_logs_untouched(&mut vm);
    refuses_unreadable_responses_with_502(&mut vm, &body);
    withholds_the_body_of_non_2xx(&mut vm);
    resets_a_body_refused_mid_stream(&mut vm);

    assert_eq!(proxy.metric(m::REFUSED_CONTENT_ENCODING), Some(1));
    assert_eq!(proxy.metric(m::REFUSED_CONTENT_TYPE), Some(2));
    assert_eq!(proxy.metric(m::REFUSED_BODY), Some(1));
    assert_eq!(proxy.metric(m::REFUSED_FORBIDDEN), Some(8));
    assert!(vm.failed().is_none());
}

/// Answered as a kubelet answers a path it does not serve (404, Go's body), the
/// one-line reason in `x-kubelet-scope-denied`, and nothing goes upstream.
fn refuses_what_tenants_may_not_see(vm: &mut Vm, ok: &Upstream) {
    for (path, tenant, status, reason) in [
        ("/metrics/cadvisor", None, 404, "no tenant"),
        ("/metrics/cadvisor", Some("nobody"), 404, "unknown tenant"),
        ("/configz", Some("acme"), 404, "not available to tenants"),
        ("/logs/", Some("acme"), 404, "not available to tenants"),
        (
            "/debug/pprof/",
            Some("acme"),
            404,
            "not available to tenants",
        ),
        ("/exec/default/web-0/c", Some("acme"), 404, "exec"),
        (
            "/containerLogs/kube-system/x/y",
            Some("acme"),
            404,
            "not owned",
        ),
        (
            "/metrics/../configz",
            Some("acme"),
            404,
            "not a kubelet path",
        ),
    ] {
        let ex = fetch(vm, path, &tenant_header(tenant), ok);
        assert_eq!(ex.status, status, "{path} {tenant:?}");
        assert!(ex.upstream_request.is_none(), "{path} went upstream");
        let why = ex.header("x-kubelet-scope-denied").unwrap_or_default();
        assert!(why.contains(reason), "{path}: {why}");
        assert_eq!(ex.body_text(), "404 page not found\n", "{path}");
        assert_eq!(
            ex.header("content-type").as_deref(),
            Some("text/plain; charset=utf-8")
        );
    }
}

fn passes_health_and_the_tenants_own_pod_logs_untouched(vm: &mut Vm) {
    // Allowed without rewriting: health, the tenant's own pod logs.
    for (path, tenant) in [
        ("/healthz", None),
        ("/healthz/syncloop", Some("acme")),
        (
            "/containerLogs/default/web-0/nginx?follow=true",
            Some("acme"),
        ),
    ] {
        let up = Upstream::ok(
            "text/plain",
            b"ok\nunfiltered namespace=\"kube-system\"\n",
            4,
        );
        let ex = fetch(vm, path, &tenant_header(tenant), &up);
        assert_eq!(ex.status, 200, "{path}");
        assert_eq!(ex.body, b"ok\nunfiltered namespace=\"kube-system\"\n");
        assert!(
            ex.header("content-length").is_some(),
            "{path}: passed untouched"
        );
    }
}

fn refuses_unreadable_responses_with_502(vm: &mut Vm, body: &[u8]) {
    // Unreadable responses: 502, never the body.
    let mut gz = Upstream::ok(TEXT, body, 512);
    gz.headers
        .push((b"content-encoding".to_vec(), b"gzip".to_vec()));
    let ex = fetch(vm, "/metrics/probes", &[("x-tenant", "acme")], &gz);
    assert_eq!(ex.status, 502);
    assert_eq!(ex.body_text(), "Bad Gateway\n");
    let why = ex.header("x-kubelet-scope-denied").unwrap_or_default();
    assert!(why.contains("content-encoding"), "{why}");
    let proto = Upstream::ok(
        "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited",
        body,
        512,
    );
    let ex = fetch(vm, "/metrics/probes", &[("x-tenant", "acme")], &proto);
    assert_eq!(ex.status, 502);
    let why = ex.header("x-kubelet-scope-denied").unwrap_or_default();
    assert!(why.contains("content-type"), "{why}");
    let mut no_type = Upstream::ok(TEXT, body, 512);
    no_type.headers.retain(|(k, _)| k != b"content-type");
    assert_eq!(
        fetch(vm, "/metrics/probes", &[("x-tenant", "acme")], &no_type).status,
        502
    );
}

/// A kubelet error keeps its status; its body (which can name other tenants'
/// namespaces) does not reach the tenant.
fn withholds_the_body_of_non_2xx(vm: &mut Vm) {
    let mut err = Upstream::ok(
        "text/plain",
        b"Internal Error: namespace=\"kube-system\"\n",
        8,
    );
    err.headers[0].1 = b"500".to_vec();
    let ex = fetch(vm, "/metrics/cadvisor", &[("x-tenant", "acme")], &err);
    assert_eq!(ex.status, 500);
    assert_eq!(ex.body, b"Internal Server Error\n");
}

/// A body the rewriter refuses mid-stream (a line over 1 MiB) resets the stream
/// and no byte of the unfiltered line leaves.
fn resets_a_body_refused_mid_stream(vm: &mut Vm) {
    let mut hostile = b"up{namespace=\"default\"} 1\n".to_vec();
    hostile.extend_from_slice(b"secret{namespace=\"workload-dogstatsd\",x=\"");
    hostile.extend(std::iter::repeat_n(b'a', (1 << 20) + 10));
    hostile.extend_from_slice(b"\"} 1\nlater{namespace=\"default\"} 2\n");
    let ex = fetch(
        vm,
        "/metrics/cadvisor",
        &[("x-tenant", "acme")],
        &Upstream::ok(TEXT, &hostile, 64 << 10),
    );
    assert!(ex.reset, "status {}", ex.status);
    assert!(!String::from_utf8_lossy(&ex.body).contains("workload-dogstatsd"));
    assert!(!ex.body.contains(&b'a') || ex.body.len() < 100);
}

#[test]
fn no_snapshot_yet_is_503_with_retry_after_in_tenant_mode_and_open_in_injection_mode() {
    let proxy = proxy();
    let mut vm = vm_with_snapshot(&proxy, &tenant_config(), None).unwrap();
    let body = probes();
    let ex = fetch(
        &mut vm,
        "/metrics/probes",
        &[("x-tenant", "acme")],
        &Upstream::ok(TEXT, &body, 512),
    );
    assert_eq!(ex.status, 503);
    assert_eq!(ex.header("retry-after").as_deref(), Some("5"));
    assert_eq!(proxy.metric(m::REFUSED_UNAVAILABLE), Some(1));
    // Paths refused anyway stay denied (404), health stays up.
    let ex = fetch(
        &mut vm,
        "/configz",
        &[("x-tenant", "acme")],
        &Upstream::ok("text/plain", b"x", 1),
    );
    assert_eq!(ex.status, 404);
    let ex = fetch(
        &mut vm,
        "/healthz",
        &[],
        &Upstream::ok("text/plain", b"ok", 1),
    );
    assert_eq!(ex.status, 200);

    let proxy = proxy.fresh();
    proxy.add_cluster(CLUSTER);
    let mut vm = vm_with_snapshot(&proxy, &injection_config(), None).unwrap();
    let ex = fetch(
        &mut vm,
        "/metrics/probes",
        &[],
        &Upstream::ok(TEXT, &body, 512),
    );
    assert_eq!(ex.status, 200);
    assert_eq!(ex.body, body, "injection fails open without a snapshot");
}

#[test]
fn injection_mode_passes_unreadable_responses_and_counts_them() {
    let proxy = proxy();
    let mut vm = vm_with_snapshot(&proxy, &injection_config(), Some(SNAPSHOT_V1)).unwrap();
    let gzipped = b"\x1f\x8b\x08\x00binary".to_vec();
    let mut gz = Upstream::ok(TEXT, &gzipped, 3);
    gz.headers
        .push((b"content-encoding".to_vec(), b"gzip".to_vec()));
    let ex = fetch(&mut vm, "/metrics/cadvisor", &[], &gz);
    assert_eq!(ex.status, 200);
    assert_eq!(ex.body, gzipped);
    assert_eq!(ex.header("content-encoding").as_deref(), Some("gzip"));
    assert!(ex.header("content-length").is_some());
    assert_eq!(proxy.metric(m::UNREADABLE_PASSED), Some(1));
    // The read endpoints pass in injection mode; only metrics are rewritten.
    let ex = fetch(
        &mut vm,
        "/pods",
        &[],
        &Upstream::ok("application/json", b"{}", 1),
    );
    assert_eq!((ex.status, ex.body.as_slice()), (200, &b"{}"[..]));
    assert_eq!(
        ex.upstream_header("accept-encoding").as_deref(),
        Some("gzip")
    );
    // Everything else is denied there too (`nodes/proxy` with the node's token).
    for path in ["/configz", "/exec/a/b/c", "/run/kube-system/etcd/etcd"] {
        let ex = fetch(
            &mut vm,
            path,
            &[],
            &Upstream::ok("application/json", b"{}", 1),
        );
        assert_eq!(ex.status, 404, "{path}");
        assert!(ex.upstream_request.is_none(), "{path} went upstream");
    }
}
