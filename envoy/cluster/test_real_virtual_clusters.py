"""Tenants in virtual clusters on the real node. World: hack/cluster.sh's real
kubelet, containerd and apiserver; two more real kube-apiservers (each its own etcd,
service-account key and issuer; k8s2's issuer is the host's, vcluster's default)
play the virtual clusters k8s1 and k8s2. Their pods run on the real node as vcluster's
syncer runs them: a pod made in the virtual apiserver, its host pod in the host
namespace vcluster-<cluster>, named <name>-x-<namespace>-x-<cluster>, labelled and
annotated with the virtual pod's name, namespace and UID. Both clusters have a pod
`shop/web-1`, so only UIDs tell them apart.

Through the shipped DaemonSet configuration's :10445 listener (ext_authz to the
control plane, which reviews each token with the apiserver that issued it and
watches the synced pods), each agent's token sees its own pods only, under virtual
names, in text and JSON; the filter's output equals `kubelet-scope rewrite
--virtual-cluster` on the kubelet's bytes the recording hop saw.

Every test's name carries `virtual` or `vcluster` (other checks select them so)."""

import json
import subprocess
import time

import pytest
from real_world import TENANT_AUDIENCE
from test_real_envoy import shipped_plugin_config
from test_virtual_clusters import reissue

import stack
from conftest import WORK, daemonset_world

K8S1_ISSUER = "https://k8s1.vcluster-k8s1.svc"
# The pods of each virtual cluster (namespace, name); both have shop/web-1.
PODS = {"k8s1": [("shop", "web-1"), ("data", "db-0")], "k8s2": [("shop", "web-1")]}
PATHS = ["/metrics/cadvisor", "/metrics/resource", "/stats/summary", "/pods"]
CACHE_SECONDS = 2
APISERVER_CACHE_SECONDS = 10


class VirtualCluster:
    def __init__(self, name, api):
        self.name, self.api = name, api
        self.host_namespace = f"vcluster-{name}"
        # (namespace, name) -> virtual UID; host name -> (namespace, name)
        self.uids, self.hosts = {}, {}

    def token(self, account="agent"):
        return self.api.token("datadog", account, TENANT_AUDIENCE)


def sync(cluster, vc, namespace, name):
    """What vcluster's syncer does for a new pod: the virtual pod, then its host pod
    on the real node (busybox sleeping), labelled and annotated as the syncer does."""
    vc.api.label_namespace(namespace, {})
    pod = {"metadata": {"name": name}, "spec": {"containers": [{"name": "c", "image": "x"}]}}
    created = vc.api.create(f"/api/v1/namespaces/{namespace}/pods", pod)
    uid = json.loads(created)["metadata"]["uid"]
    host = stack.synced_pod(
        vc.host_namespace, vc.name, name, namespace, uid, cluster.node_name,
        image="localhost/busybox:kscope",
    )  # fmt: skip
    host["spec"]["containers"][0]["imagePullPolicy"] = "Never"
    path = f"/api/v1/namespaces/{vc.host_namespace}/pods"
    # The namespace's default ServiceAccount comes a moment after the namespace.
    stack.wait_for(
        "the host pod created",
        lambda: cluster.api("POST", path, host)[0] == 201,
        timeout=30,
        interval=0.3,
    )
    vc.uids[(namespace, name)] = uid
    vc.hosts[host["metadata"]["name"]] = (namespace, name)
    return host["metadata"]["name"]


def running(cluster, namespace, name):
    status, pod = cluster.api("GET", f"/api/v1/namespaces/{namespace}/pods/{name}")
    return status == 200 and pod["status"].get("phase") == "Running"


@pytest.fixture(scope="module")
def vclusters(cluster):
    apis = {}
    try:
        host_issuer = cluster.env["SA_ISSUER"]
        for name, issuer in (("k8s1", K8S1_ISSUER), ("k8s2", host_issuer)):
            workdir = stack.clean_dir(WORK / f"vcluster-{name}-apiserver")
            api = stack.Apiserver(workdir, issuer, advertise="127.0.0.1")
            apis[name] = VirtualCluster(name, api)
            api.service_account("datadog", "agent")
            cluster.ensure("/api/v1/namespaces", {"metadata": {"name": f"vcluster-{name}"}})
        for name, pods in PODS.items():
            for namespace, pod in pods:
                sync(cluster, apis[name], namespace, pod)
        for vc in apis.values():
            for host in vc.hosts:
                stack.wait_for(
                    f"{host} running",
                    lambda vc=vc, host=host: running(cluster, vc.host_namespace, host),
                    timeout=90,
                    interval=0.5,
                )
        yield apis
    finally:
        for vc in apis.values():
            vc.api.stop()
            # Their host pods go too (a later run makes its own).
            path = f"/api/v1/namespaces/{vc.host_namespace}/pods"
            cluster.api("DELETE", f"{path}?gracePeriodSeconds=0", {})


