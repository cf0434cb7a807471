//! Tenant mode's refusals and status codes, and what injection mode lets
//! through instead.

use kubelet_scope_filter::metrics as m;

use super::*;

#[test]
fn tenant_mode_refusals_and_status_codes() {
    let proxy = proxy();
    let mut vm = vm_with_snapshot(&proxy, &tenant_config(), Some(SNAPSHOT_V1)).unwrap();
    let body = capture("probes-gke-2021-datadog.txt");

    refuses_what_tenants_may_not_see(&mut vm, &Upstream::ok(TEXT, &body, 512));
    passes_health_and_the_tenants_own_pod_logs_untouched(&mut vm);
    refuses_unreadable_responses_with_502(&mut vm, &body);
    passes_non_2xx_unchanged(&mut vm);
    resets_a_body_refused_mid_stream(&mut vm);

    assert_eq!(proxy.metric(m::REFUSED_CONTENT_ENCODING), Some(1));
    assert_eq!(proxy.metric(m::REFUSED_CONTENT_TYPE), Some(2));
    assert_eq!(proxy.metric(m::REFUSED_BODY), Some(1));
    assert_eq!(proxy.metric(m::REFUSED_FORBIDDEN), Some(8));
    assert!(vm.failed().is_none());
}

/// 403 with a one-line plain-text reason, and nothing goes upstream.
fn refuses_what_tenants_may_not_see(vm: &mut Vm, ok: &Upstream) {
    for (path, tenant, status, reason) in [
        ("/metrics/cadvisor", None, 403, "no tenant"),
        ("/metrics/cadvisor", Some("nobody"), 403, "unknown tenant"),
        ("/configz", Some("acme"), 403, "not available to tenants"),
        ("/logs/", Some("acme"), 403, "not available to tenants"),
        (
            "/debug/pprof/",
            Some("acme"),
            403,
            "not available to tenants",
        ),
        ("/exec/default/web-0/c", Some("acme"), 403, "exec"),
        (
            "/containerLogs/kube-system/x/y",
            Some("acme"),
            403,
            "not owned",
        ),
        ("/metrics/../configz", Some("acme"), 403, "not available"),
    ] {
        let ex = fetch(vm, path, &tenant_header(tenant), ok);
        assert_eq!(ex.status, status, "{path} {tenant:?}");
        assert!(ex.upstream_request.is_none(), "{path} went upstream");
        assert!(
            ex.body_text().contains(reason),
            "{path}: {}",
            ex.body_text()
        );
        assert!(ex.body_text().ends_with('\n'));
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
    assert!(
        ex.body_text().contains("content-encoding"),
        "{}",
        ex.body_text()
    );
    let proto = Upstream::ok(
        "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited",
        body,
        512,
    );
    let ex = fetch(vm, "/metrics/probes", &[("x-tenant", "acme")], &proto);
    assert_eq!(ex.status, 502);
    assert!(ex.body_text().contains("content-type"));
    let mut no_type = Upstream::ok(TEXT, body, 512);
    no_type.headers.retain(|(k, _)| k != b"content-type");
    assert_eq!(
        fetch(vm, "/metrics/probes", &[("x-tenant", "acme")], &no_type).status,
        502
    );
}

fn passes_non_2xx_unchanged(vm: &mut Vm) {
    let mut err = Upstream::ok(
        "text/plain",
        b"Internal Error: namespace=\"kube-system\"\n",
        8,
    );
    err.headers[0].1 = b"500".to_vec();
    let ex = fetch(vm, "/metrics/cadvisor", &[("x-tenant", "acme")], &err);
    assert_eq!(ex.status, 500);
    assert_eq!(ex.body, b"Internal Error: namespace=\"kube-system\"\n");
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
    let body = capture("probes-gke-2021-datadog.txt");
    let ex = fetch(
        &mut vm,
        "/metrics/probes",
        &[("x-tenant", "acme")],
        &Upstream::ok(TEXT, &body, 512),
    );
    assert_eq!(ex.status, 503);
    assert_eq!(ex.header("retry-after").as_deref(), Some("5"));
    assert_eq!(proxy.metric(m::REFUSED_UNAVAILABLE), Some(1));
    // Paths refused anyway stay 403, health stays up.
    let ex = fetch(
        &mut vm,
        "/configz",
        &[("x-tenant", "acme")],
        &Upstream::ok("text/plain", b"x", 1),
    );
    assert_eq!(ex.status, 403);
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
    // Every path passes in injection mode; only metrics are rewritten.
    for path in ["/configz", "/exec/a/b/c", "/pods"] {
        let ex = fetch(
            &mut vm,
            path,
            &[],
            &Upstream::ok("application/json", b"{}", 1),
        );
        assert_eq!((ex.status, ex.body.as_slice()), (200, &b"{}"[..]), "{path}");
        assert_eq!(
            ex.upstream_header("accept-encoding").as_deref(),
            Some("gzip")
        );
    }
}
