//! Memory: a VM's linear memory stays bounded by the chunk size, not the body.

use super::*;

#[test]
fn wasm_memory_stays_bounded_across_100_requests_of_20_mb() {
    let proxy = proxy();
    let config = tenant_config();
    let mut vm = vm_with_snapshot(&proxy, &config, Some(SNAPSHOT_V1)).unwrap();
    let fixture = kubelet_scope_testdata::synthetic("cadvisor-k8s1.20-synthetic.txt");
    let mut body = Vec::with_capacity(21 << 20);
    while body.len() < 20 << 20 {
        body.extend_from_slice(&fixture);
    }
    let expected = native(
        &config,
        Some(SNAPSHOT_V1),
        "/metrics/cadvisor",
        Some("acme"),
        &body,
    )
    .unwrap();
    let before = vm.memory_bytes();
    let mut after_first = 0;
    for i in 0..100 {
        // Envoy hands bodies over in reads of up to a few hundred KiB.
        let cs = if i % 10 == 0 { 16 << 10 } else { 256 << 10 };
        let ex = fetch(
            &mut vm,
            "/metrics/cadvisor",
            &[("x-tenant", "acme")],
            &Upstream::ok(TEXT, &body, cs),
        );
        assert_eq!(ex.status, 200);
        if i == 0 || i == 99 {
            assert!(ex.body == expected, "request {i}: output differs");
        } else {
            assert_eq!(ex.body.len(), expected.len());
        }
        if i == 0 {
            after_first = vm.memory_bytes();
        }
    }
    let after = vm.memory_bytes();
    eprintln!(
        "wasm memory: {} KiB at start, {} KiB after 1 request, {} KiB after 100 requests of {} MiB",
        before >> 10,
        after_first >> 10,
        after >> 10,
        body.len() >> 20
    );
    assert!(
        after <= after_first + (1 << 20),
        "memory grew: {after_first} -> {after}"
    );
    assert!(
        after < 16 << 20,
        "memory {after} is not bounded by the chunk size"
    );
}
