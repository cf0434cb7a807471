"""Tenants in virtual clusters, through the DaemonSet's Envoy as it ships: its
:10445 listener checks each token with Envoy's ext_authz against the control plane
(the Deployment's own arguments), which reviews it with the apiserver that issued it.

World: the host is test_daemonset's real apiserver; two more real kube-apiservers,
each with its own etcd, service-account signing key and issuer, play the apiservers
of the virtual clusters k8s1 (issuer of its own) and k8s2 (vcluster's default: the
same issuer as the host). Agents' tokens come from their TokenRequest APIs. The
kubelet stand-in serves a body with series of both virtual clusters' host namespaces
(vcluster-k8s1, vcluster-k8s2) and of host tenants; the host pods behind them exist
in the host apiserver as vcluster's syncer makes them (name, labels, annotations
naming the virtual pod, which exists in the virtual cluster's apiserver), so the
control plane's pod watch gives the filter their virtual names. The real-cluster
tests (envoy/cluster/test_real_virtual_clusters.py) run such pods for real.

Every test's name carries `virtual` or `vcluster` (other checks select them so).
"""

import base64
import json
import os
import subprocess
import time

import pytest
import test_daemonset
from test_daemonset import daemonset_stack, daemonset_token

import stack
from conftest import WORK

K8S1_ISSUER = "https://k8s1.vcluster-k8s1.svc"
AUDIENCE = "kubelet-scope"
FIXTURE = "vcluster-probes.txt"
VIRTUAL = {"x-standin-fixture": FIXTURE}
# The control plane's positive cache in these tests, and the apiserver's own.
CACHE_SECONDS = 2
APISERVER_CACHE_SECONDS = 10
# Host names as vcluster's syncer makes them: <name>-x-<namespace>-x-<vcluster>.
SERIES = {
    "vcluster-k8s1": "web-1-x-shop-x-k8s1",
    "vcluster-k8s2": "api-0-x-shop-x-k8s2",
    "default": "datadog-t9f28",
    "kube-system": "kube-dns-c598bd956-wgf4n",
}
# The virtual pods behind the host pods of SERIES: (cluster, namespace, name).
VIRTUAL_PODS = {
    "vcluster-k8s1": ("k8s1", "shop", "web-1"),
    "vcluster-k8s2": ("k8s2", "shop", "api-0"),
}
# A pod of k8s1 whose host pod the test creates later.
LATE = ("vcluster-k8s1", "late-0-x-shop-x-k8s1")


def probes_body():
    lines = [
        "# HELP prober_probe_total Cumulative number of a probe for a container by result.",
        "# TYPE prober_probe_total counter",
    ]
    for namespace, pod in [*SERIES.items(), LATE]:
        lines.append(
            f'prober_probe_total{{container="c",namespace="{namespace}",pod="{pod}",'
            f'pod_uid="0",probe_type="Liveness",result="successful"}} 1'
        )
    return "\n".join(lines) + "\n"


def reissue(api, token, **changes):
    """`token`'s claims with `changes`, signed again with the cluster's own key: what
    its apiserver would have issued with them (an exp TokenRequest does not allow)."""

    def b64(data):
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    header, payload, _ = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    signed = f"{header}.{b64(json.dumps({**claims, **changes}).encode())}"
    sig = subprocess.run(
        ["openssl", "dgst", "-sha256", "-sign", api.dir / "sa.key"],
        input=signed.encode(),
        capture_output=True,
        check=True,
    ).stdout
    return f"{signed}.{b64(sig)}"


def get(s, token, headers=None, path="/metrics/probes"):
    h = {**VIRTUAL, **(headers or {})}
    if token:
        h["authorization"] = "Bearer " + token
    return stack.request(s.ports["virtual"], path, h, tls_ca=s.kubelet_cert)


def namespaces(r):
    return set(stack.series_namespaces(r.body))


def sync(api, host, host_namespace, namespace, name):
    """What vcluster's syncer does for a new pod: the virtual pod in the virtual
    cluster's apiserver, its host pod (on the stack's node) in the host's."""
    cluster = host_namespace.removeprefix("vcluster-")
    api.label_namespace(namespace, {})
    pod = {"metadata": {"name": name}, "spec": {"containers": [{"name": "c", "image": "x"}]}}
    uid = json.loads(api.create(f"/api/v1/namespaces/{namespace}/pods", pod))["metadata"]["uid"]
    synced = stack.synced_pod(host_namespace, cluster, name, namespace, uid, stack.NODE)
    host.create(f"/api/v1/namespaces/{host_namespace}/pods", synced)
    return uid


