"""Real agents' parsers on what a tenant gets through Envoy: Prometheus' Python client
(`prometheus_client`'s text parser) and the OpenMetrics scraper of Datadog's checks
(`datadog-checks-base`, OpenMetricsBaseCheckV2, the library the kubelet check parses
with). Both must read the tenant's body with no error and no warning, and see only
the tenant's namespaces, each with its injected team.

World: the kubelet stand-in serving real captures (envoy/e2e/kubelet_standin.py).
"""

import logging

import pytest
from prometheus_client.parser import text_string_to_metric_families

import stack
from conftest import needs_third_party, tenant_namespaces

pytestmark = needs_third_party

# Path -> capture the stand-in serves for it (the captures of real kubelets).
ENDPOINTS = {
    "/metrics/cadvisor": "cadvisor-k8s1.31-minikube-containerd1.7-nri.txt",
    "/metrics/slis": "slis-datadog.txt",
    "/metrics/probes": "probes-gke-2021-datadog.txt",
    "/metrics/resource": "resource-k8s1.21-kind-metrics-server.txt",
}


def tenant_body(live, path):
    r = live.get("tenant", path, tenant="acme", headers={"x-standin-fixture": ENDPOINTS[path]})
    assert r.status == 200, r
    return r.text


@pytest.mark.parametrize("path", sorted(ENDPOINTS))
def test_prometheus_client_parses_the_tenants_body(live, spec, path):
    own = tenant_namespaces(spec, "acme")
    samples = 0
    for family in text_string_to_metric_families(tenant_body(live, path)):
        for sample in family.samples:
            samples += 1
            ns = sample.labels.get("namespace")
            if ns:
                assert ns in own, (path, sample)
                assert sample.labels.get("team") == spec[ns]["team"], (path, sample)
    assert samples > 0, path


@pytest.mark.parametrize("path", sorted(ENDPOINTS))
def test_datadogs_openmetrics_scraper_reads_the_tenants_body_without_warnings(
    live, spec, path, caplog
):
    from datadog_checks.base import OpenMetricsBaseCheckV2
    from datadog_checks.base.stubs import aggregator

    aggregator.reset()
    instance = {
        "openmetrics_endpoint": f"http://127.0.0.1:{live.ports['tenant']}{path}",
        "namespace": "kubelet",
        "metrics": [".+"],
        "headers": {
            "Authorization": "Bearer " + stack.jwt("acme"),
            "x-standin-fixture": ENDPOINTS[path],
        },
        "tag_by_endpoint": False,
    }
    check = OpenMetricsBaseCheckV2("kubelet", {}, [instance])
    with caplog.at_level(logging.WARNING):
        error = check.run()
    assert error == "", error
    assert check.warnings == [], check.warnings
    logged = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert logged == [], logged
    own = tenant_namespaces(spec, "acme")
    metrics = [m for name in aggregator.metric_names for m in aggregator.metrics(name)]
    assert metrics, path
    for m in metrics:
        tags = dict(t.split(":", 1) for t in m.tags if ":" in t)
        if tags.get("namespace"):
            assert tags["namespace"] in own, (path, m)
            assert tags.get("team") == spec[tags["namespace"]]["team"], (path, m)
