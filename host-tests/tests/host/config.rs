//! Configurations: invalid ones are rejected with one line naming the field, the
//! README's examples work, and a configured VM defines its metrics.

use kubelet_scope_filter::metrics as m;

use super::*;

#[test]
fn invalid_configurations_are_rejected_with_one_line_naming_the_field() {
    let proxy = proxy();
    for (config, field) in [
        (r#"{"injct": {}}"#, "injct"),
        (
            r#"{"tenancy": {"tenant": {"cookie": "a"}, "staticNamespaces": {"a": []}}}"#,
            "tenancy.tenant",
        ),
        (r#"{"inject": {"labels": {"team": "team"}}}"#, "snapshot"),
        (
            r#"{"inject": {"labels": {"team": "team"}}, "snapshot": {"cluster": "cp", "pollTimeoutMs": 0}}"#,
            "snapshot.pollTimeoutMs",
        ),
        (
            r#"{"inject": {"labels": {"app.kubernetes.io/team": "a.b"}}, "snapshot": {"cluster": "cp"}}"#,
            "inject.labels",
        ),
        ("not json", "invalid configuration"),
    ] {
        let vm = proxy.start_vm(config.as_bytes()).unwrap();
        assert!(!vm.configured, "{config} accepted");
        let errors: Vec<&String> = vm
            .logs()
            .iter()
            .filter(|(l, _)| *l >= level::ERROR)
            .map(|(_, s)| s)
            .collect();
        assert_eq!(errors.len(), 1, "{config}: {errors:?}");
        assert!(errors[0].contains(field), "{config}: {}", errors[0]);
        assert!(!errors[0].contains('\n'));
        assert!(vm.failed().is_none());
    }
    // No configuration at all fails closed: Envoy would otherwise forward every
    // path with the node's credentials.
    for empty in [&b""[..], b"{}"] {
        let vm = proxy.start_vm(empty).unwrap();
        assert!(!vm.configured);
        assert!(vm
            .logs()
            .iter()
            .any(|(l, s)| *l >= level::ERROR && s.contains("needs inject or tenancy")));
    }
    assert!(
        proxy
            .start_vm(br#"{"passThrough": true}"#)
            .unwrap()
            .configured
    );
}

#[test]
fn metrics_are_defined_with_the_prefix() {
    let proxy = proxy();
    let _vm = vm_with_snapshot(&proxy, &tenant_config(), Some(SNAPSHOT_V1)).unwrap();
    let defined = proxy.metrics();
    for name in m::COUNTERS {
        assert_eq!(
            defined.get(*name).map(|x| x.0),
            Some(MetricKind::Counter),
            "{name}"
        );
    }
    for name in m::GAUGES {
        assert_eq!(
            defined.get(*name).map(|x| x.0),
            Some(MetricKind::Gauge),
            "{name}"
        );
    }
    assert!(defined.keys().all(|k| k.starts_with("kubelet_scope_")));
    assert_eq!(proxy.metric(m::SNAPSHOT_NAMESPACES), Some(11));
    assert_eq!(proxy.metric(m::SNAPSHOT_LOADED), Some(1));
}

// The configuration examples of the README stay valid.

const README_INJECTION: &str = r#"{
  "inject": {
    "labels": {
      "team": "team",
      "cost-centre": "cost_centre"
    },
    "onConflict": "exported"
  },
  "snapshot": {
    "cluster": "kubelet-scope-control-plane",
    "path": "/v1/snapshot",
    "pollTimeoutMs": 30000,
    "maxStalenessSeconds": 300
  }
}"#;

const README_TENANCY: &str = r#"{
  "tenancy": {
    "tenant": { "header": "x-tenant" },
    "namespaceLabel": "tenant",
    "staticNamespaces": { "platform": ["kube-system"] },
    "nonNamespacedSeries": "drop",
    "emptyNamespaceSeries": "drop",
    "allowPodScopedPaths": true,
    "allowInteractivePaths": false
  },
  "inject": { "labels": { "team": "team" } },
  "snapshot": {
    "cluster": "kubelet-scope-control-plane",
    "maxStalenessSeconds": 120
  },
  "maxJsonBodyBytes": 33554432
}"#;

#[test]
fn readme_configuration_examples_work() {
    for (config, tenant) in [(README_INJECTION, None), (README_TENANCY, Some("acme"))] {
        let proxy = proxy();
        proxy.add_cluster("kubelet-scope-control-plane");
        let mut vm = vm_with_snapshot(&proxy, config, Some(SNAPSHOT_V1)).unwrap();
        let body = third_party!("cadvisor-k8s1.16-kind-containerd-datadog.txt");
        let ex = fetch(
            &mut vm,
            "/metrics/cadvisor",
            &tenant_header(tenant),
            &Upstream::ok(TEXT, &body, 16 << 10),
        );
        let expected = native(
            config,
            Some(SNAPSHOT_V1),
            "/metrics/cadvisor",
            tenant,
            &body,
        );
        assert_matches_native(&ex, &expected, config);
        assert!(ex.body_text().contains("team=\"web\""));
    }
}