@pytest.fixture(scope="module")
def virtual_clusters(daemonset_apiserver):
    """The two virtual clusters' apiservers, each with its agent's ServiceAccount;
    their host namespaces labelled with their tenant on the host."""
    apis = {}
    try:
        for name, issuer in (("k8s1", K8S1_ISSUER), ("k8s2", None)):
            api = stack.Apiserver(stack.clean_dir(WORK / f"vcluster-{name}-apiserver"), issuer)
            apis[name] = api
            api.service_account("datadog", "agent")
            daemonset_apiserver.label_namespace(f"vcluster-{name}", {"tenant": name})
        for host_namespace, (name, namespace, pod) in VIRTUAL_PODS.items():
            sync(apis[name], daemonset_apiserver, host_namespace, namespace, pod)
        daemonset_apiserver.service_account("acme-monitoring", "prometheus")
        yield apis
    finally:
        for api in apis.values():
            api.stop()


@pytest.fixture(scope="module")
def virtual_stack(daemonset_apiserver, virtual_clusters):
    workdir = stack.clean_dir(WORK / "vcluster-daemonset")
    body = workdir / FIXTURE
    body.write_text(probes_body())
    listed = workdir / "virtual-clusters.yaml"
    listed.write_text(
        json.dumps(
            {
                "virtualClusters": [
                    {
                        "name": name,
                        "hostNamespace": f"vcluster-{name}",
                        "kubeconfigFile": str(api.kubeconfig()),
                    }
                    for name, api in virtual_clusters.items()
                ]
            }
        )
    )
    with daemonset_stack(
        daemonset_apiserver,
        workdir,
        daemonset_token(daemonset_apiserver),
        virtual_clusters=listed,
        more_control_plane_args=[f"--authz-cache-seconds={CACHE_SECONDS}"],
        standin_args=["--extra-fixture", f"{FIXTURE}={body}"],
    ) as s:
        agent = virtual_clusters["k8s1"].token("datadog", "agent", AUDIENCE)
        stack.wait_for(
            "k8s1's agent served (snapshot, credentials, issuers)",
            lambda: get(s, agent).status == 200,
            timeout=60,
        )
        yield s


def test_a_virtual_clusters_agent_sees_its_pods_under_virtual_names(
    virtual_stack, virtual_clusters
):
    s = virtual_stack
    for name, other in (("k8s1", "k8s2"), ("k8s2", "k8s1")):
        token = virtual_clusters[name].token("datadog", "agent", AUDIENCE)
        r = get(s, token)
        assert r.status == 200, (name, r)
        _, namespace, pod = VIRTUAL_PODS[f"vcluster-{name}"]
        assert namespaces(r) == {namespace}, (name, r.text)
        assert f'namespace="{namespace}",pod="{pod}"' in r.text, (name, r.text)
        assert "-x-" not in r.text and "vcluster-" not in r.text, (name, r.text)
        assert VIRTUAL_PODS[f"vcluster-{other}"][2] not in r.text
        # Copies of the headers the control plane sets, sent by the client, change
        # nothing: k8s2 never sees k8s1's pods.
        spoofed = get(
            s,
            token,
            {
                "x-kubelet-scope-namespace": f"vcluster-{other}",
                "x-kubelet-scope-tenant": other,
                "x-kubelet-scope-host-namespace": f"vcluster-{other}",
            },
        )
        assert spoofed.body == r.body, name
    # The kubelet got the DaemonSet's token and none of the tenant headers.
    for seen in s.kubelet_requests()[-4:]:
        headers = dict(seen["headers"])
        assert headers["authorization"] == "Bearer " + stack.NODE_TOKEN
        assert not [h for h in headers if h.startswith("x-kubelet-scope")], headers


def test_a_virtual_pod_is_shown_once_its_host_pod_is_synced(
    virtual_stack, virtual_clusters, daemonset_apiserver
):
    """A series of a host pod the control plane does not know yet is dropped (fail
    closed); once the syncer has made the pod, it is shown within 2 s."""
    token = virtual_clusters["k8s1"].token("datadog", "agent", AUDIENCE)
    r = get(virtual_stack, token)
    assert r.status == 200 and "late-0" not in r.text, r.text
    start = time.monotonic()
    sync(virtual_clusters["k8s1"], daemonset_apiserver, LATE[0], "shop", "late-0")
    stack.wait_for(
        "the new pod's series for k8s1",
        lambda: 'pod="late-0"' in get(virtual_stack, token).text,
        timeout=5,
    )
    took = time.monotonic() - start
    print(f"host pod created → its series shown to its virtual cluster: {took:.2f} s")
    assert took <= 2.0, took


