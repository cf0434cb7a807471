"""Fixtures of the real-cluster tests (envoy/cluster/): the cluster that
`hack/cluster.sh start DIR` brought up, found through CLUSTER_DIR (`make cluster-test`
sets it and runs pytest in the cluster's network namespace).

The harness is envoy/e2e/stack.py's (`stack.Cluster`), as for every test of envoy/."""

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))

import stack  # noqa: E402

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
