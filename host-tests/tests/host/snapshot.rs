//! Snapshot delivery: the lease (one VM polls, the others follow), staleness,
//! malformed snapshots, and static tenancy that needs none.

use kubelet_scope_filter::metrics as m;

use super::*;

#[test]
fn lease_one_vm_polls_and_another_takes_over_when_it_stops_renewing() {
    let proxy = proxy();
    let config = tenant_config();
    let mut vm1 = proxy.start_vm(config.as_bytes()).unwrap();
    let mut vm2 = proxy.start_vm(config.as_bytes()).unwrap();
    the_first_vm_to_tick_takes_the_lease_and_polls(&proxy, &mut vm1, &mut vm2);
    the_follower_loads_what_the_leader_fetched(&proxy, &mut vm1, &mut vm2);
    let stale_call = the_leader_long_polls_with_its_version(&proxy, &mut vm1);
    // vm1's worker wedges: no more ticks.
    the_follower_takes_over_when_the_lease_expires(&proxy, &mut vm2);
    the_old_leader_follows_and_its_stale_answer_is_dropped(&proxy, &mut vm1, stale_call);
    assert!(vm1.failed().is_none() && vm2.failed().is_none());
}

fn the_first_vm_to_tick_takes_the_lease_and_polls(proxy: &Proxy, vm1: &mut Vm, vm2: &mut Vm) {
    assert!(vm1.configured && vm2.configured);
    assert_eq!(vm1.tick_period_ms(), 1000);
    // Configuring takes no lease (Envoy configures root contexts it never ticks).
    assert!(vm1.pending_calls().is_empty() && vm2.pending_calls().is_empty());
    vm1.tick().unwrap();
    vm2.tick().unwrap();
    // The first VM to tick took the lease and polls; the second follows.
    assert_eq!(vm1.pending_calls().len(), 1);
    assert_eq!(vm2.pending_calls().len(), 0);
    let call = &vm1.pending_calls()[0];
    assert_eq!(call.cluster, CLUSTER);
    assert_eq!(
        call.header(":path").as_deref(),
        Some("/v1/snapshot?waitSeconds=30")
    );
    assert_eq!(call.header(":method").as_deref(), Some("GET"));
    assert_eq!(call.header("if-none-match"), None);
    assert_eq!(call.timeout_ms, 35_000);
    let keys = proxy.shared_keys();
    assert!(
        keys.iter().all(|k| k.starts_with("kubelet-scope/")),
        "{keys:?}"
    );
}

fn the_follower_loads_what_the_leader_fetched(proxy: &Proxy, vm1: &mut Vm, vm2: &mut Vm) {
    answer_poll(vm1, SNAPSHOT_V1).unwrap();
    assert_eq!(shared_version(proxy), Some(b"v1".to_vec()));
    // The follower picks the snapshot up from shared data on its next tick.
    vm2.tick().unwrap();
    assert!(vm2.pending_calls().is_empty());
    assert!(logged(vm2, "version v1 loaded"));
    let body = probes();
    let ex = fetch(
        vm2,
        "/metrics/probes",
        &[("x-tenant", "acme")],
        &Upstream::ok(TEXT, &body, 700),
    );
    assert_eq!(ex.status, 200);
}

/// Answers the long poll with a 304 and returns the next one, which stays
/// unanswered.
fn the_leader_long_polls_with_its_version(proxy: &Proxy, vm1: &mut Vm) -> HttpCall {
    vm1.tick().unwrap();
    let calls = vm1.pending_calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].header("if-none-match").as_deref(), Some("\"v1\""));
    vm1.respond_call(calls[0].token, headers(&[(":status", "304")]), b"")
        .unwrap();
    assert_eq!(proxy.metric(m::FETCH_SUCCESS), Some(2));
    vm1.tick().unwrap();
    vm1.pending_calls()[0].clone()
}

fn the_follower_takes_over_when_the_lease_expires(proxy: &Proxy, vm2: &mut Vm) {
    // Until the lease expires vm2 follows...
    proxy.advance_ms(5_000);
    vm2.tick().unwrap();
    assert!(vm2.pending_calls().is_empty());
    // ...then takes over and polls with the shared version.
    proxy.advance_ms(6_000);
    vm2.tick().unwrap();
    let calls = vm2.pending_calls();
    assert_eq!(calls.len(), 1, "vm2 did not take over");
    assert_eq!(calls[0].header("if-none-match").as_deref(), Some("\"v1\""));
    let v2 = SNAPSHOT_V1.replace("\"v1\"", "\"v2\"").replace(
        "\"sleeper-1\":{\"labels\":{\"team\":\"sleepers\",\"tenant\":\"acme\"}}",
        "\"sleeper-1\":{\"labels\":{\"tenant\":\"globex\"}}",
    );
    answer_poll(vm2, &v2).unwrap();
    assert_eq!(shared_version(proxy), Some(b"v2".to_vec()));
}

/// vm1 comes back: it follows, and its stale answer does not overwrite v2.
fn the_old_leader_follows_and_its_stale_answer_is_dropped(
    proxy: &Proxy,
    vm1: &mut Vm,
    stale_call: HttpCall,
) {
    vm1.tick().unwrap();
    assert!(logged(vm1, "no longer leads"));
    let old = SNAPSHOT_V1.replace("\"v1\"", "\"v0\"");
    vm1.respond_call(
        stale_call.token,
        headers(&[(":status", "200")]),
        old.as_bytes(),
    )
    .unwrap();
    assert_eq!(shared_version(proxy), Some(b"v2".to_vec()));
    vm1.tick().unwrap();
    assert!(vm1.pending_calls().is_empty());
    assert!(logged(vm1, "version v2 loaded"));
}