def test_host_tokens_still_work_on_the_virtual_listener(virtual_stack, daemonset_apiserver):
    token = daemonset_apiserver.token("acme-monitoring", "prometheus", AUDIENCE)
    r = get(virtual_stack, token)
    assert r.status == 200, r
    assert namespaces(r) == {"default"}, r.text
    # The same account's token for the apiserver is not one for the kubelet proxy.
    other = daemonset_apiserver.token(
        "acme-monitoring", "prometheus", "https://kubernetes.default.svc"
    )
    assert get(virtual_stack, other).status == 401


def test_tokens_no_virtual_or_host_cluster_accepts_get_401(virtual_stack, virtual_clusters):
    s = virtual_stack
    agent = virtual_clusters["k8s1"].token("datadog", "agent", AUDIENCE)
    stranger = reissue(virtual_clusters["k8s1"], agent, iss="https://unknown.example")
    expired = reissue(virtual_clusters["k8s1"], agent, exp=int(time.time()) - 5)
    # Signed with the stack's test key, claiming k8s1: k8s1's apiserver refuses it.
    forged = stack.sign_jwt({"iss": K8S1_ISSUER, "aud": [AUDIENCE], "sub": "x"})
    before = len(s.kubelet_requests())
    for case, token in (
        ("no token", None),
        ("unknown issuer", stranger),
        ("expired", expired),
        ("forged", forged),
        ("not a JWT", "admin-token"),
    ):
        r = get(s, token)
        assert r.status == 401, (case, r)
        assert r.header("www-authenticate") == "Bearer", case
        assert b"prober_probe_total" not in r.body, case
    assert len(s.kubelet_requests()) == before, "a refused request reached the kubelet"


def test_a_deleted_virtual_serviceaccounts_token_is_refused_within_the_cache_bound(
    virtual_stack, virtual_clusters
):
    api = virtual_clusters["k8s2"]
    api.service_account("datadog", "short-lived")
    token = api.token("datadog", "short-lived", AUDIENCE)
    assert get(virtual_stack, token).status == 200
    status, body = api.call(
        "DELETE", "/api/v1/namespaces/datadog/serviceaccounts/short-lived", {}, "application/json"
    )
    assert status == 200, body
    deleted = time.monotonic()
    bound = CACHE_SECONDS + APISERVER_CACHE_SECONDS + 3
    stack.wait_for(
        "the deleted account's token refused",
        lambda: get(virtual_stack, token).status == 401,
        timeout=bound,
    )
    print(f"refused {time.monotonic() - deleted:.1f} s after the deletion (bound {bound} s)")


def test_virtual_listener_latency_cached_and_without_the_control_plane(
    virtual_stack, virtual_clusters
):
    """Not a benchmark: what the check adds per request, printed; then, the control
    plane gone, the listener fails closed with 503 (failure_mode_allow: false)."""
    s = virtual_stack
    api = virtual_clusters["k8s1"]
    agent = api.token("datadog", "agent", AUDIENCE)

    def timed(request):
        start = time.perf_counter()
        assert request().status == 200
        return (time.perf_counter() - start) * 1000

    def median(request):
        return sorted(timed(request) for _ in range(31))[15]

    # Each request on a fresh TLS connection, as stack.request makes them.
    jwt_authn = median(
        lambda: test_daemonset.get(s, "tenant", "/metrics/probes", "acme-monitoring", VIRTUAL)
    )
    cached = median(lambda: get(s, agent))
    fresh = iter(reissue(api, agent, jti=f"t{i}") for i in range(31))
    uncached = median(lambda: get(s, next(fresh)))
    print(
        f"/metrics/probes over a new TLS connection, median of 31: :10443 (jwt_authn) "
        f"{jwt_authn:.1f} ms; :10445 (ext_authz) cached {cached:.1f} ms, "
        f"new token (one TokenReview) {uncached:.1f} ms"
    )
    s.stop_process("control-plane")
    fresh = reissue(api, agent, jti="after")
    r = get(s, fresh)
    assert r.status == 503, r
    assert b"prober_probe_total" not in r.body


def test_the_virtual_cluster_example_is_valid_and_accepted(daemonset_apiserver, virtual_clusters):
    """deploy/examples/virtual-cluster.yaml (its Role, RoleBinding and ConfigMap):
    the Kubernetes schema, strictly, and a server-side dry run on the host, where
    its namespace vcluster-k8s1 exists (the file's list itself is parsed by the
    control plane's unit tests)."""
    example = stack.REPO / "deploy" / "examples" / "virtual-cluster.yaml"
    r = subprocess.run(
        [stack.VENV / "bin" / "kubernetes-validate", "--strict", "--quiet", example],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    env = {**os.environ, "KUBECONFIG": str(daemonset_apiserver.kubeconfig())}
    r = subprocess.run(
        ["kubectl", "apply", "--server-side", "--dry-run=server", "-f", example],
        capture_output=True,
        text=True,
        env=env,
    )
    assert r.returncode == 0, r.stdout + r.stderr
