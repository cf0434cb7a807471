"""Fixtures of the real-cluster tests (envoy/cluster/): the cluster that
`hack/cluster.sh start DIR` brought up, found through CLUSTER_DIR (`make cluster-test`
sets it and runs pytest in the cluster's network namespace).

The harness is envoy/e2e/stack.py's (`stack.Cluster`), as for every test of envoy/.
`captures` (session, automatic) writes every endpoint of the real kubelet into
stack.OWN_CAPTURES (target/cluster/captures), the project's own bodies that the
fixture tests read (testdata/README.md)."""

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))

import stack  # noqa: E402

# Where the real-cluster tests' stacks keep their files (test_daemonset's helpers,
# imported by them, read it from `conftest`).
WORK = Path(os.environ.get("KUBELET_SCOPE_CLUSTER_E2E_DIR", stack.REPO / "target" / "cluster-e2e"))
# The kubelet paths and the captures' names (testdata/README.md's prefixes).
CAPTURES = {
    "/metrics": "kubelet-metrics-k8s1.20-cluster.txt",
    "/metrics/cadvisor": "cadvisor-k8s1.20-cluster.txt",
    "/metrics/resource": "resource-k8s1.20-cluster.txt",
    "/metrics/probes": "probes-k8s1.20-cluster.txt",
    "/stats/summary": "stats-summary-k8s1.20-cluster.json",
    "/pods": "pods-k8s1.20-cluster.json",
}

# hack/cluster/workload.yaml's namespaces, by tenant (None: no tenant label).
WORKLOAD_NAMESPACES = {
    "acme-web": "acme",
    "acme-batch": "acme",
    "globex": "globex",
    "shared-tools": None,
    "kube-system": None,
}
# What the kubelet's authorizer asks for on the read endpoints
# (deploy/base/kubelet-proxy.yaml's ClusterRole).
READER_RULES = [
    {
        "apiGroups": [""],
        "resources": ["nodes/metrics", "nodes/stats", "nodes/proxy"],
        "verbs": ["get"],
    }
]
TEST_NAMESPACE = "scope-smoke"


@pytest.fixture(scope="session")
def cluster():
    directory = os.environ.get("CLUSTER_DIR")
    if not directory:
        pytest.skip("CLUSTER_DIR is not set: run `make cluster-test` (real cluster tests)")
    env = Path(directory) / "env"
    assert env.exists(), f"{env} is missing: is the cluster of {directory} started?"
    return stack.Cluster(directory)


@pytest.fixture(scope="session")
def tokens(cluster):
    """Real ServiceAccount tokens (TokenRequest): `reader` bound to a ClusterRole with
    the kubelet read permissions, `nobody` without any binding."""
    cluster.ensure("/api/v1/namespaces", {"metadata": {"name": TEST_NAMESPACE}})
    rbac = "/apis/rbac.authorization.k8s.io/v1"
    cluster.ensure(
        f"{rbac}/clusterroles", {"metadata": {"name": "scope-smoke-reader"}, "rules": READER_RULES}
    )
    cluster.ensure(
        f"{rbac}/clusterrolebindings",
        {
            "metadata": {"name": "scope-smoke-reader"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "scope-smoke-reader",
            },
            "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": TEST_NAMESPACE}],
        },
    )
    return {
        "reader": cluster.service_account_token(TEST_NAMESPACE, "reader"),
        "nobody": cluster.service_account_token(TEST_NAMESPACE, "nobody"),
    }


@pytest.fixture(scope="session", autouse=True)
def captures(request):
    """Every endpoint of the real kubelet, captured once per run into
    stack.OWN_CAPTURES (skipped where no cluster runs)."""
    if not os.environ.get("CLUSTER_DIR"):
        return None
    c = request.getfixturevalue("cluster")
    token = request.getfixturevalue("tokens")["reader"]
    stack.OWN_CAPTURES.mkdir(parents=True, exist_ok=True)

    def listed():
        r = c.kubelet("/pods", token, timeout=10)
        return r.status == 200 and set(stack.json_namespaces("/pods", r.body)) >= set(
            WORKLOAD_NAMESPACES
        )

    stack.wait_for("the kubelet to list the workload", listed, timeout=60, interval=0.5)
    written = {}
    for path, name in CAPTURES.items():
        r = c.kubelet(path, token)
        assert r.status == 200 and r.body, (path, r)
        tmp = stack.OWN_CAPTURES / f".{name}.tmp"
        tmp.write_bytes(r.body)
        tmp.replace(stack.OWN_CAPTURES / name)
        written[path] = stack.OWN_CAPTURES / name
    return written