#[test]
fn stale_snapshot_fails_closed_in_tenant_mode_only() {
    let proxy = proxy();
    let body = probes();
    let mut vm = vm_with_snapshot(&proxy, &tenant_config(), Some(SNAPSHOT_V1)).unwrap();
    let request = |vm: &mut Vm| {
        fetch(
            vm,
            "/metrics/probes",
            &[("x-tenant", "acme")],
            &Upstream::ok(TEXT, &body, 700),
        )
    };
    assert_eq!(request(&mut vm).status, 200);
    // The control plane goes away: every poll fails, with back-off.
    let mut polls = 0;
    for _ in 0..61 {
        proxy.advance_ms(1_000);
        vm.tick().unwrap();
        for call in vm.pending_calls() {
            polls += 1;
            vm.fail_call(call.token).unwrap();
        }
    }
    assert!(
        (4..20).contains(&polls),
        "{polls} polls in 61 s of failures"
    );
    assert_eq!(proxy.metric(m::FETCH_FAILURE), Some(polls));
    let ex = request(&mut vm);
    assert_eq!(ex.status, 503, "{}", ex.body_text());
    assert_eq!(ex.header("retry-after").as_deref(), Some("5"));
    // The next successful poll (even a 304) makes it fresh again.
    for _ in 0..40 {
        proxy.advance_ms(1_000);
        vm.tick().unwrap();
        if let Some(call) = vm.pending_calls().first() {
            vm.respond_call(call.token, headers(&[(":status", "304")]), b"")
                .unwrap();
            break;
        }
    }
    assert_eq!(request(&mut vm).status, 200);

    // Injection keeps using the old labels when stale.
    let proxy = proxy.fresh();
    proxy.add_cluster(CLUSTER);
    let mut vm = vm_with_snapshot(&proxy, &injection_config(), Some(SNAPSHOT_V1)).unwrap();
    proxy.advance_ms(3_600_000);
    vm.tick().unwrap();
    let ex = fetch(
        &mut vm,
        "/metrics/probes",
        &[],
        &Upstream::ok(TEXT, &body, 700),
    );
    assert!(ex.body_text().contains("team=\"web\""));
}

#[test]
fn malformed_snapshot_is_rejected_and_the_old_one_kept() {
    let proxy = proxy();
    let body = probes();
    let up = Upstream::ok(TEXT, &body, 700);
    let mut vm = vm_with_snapshot(&proxy, &injection_config(), Some(SNAPSHOT_V1)).unwrap();
    for bad in [
        "{\"version\": \"v9\", \"namespaces\": ",
        "{\"version\": \"v9\", \"namespaces\": {}}",
        "[]",
        "",
    ] {
        proxy.advance_ms(31_000);
        vm.tick().unwrap();
        let calls = vm.pending_calls();
        assert_eq!(calls.len(), 1, "no poll to answer");
        assert_eq!(calls[0].header("if-none-match").as_deref(), Some("\"v1\""));
        vm.respond_call(
            calls[0].token,
            headers(&[(":status", "200")]),
            bad.as_bytes(),
        )
        .unwrap();
        assert_eq!(shared_version(&proxy), Some(b"v1".to_vec()));
    }
    assert_eq!(proxy.metric(m::SNAPSHOT_REJECTED), Some(4));
    assert_eq!(proxy.metric(m::FETCH_FAILURE), Some(4));
    assert!(vm
        .logs()
        .iter()
        .any(|(l, s)| *l == level::WARN && s.contains("rejected the snapshot")));
    let ex = fetch(&mut vm, "/metrics/probes", &[], &up);
    assert!(
        ex.body_text().contains("team=\"web\""),
        "old snapshot not in use"
    );

    // A broken value in shared data (another VM's bug) is ignored the same way.
    proxy.shared_set("kubelet-scope/snapshot", b"garbage");
    proxy.shared_set("kubelet-scope/version", b"v10");
    let mut other = proxy.start_vm(injection_config().as_bytes()).unwrap();
    vm.tick().unwrap();
    other.tick().unwrap();
    for vm in [&mut vm, &mut other] {
        assert!(logged(vm, "ignoring the snapshot"));
    }
    let ex = fetch(&mut vm, "/metrics/probes", &[], &up);
    assert!(ex.body_text().contains("team=\"web\""));
    assert!(vm.failed().is_none() && other.failed().is_none());
}

#[test]
fn static_tenancy_needs_no_control_plane() {
    let proxy = proxy();
    let mut vm = proxy.start_vm(static_config().as_bytes()).unwrap();
    assert!(vm.configured);
    assert_eq!(
        vm.tick_period_ms(),
        0,
        "polls although nothing needs a snapshot"
    );
    proxy.advance_ms(10_000_000);
    vm.tick().unwrap();
    assert!(vm.pending_calls().is_empty());
    let body = third_party!("cadvisor-k8s1.16-minikube-docker20.10-nri.txt");
    let ex = fetch(
        &mut vm,
        "/metrics/cadvisor",
        &[],
        &Upstream::ok(TEXT, &body, 8192),
    );
    assert_eq!(ex.status, 200);
    assert!(ex.body_text().contains("namespace=\"scraper\""));
    assert!(!ex.body_text().contains("namespace=\"kube-system\""));
    assert!(proxy.shared_keys().is_empty());
}