@pytest.fixture(scope="module")
def virtual_world(cluster, real, vclusters):
    listed = WORK / "vcluster-list.yaml"
    listed.write_text(
        json.dumps(
            {
                "virtualClusters": [
                    {
                        "name": name,
                        "hostNamespace": vc.host_namespace,
                        "kubeconfigFile": str(vc.api.kubeconfig()),
                    }
                    for name, vc in vclusters.items()
                ]
            }
        )
    )
    more = [f"--authz-cache-seconds={CACHE_SECONDS}"]
    with daemonset_world(
        cluster, real, "vcluster-daemonset", virtual_clusters=listed, more_args=more
    ) as world:
        token = vclusters["k8s1"].token()

        def served():
            r = world.get("/metrics/resource", token=token, listener="virtual")
            served.last = r
            return 'pod="web-1"' in r.text

        try:
            stack.wait_for(
                "k8s1's pods under their virtual names", served, timeout=60, interval=0.5
            )
        except TimeoutError:
            print("last answer:", served.last, served.last.headers)
            print("snapshot:", world.snapshot(real["control_plane"], cluster.node_name)[:2000])
            print("kubelet:", cluster.kubelet("/metrics/resource", real["kubelet"]).text[-3000:])
            for name in ("control-plane", "envoy"):
                print(name, world.s.processes[name].tail(40))
            raise
        yield world


def items(path, body):
    """(namespace, name, uid) of each pod a JSON body lists."""
    doc = json.loads(body)
    if path == "/stats/summary":
        refs = [p["podRef"] for p in doc.get("pods") or []]
    else:
        refs = [i["metadata"] for i in doc.get("items") or []]
    return {(r["namespace"], r["name"], r.get("uid")) for r in refs}


def series_pods(body):
    """(namespace, pod) of each series line with both labels."""
    found = set()
    for line in body.decode().splitlines():
        ns = stack.line_namespace(line)
        if ns is None:
            continue
        pod = line.split('pod="', 1)[1].split('"', 1)[0] if 'pod="' in line else None
        found.add((ns, pod))
    return found


@pytest.mark.parametrize("path", PATHS)
def test_a_vcluster_agent_sees_its_pods_only_under_virtual_names(virtual_world, vclusters, path):
    for name, vc in vclusters.items():
        r = virtual_world.get(path, token=vc.token(), listener="virtual")
        assert r.status == 200, (name, path, r)
        assert b"-x-" not in r.body and b"vcluster-k8s" not in r.body.replace(
            b"vcluster.loft.sh/", b""
        ), (name, path)
        want = {(ns, pod) for ns, pod in PODS[name]}
        if path.startswith("/metrics"):
            seen = series_pods(r.body)
            assert seen == want, (name, path, seen)
        else:
            seen = items(path, r.body)
            assert seen == {(ns, pod, vc.uids[(ns, pod)]) for ns, pod in want}, (name, path)
    # k8s1 and k8s2 both have shop/web-1: each sees its own UID only.
    one, two = (vclusters[n].uids[("shop", "web-1")] for n in ("k8s1", "k8s2"))
    body = virtual_world.get("/pods", token=vclusters["k8s2"].token(), listener="virtual").body
    assert one.encode() not in body and two.encode() in body


