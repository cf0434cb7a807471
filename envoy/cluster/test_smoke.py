"""The real cluster itself (world: the real kubelet, apiserver and containers of
hack/cluster.sh, no stand-in): the node is Ready, the workload runs, and the kubelet
serves every endpoint kubelet-scope filters, over TLS at the node IP, to a real
ServiceAccount token with the read permissions and to no other."""

import json
import re
import subprocess
import time

import pytest

import stack
from conftest import WORKLOAD_NAMESPACES

ENDPOINTS = [
    "/metrics",
    "/metrics/cadvisor",
    "/metrics/resource",
    "/metrics/probes",
    "/stats/summary",
    "/pods",
]


def test_node_is_ready(cluster):
    node = cluster.get(f"/api/v1/nodes/{cluster.node_name}")
    ready = [c for c in node["status"]["conditions"] if c["type"] == "Ready"]
    assert ready and ready[0]["status"] == "True", node["status"]["conditions"]
    addresses = {a["type"]: a["address"] for a in node["status"]["addresses"]}
    assert addresses["InternalIP"] == cluster.node_ip


def test_no_way_out_of_the_namespace(cluster):
    """The tests run in the cluster's network namespace (as everything of it does):
    no default route, and only its own links (the node's veth pair, the pods'
    bridge and their veths)."""

    def ip(*args):
        out = subprocess.run(["ip", "-j", *args], check=True, capture_output=True).stdout
        return json.loads(out or b"[]")

    assert ip("-4", "route", "show", "default") == []
    assert ip("-6", "route", "show", "default") == []
    names = {link["ifname"] for link in ip("link", "show")}
    assert {"lo", "node0", "node0-peer", "kscope0"} <= names, names
    assert all(n in ("lo", "node0", "node0-peer", "kscope0") or n.startswith("veth") for n in names)
    # the pods' veths lead into the pods' own namespaces, nowhere else
    for link in ip("-d", "link", "show"):
        if link["ifname"].startswith("veth"):
            assert link.get("master") == "kscope0", link


def test_workload_namespaces_and_labels(cluster):
    for name, tenant in WORKLOAD_NAMESPACES.items():
        labels = cluster.get(f"/api/v1/namespaces/{name}")["metadata"].get("labels", {})
        assert labels.get("tenant") == tenant, (name, labels)


def test_every_pod_is_running(cluster):
    pods = cluster.pods()
    assert {p["metadata"]["namespace"] for p in pods} >= set(WORKLOAD_NAMESPACES)
    not_running = [
        (p["metadata"]["namespace"], p["metadata"]["name"], p["status"].get("phase"))
        for p in pods
        if p["status"].get("phase") != "Running"
    ]
    assert not not_running
    # the Deployments' and the DaemonSet's pods carry a real ServiceAccount token
    for p in pods:
        if p["metadata"]["namespace"] in WORKLOAD_NAMESPACES:
            assert p["spec"]["serviceAccountName"] == "workload"
            assert any(v.get("secret") for v in p["spec"]["volumes"]), p["metadata"]["name"]


@pytest.mark.parametrize("path", ENDPOINTS)
def test_kubelet_serves_a_bound_token(cluster, tokens, path):
    r = cluster.kubelet(path, tokens["reader"])
    assert r.status == 200, r
    assert r.body


@pytest.mark.parametrize("path", ENDPOINTS)
def test_kubelet_forbids_a_token_without_the_binding(cluster, tokens, path):
    r = cluster.kubelet(path, tokens["nobody"])
    assert r.status == 403, r


def test_kubelet_refuses_no_token(cluster):
    assert cluster.kubelet("/metrics/cadvisor").status == 401


def test_kubelet_certificate_names_the_node_ip(cluster, tokens):
    # request() verifies the chain against the test CA and the node IP as host name;
    # 127.0.0.1 is in the certificate too, a name it does not carry is refused
    assert cluster.kubelet("/healthz", tokens["reader"]).status == 200
    with pytest.raises(stack.ssl.SSLCertVerificationError):
        stack.request(
            cluster.kubelet_port,
            "/healthz",
            tls_ca=cluster.ca,
            host="localhost",
        )


def cpu_usage(body):
    """container_cpu_usage_seconds_total of the workload's containers, by (ns, pod)."""
    found = {}
    for line in body.decode().splitlines():
        if line.startswith("container_cpu_usage_seconds_total{") and 'container="burner"' in line:
            ns = re.search(r'namespace="([^"]*)"', line).group(1)
            pod = re.search(r'pod="([^"]*)"', line).group(1)
            found[(ns, pod)] = float(line.rsplit(" ", 2)[1])
    return found


def test_cadvisor_series_change_between_scrapes(cluster, tokens):
    first = cpu_usage(cluster.kubelet("/metrics/cadvisor", tokens["reader"]).body)
    assert first, "no container_cpu_usage_seconds_total of the workload"
    deadline = time.monotonic() + 40  # cadvisor's housekeeping runs every 10-15 s
    while time.monotonic() < deadline:
        time.sleep(3)
        later = cpu_usage(cluster.kubelet("/metrics/cadvisor", tokens["reader"]).body)
        changed = [k for k in first if k in later and later[k] > first[k]]
        if changed:
            return
    raise AssertionError(f"no workload CPU series changed in 40 s: {first}")


@pytest.mark.parametrize("path", ENDPOINTS[1:])
def test_every_workload_namespace_has_data(cluster, tokens, path):
    body = cluster.kubelet(path, tokens["reader"]).body
    if path.startswith("/metrics"):
        found = set(stack.series_namespaces(body))
    else:
        found = set(stack.json_namespaces(path, body))
    assert found >= set(WORKLOAD_NAMESPACES), sorted(n for n in found if n)


def test_kubelet_restart_recovers(cluster, tokens):
    """Last in this file: the kubelet restarted as the fault tests will restart it; it
    serves again, and /pods lists the workload again (it answers "items": null for a
    few seconds after a restart)."""
    cluster.restart("kubelet")

    def pods_listed():
        r = cluster.kubelet("/pods", tokens["reader"], timeout=5)
        return r.status == 200 and set(stack.json_namespaces("/pods", r.body)) >= set(
            WORKLOAD_NAMESPACES
        )

    stack.wait_for("the restarted kubelet's /pods", pods_listed, timeout=60, interval=0.5)
    assert cluster.kubelet("/metrics/cadvisor", tokens["reader"]).status == 200
