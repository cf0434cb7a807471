"""Fixtures of the real-cluster tests (envoy/cluster/): the cluster that
`hack/cluster.sh start DIR` brought up, found through CLUSTER_DIR (`make cluster-test`
sets it and runs pytest in the cluster's network namespace).

The harness is envoy/e2e/stack.py's (`stack.Cluster`), as for every test of envoy/.
`captures` (session, automatic) writes every endpoint of the real kubelet into
stack.OWN_CAPTURES (target/cluster/captures), the project's own bodies that the
fixture tests read (testdata/README.md)."""

import contextlib
import json
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))

import stack  # noqa: E402

# Where the real-cluster tests' stacks keep their files (test_daemonset's helpers,
# imported by them, read it from `conftest`).
WORK = Path(os.environ.get("KUBELET_SCOPE_CLUSTER_E2E_DIR", stack.REPO / "target" / "cluster-e2e"))
# After WORK: test_daemonset reads it from here.
import test_daemonset as shipped  # noqa: E402
from real_world import (  # noqa: E402
    SCRAPERS,
    SHIPPED_ISSUER,
    World,
    wait_serving,
)
from recording_hop import RecordingHop  # noqa: E402

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


# --- the real-cluster Envoy tests' worlds (real_world.py) ---------------------------


@pytest.fixture(scope="session")
def real(cluster):
    """The manifest's ClusterRole and binding applied, and the real tokens: the
    kubelet's (kubelet-proxy, the apiserver's audience), the control plane's
    (kubelet-proxy, the DaemonSet's second audience), one of an unbound account of
    the same namespace; the apiserver's JWKS and issuer."""
    cluster.ensure("/api/v1/namespaces", {"metadata": {"name": "kubelet-scope"}})
    rbac = "/apis/rbac.authorization.k8s.io/v1"
    role = shipped.manifest("ClusterRole", "kubelet-proxy")
    binding = shipped.manifest("ClusterRoleBinding", "kubelet-proxy")
    cluster.ensure(f"{rbac}/clusterroles", role)
    cluster.ensure(f"{rbac}/clusterrolebindings", binding)
    assert cluster.get(f"{rbac}/clusterroles/kubelet-proxy")["rules"] == role["rules"]
    subjects = cluster.get(f"{rbac}/clusterrolebindings/kubelet-proxy")["subjects"]
    assert subjects == [
        {"kind": "ServiceAccount", "name": "kubelet-proxy", "namespace": "kubelet-scope"}
    ]
    issuer = cluster.get("/.well-known/openid-configuration")["issuer"]
    jwks = cluster.get("/openid/v1/jwks")
    assert jwks["keys"] and all(k["kty"] == "RSA" for k in jwks["keys"]), jwks
    return {
        "kubelet": cluster.service_account_token("kubelet-scope", "kubelet-proxy"),
        "control_plane": cluster.service_account_token(
            "kubelet-scope", "kubelet-proxy", [shipped.CONTROL_PLANE_AUDIENCE]
        ),
        "unbound": cluster.service_account_token("kubelet-scope", "prometheus"),
        "issuer": issuer,
        "jwks": jwks,
    }


@contextlib.contextmanager
def daemonset_world(cluster, real, name, virtual_clusters=None, more_args=()):
    """The shipped DaemonSet configuration in front of the real kubelet (through a
    recording hop) and the control plane of the shipped Deployment's arguments (and
    `more_args`), its virtual clusters those of the file `virtual_clusters`
    (default: the shipped list); Envoy's node id is the node's name, as the
    DaemonSet sets it."""
    workdir = stack.clean_dir(WORK / name)
    ca, cert, key = stack.issue_certificate(
        workdir, "control-plane", f"DNS:{shipped.SERVICE},IP:127.0.0.1"
    )
    # Where the control plane answers ext_authz, and Envoy's :10445 asks.
    authz_port = stack.free_port()
    hop = RecordingHop(
        cluster.env["KUBELET_CERT"],
        cluster.env["KUBELET_KEY"],
        cluster.ca,
        cluster.node_ip,
        cluster.kubelet_port,
    )

    def render(s):
        s.ports["kubelet"] = hop.port
        text = shipped.local_daemonset_config(s, real["control_plane"], ca, authz_port)
        (s.dir / "kubelet-proxy-token" / "token").write_text(real["kubelet"])
        (s.dir / "jwks.json").write_text(json.dumps(real["jwks"]))
        upstream_ca = f"trusted_ca: {{ filename: {s.kubelet_cert} }}"
        assert text.count(upstream_ca) == 1, "the kubelet cluster's CA is no longer mapped"
        text = text.replace(upstream_ca, f"trusted_ca: {{ filename: {cluster.ca} }}")
        # hack/cluster.sh's apiserver issues kubeadm's default, the shipped issuer
        assert real["issuer"] == SHIPPED_ISSUER, real["issuer"]
        return text

    with hop:
        s = stack.Stack(
            workdir,
            kubeconfig=cluster.env["ADMIN_KUBECONFIG"],
            control_plane_args=[
                *shipped.control_plane_args(cert, key, authz_port, virtual_clusters),
                *more_args,
            ],
            control_plane_ca=ca,
            render=render,
            standin=False,
            node=cluster.node_name,
        )
        with s:
            world = World("daemonset", s, cluster, hop)
            for tenant in SCRAPERS:
                wait_serving(world, tenant)
            yield world


@pytest.fixture(scope="session")
def daemonset(cluster, real):
    with daemonset_world(cluster, real, "daemonset") as world:
        yield world


@pytest.fixture(scope="session")
def local(cluster, real):
    workdir = stack.clean_dir(WORK / "local")

    def render(s):
        (s.dir / "node-token").write_text(real["kubelet"])
        values = s.envoy_values()
        values.update(KUBELET_PORT=cluster.kubelet_port, KUBELET_CA_FILE=cluster.ca)
        return stack.render_envoy_config(values)

    s = stack.Stack(
        workdir,
        kubeconfig=cluster.env["ADMIN_KUBECONFIG"],
        render=render,
        standin=False,
        node=cluster.node_name,
    )
    with s:
        world = World("local", s, cluster)
        for tenant in SCRAPERS:
            wait_serving(world, tenant)
        yield world


@pytest.fixture(scope="module", params=["daemonset", "local"])
def world(request):
    return request.getfixturevalue(request.param)