@pytest.mark.parametrize("path", PATHS)
def test_virtual_envoy_output_is_the_clis_on_the_same_upstream_bytes(
    virtual_world, vclusters, real, tmp_path, path
):
    """The filter in Envoy and `kubelet-scope rewrite --virtual-cluster` agree byte for
    byte on what the kubelet sent, with the shipped :10445 configuration and the
    control plane's snapshot for this node."""
    config = tmp_path / "virtual.json"
    config.write_text(shipped_plugin_config("kubelet-scope-virtual"))
    snapshot = tmp_path / "snapshot.json"
    node = virtual_world.cluster.node_name
    for name, vc in vclusters.items():
        before = virtual_world.snapshot(real["control_plane"], node)
        r = virtual_world.get(path, token=vc.token(), listener="virtual")
        upstream = virtual_world.hop.last(path)
        after = virtual_world.snapshot(real["control_plane"], node)
        assert r.status == 200 and upstream.status == 200
        assert json.loads(before)["virtualPods"] == json.loads(after)["virtualPods"]
        snapshot.write_bytes(after)
        argv = [stack.CLI, "rewrite", "--config", config, "--snapshot", snapshot]
        argv += ["--path", path, "--virtual-cluster", name, "--tenant", vc.host_namespace]
        cli = subprocess.run(argv, input=upstream.body, capture_output=True, check=False)
        assert cli.returncode == 0, cli.stderr.decode()
        assert cli.stdout == r.body, f"{path} as {name}: Envoy and the CLI differ"


def test_host_tenants_still_work_on_the_virtual_listener(virtual_world, cluster):
    token = cluster.service_account_token("acme-web", "scraper", [TENANT_AUDIENCE])
    r = virtual_world.get("/pods", token=token, listener="virtual")
    assert r.status == 200, r
    assert {ns for ns, _, _ in items("/pods", r.body)} == {"acme-web", "acme-batch"}


def test_a_new_vcluster_pod_is_shown_within_2s_of_the_kubelet_listing_it(
    virtual_world, vclusters, cluster, tokens
):
    """A pod not in the control plane's map yet is not shown (fail closed); once the
    syncer made it, the agent sees it at most 2 s after the kubelet lists it."""
    vc = vclusters["k8s1"]
    token = vc.token()
    host = sync(cluster, vc, "shop", "web-2")
    created = time.monotonic()

    def kubelet_lists():
        r = cluster.kubelet("/pods", tokens["reader"], timeout=10)
        return host.encode() in r.body

    def agent_sees():
        r = virtual_world.get("/pods", token=token, listener="virtual")
        return ("shop", "web-2", vc.uids[("shop", "web-2")]) in items("/pods", r.body)

    stack.wait_for("the kubelet to list the new pod", kubelet_lists, timeout=30, interval=0.1)
    listed = time.monotonic()
    stack.wait_for("k8s1's agent to see it", agent_sees, timeout=10, interval=0.1)
    seen = time.monotonic()
    print(
        f"new vcluster pod: kubelet lists it {listed - created:.2f} s after creation, "
        f"its agent sees it {seen - listed:.2f} s later"
    )
    assert seen - listed <= 2.0
    r = virtual_world.get("/pods", token=vclusters["k8s2"].token(), listener="virtual")
    assert "web-2" not in r.text


def test_a_revoked_or_expired_vcluster_token_is_refused_within_the_cache_bound(
    virtual_world, vclusters
):
    """The agent's ServiceAccount deleted in its virtual cluster: its token is refused
    within the control plane's positive cache (CACHE_SECONDS here) and the virtual
    apiserver's own token cache; a token signed by another key, or expired, is
    refused at once."""
    vc = vclusters["k8s2"]
    vc.api.service_account("datadog", "short-lived")
    token = vc.token("short-lived")
    assert virtual_world.get("/pods", token=token, listener="virtual").status == 200
    status, body = vc.api.call(
        "DELETE", "/api/v1/namespaces/datadog/serviceaccounts/short-lived", {}, "application/json"
    )
    assert status == 200, body
    deleted = time.monotonic()
    bound = CACHE_SECONDS + APISERVER_CACHE_SECONDS + 5
    stack.wait_for(
        "the deleted account's token refused",
        lambda: virtual_world.get("/pods", token=token, listener="virtual").status == 401,
        timeout=bound,
        interval=0.5,
    )
    print(f"refused {time.monotonic() - deleted:.1f} s after the deletion (bound {bound} s)")
    forged = stack.sign_jwt({"iss": K8S1_ISSUER, "aud": [TENANT_AUDIENCE], "sub": "x"})
    assert virtual_world.get("/pods", token=forged, listener="virtual").status == 401
    # k8s1's own key, but expired: refused before any review.
    one = vclusters["k8s1"]
    expired = reissue(one.api, one.token(), exp=int(time.time()) - 5)
    assert virtual_world.get("/pods", token=expired, listener="virtual").status == 401
