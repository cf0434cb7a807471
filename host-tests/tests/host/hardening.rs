//! What a tenant, or any holder of a listener's token, must not reach: kubelet
//! error bodies, redirects to denied paths, other methods on read endpoints,
//! ranges of unfiltered bodies, and a namespace merely named like a tenant.

use kubelet_scope_filter::metrics as m;

use super::*;

fn tenant_vm(proxy: &Proxy) -> Vm {
    vm_with_snapshot(proxy, &tenant_config(), Some(SNAPSHOT_V1)).unwrap()
}

fn answer(status: &str, content_type: &str, body: &[u8], extra: &[(&str, &str)]) -> Upstream {
    let mut up = Upstream::ok(content_type, body, 7);
    up.headers = headers(&[(":status", status), ("content-type", content_type)]);
    up.headers.extend(headers(extra));
    up
}

#[test]
fn kubelet_error_bodies_are_withheld_from_tenants() {
    let proxy = proxy();
    let mut vm = tenant_vm(&proxy);
    // The kubelet's /metrics 500 on duplicate series lists other tenants' labels.
    let leak = b"An error has occurred while serving metrics:\n\ncollected metric \
        \"container_cpu\" { label:<name:\"namespace\" value:\"workload-stress-ng\" > } \
        was collected before with the same name and label values\n";
    for (path, status) in [
        ("/metrics/cadvisor", "500"),
        ("/stats/summary", "500"),
        ("/pods", "503"),
        ("/metrics/resource", "404"),
    ] {
        let up = answer(status, "text/plain; charset=utf-8", leak, &[]);
        let ex = fetch(&mut vm, path, &[("x-tenant", "acme")], &up);
        assert_eq!(ex.status.to_string(), status, "{path}");
        assert!(!ex.body_text().contains("workload-stress-ng"), "{path}");
        assert!(!ex.body_text().contains("error has occurred"), "{path}");
        assert_eq!(
            ex.header("content-type").as_deref(),
            Some("text/plain; charset=utf-8")
        );
    }
    assert_eq!(proxy.metric(m::ERROR_BODY_REPLACED), Some(4));
    // A 304 has no body to withhold: it passes as it is, not counted.
    let mut not_modified = answer("304", TEXT, b"", &[("etag", "\"v1\"")]);
    not_modified.chunks.clear();
    let ex = fetch(
        &mut vm,
        "/metrics/cadvisor",
        &[("x-tenant", "acme")],
        &not_modified,
    );
    assert_eq!((ex.status, ex.body.len()), (304, 0));
    assert_eq!(ex.header("etag").as_deref(), Some("\"v1\""));
    assert_eq!(proxy.metric(m::ERROR_BODY_REPLACED), Some(4));
    // The platform's view (no tenancy) keeps the kubelet's answer.
    let other = self::proxy();
    let mut inject = vm_with_snapshot(&other, &injection_config(), Some(SNAPSHOT_V1)).unwrap();
    let ex = fetch(
        &mut inject,
        "/metrics/cadvisor",
        &[],
        &answer("500", TEXT, leak, &[]),
    );
    assert_eq!((ex.status, ex.body.as_slice()), (500, &leak[..]));
}

#[test]
fn redirects_pass_only_to_paths_the_tenant_may_use() {
    let proxy = proxy();
    let mut vm = tenant_vm(&proxy);
    let moved = b"<a href=\"/runningpods/\">Moved Permanently</a>.\n\n";
    for (location, status) in [
        ("/runningpods/", 301),
        ("/configz", 404),
        ("/exec/kube-system/etcd/etcd", 404),
        ("https://evil.example/pods", 404),
        ("//evil.example/pods", 404),
    ] {
        let up = answer(
            "301",
            "text/html; charset=utf-8",
            moved,
            &[("location", location)],
        );
        let ex = fetch(&mut vm, "/runningpods", &[("x-tenant", "acme")], &up);
        assert_eq!(ex.status, status, "{location}");
        if status == 301 {
            assert_eq!(ex.header("location").as_deref(), Some(location));
        } else {
            assert!(ex.header("location").is_none(), "{location}");
        }
    }
}

#[test]
fn read_endpoints_take_get_and_head_only_and_no_ranges() {
    let proxy = proxy();
    let mut vm = tenant_vm(&proxy);
    let body = probes();
    let up = Upstream::ok(TEXT, &body, 512);
    for method in ["POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT"] {
        let mut h = get("/metrics/probes", &[("x-tenant", "acme")]);
        h[0].1 = method.as_bytes().to_vec();
        let ex = vm.exchange(h, &up).unwrap();
        assert_eq!(ex.status, 405, "{method}");
        assert!(ex.upstream_request.is_none(), "{method} went upstream");
        assert_eq!(ex.header("allow").as_deref(), Some("GET, HEAD"));
    }
    assert_eq!(proxy.metric(m::REFUSED_METHOD), Some(6));
    let ex = fetch(
        &mut vm,
        "/metrics/probes",
        &[
            ("x-tenant", "acme"),
            ("range", "bytes=0-99"),
            ("if-range", "x"),
        ],
        &up,
    );
    assert_eq!(ex.status, 200);
    assert_eq!(ex.upstream_header("range"), None);
    assert_eq!(ex.upstream_header("if-range"), None);
    // HEAD: no body, and not the kubelet's (unfiltered) length.
    let mut h = get("/metrics/probes", &[("x-tenant", "acme")]);
    h[0].1 = b"HEAD".to_vec();
    let mut head = Upstream::ok(TEXT, &body, 512);
    head.chunks.clear();
    let ex = vm.exchange(h, &head).unwrap();
    assert_eq!((ex.status, ex.body.len()), (200, 0));
    assert!(ex.header("content-length").is_none());
}

#[test]
fn the_tenant_of_a_caller_is_its_namespaces_label_not_its_name() {
    let proxy = proxy();
    let config = format!(
        r#"{{"tenancy": {{"tenant": {{"namespaceOf": {{"header": "x-ns"}}}}, "namespaceLabel": "tenant"}},
            "snapshot": {{"cluster": "{CLUSTER}"}}}}"#
    );
    let mut vm = vm_with_snapshot(&proxy, &config, Some(SNAPSHOT_V1)).unwrap();
    let body = probes();
    let up = Upstream::ok(TEXT, &body, 512);
    // A caller in `scraper` (labelled tenant=acme) is acme.
    let ex = fetch(&mut vm, "/metrics/probes", &[("x-ns", "scraper")], &up);
    assert_eq!(ex.status, 200);
    assert!(ex.upstream_request.is_some());
    // A caller in a namespace *named* like a tenant, or in one with no tenant
    // label, or unknown, is no tenant at all.
    for ns in ["acme", "globex", "no-such-namespace", ""] {
        let ex = fetch(&mut vm, "/metrics/probes", &[("x-ns", ns)], &up);
        assert_eq!(ex.status, 404, "{ns:?}");
        assert!(ex.upstream_request.is_none(), "{ns:?}");
    }
    assert_eq!(
        fetch(&mut vm, "/metrics/probes", &[], &up).status,
        404,
        "no header"
    );
}
