"""Envoy with the release filter in front of the REAL kubelet (world: the real
kubelet, apiserver, containers and ServiceAccount tokens of hack/cluster.sh; no
stand-in anywhere), in both shipped configurations (`daemonset`, `local`: see
real_world.py): real credentials, isolation and injection on every endpoint, the CLI
on the same upstream bytes, denied pod-scoped paths, live changes in the apiserver,
a real Prometheus."""

import json
import os
import re
import subprocess
import time

import pytest
import test_daemonset as shipped
import yaml
from real_world import (
    SCRAPERS,
    TENANT_AUDIENCE,
    label_namespace,
    namespace_labels,
    tenant_namespaces,
    tenant_token,
)

import stack
from conftest import CAPTURES, WORK

ENDPOINTS = list(CAPTURES)
METRICS = [p for p in ENDPOINTS if p.startswith("/metrics")]
TEAM = re.compile(r'[{,]team="([^"]*)"')
NAME = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)")
DENIED_PATH_SEGMENTS = ("exec", "attach", "portForward", "run", "containerLogs")


# --- reading bodies ----------------------------------------------------------------


def items(path, body):
    """What a tenant's body is made of, as (namespace, key) pairs: series lines as
    (namespace, metric name) for /metrics*, pods as (namespace, pod) for JSON."""
    if path.startswith("/metrics"):
        found = set()
        for line in body.decode().splitlines():
            ns = stack.line_namespace(line)
            if ns is not None:
                found.add((ns, NAME.match(line).group(1)))
        return found
    doc = json.loads(body)
    if path == "/stats/summary":
        return {(p["podRef"]["namespace"], p["podRef"]["name"]) for p in doc.get("pods") or []}
    return {(i["metadata"]["namespace"], i["metadata"]["name"]) for i in doc.get("items") or []}


def kubelet_counters(cluster, token):
    """kubelet_http_requests_total by its `path` label (the first path segment)."""
    body = cluster.kubelet("/metrics", token).text
    counts = {}
    for m in re.finditer(r"^kubelet_http_requests_total\{([^}]*)\} (\S+)", body, re.M):
        seg = re.search(r'path="([^"]*)"', m.group(1)).group(1)
        counts[seg] = counts.get(seg, 0) + float(m.group(2))
    return counts


# --- 1. real credentials end to end -----------------------------------------------


@pytest.mark.parametrize("path", ENDPOINTS)
def test_kubelet_authorizes_the_manifests_clusterrole_and_nothing_else(cluster, real, path):
    """The kubelet's webhook authn/authz (TokenReview + SubjectAccessReview at the
    apiserver): kubelet-proxy's token, bound to exactly the manifest's ClusterRole,
    is served; an account of the same namespace without the binding gets 403."""
    assert cluster.kubelet(path, real["kubelet"]).status == 200
    assert cluster.kubelet(path, real["unbound"]).status == 403


def test_envoy_reaches_the_kubelet_with_the_real_token(daemonset, real):
    daemonset.get("/metrics/probes", "acme")
    e = daemonset.hop.last("/metrics/probes")
    assert e.status == 200
    assert e.request_headers.get("authorization") == "Bearer " + real["kubelet"]
    # the filter asks the kubelet for identity, so it reads the bytes as sent
    assert "gzip" not in (e.request_headers.get("accept-encoding") or "")


def test_an_unbound_kubelet_token_is_refused_by_the_kubelet(cluster, real, daemonset):
    """The same Envoy with the unbound account's token in its mounted file (SDS
    watches the directory): the kubelet's own 403 comes back, and no body."""
    token_file = daemonset.s.dir / "kubelet-proxy-token" / "token"

    def mount(token):  # as the kubelet updates a projected volume: a rename into it
        tmp = token_file.with_name("..token.tmp")
        tmp.write_text(token)
        os.replace(tmp, token_file)

    try:
        mount(real["unbound"])
        stack.wait_for(
            "Envoy to present the unbound token",
            lambda: daemonset.get("/pods", "acme").status == 403,
            timeout=20,
            interval=0.3,
        )
        e = daemonset.hop.last("/pods")
        assert e.status == 403 and e.request_headers["authorization"].endswith(real["unbound"])
        assert b'"items"' not in daemonset.get("/pods", "acme").body
    finally:
        mount(real["kubelet"])
        stack.wait_for(
            "Envoy to present kubelet-proxy's token again",
            lambda: daemonset.get("/pods", "acme").status == 200,
            timeout=20,
            interval=0.3,
        )


def test_tenant_tokens_are_verified_against_the_apiservers_jwks(cluster, daemonset, real):
    acme = tenant_token(cluster, "acme-web")
    assert daemonset.get("/pods", token=acme).status == 200
    # the apiserver's own audience, the control plane's: not for tenants (jwt_authn's
    # own answer to a verified token of another audience)
    for other in (tenant_token(cluster, "acme-web", audiences=()), real["control_plane"]):
        r = daemonset.get("/pods", token=other)
        assert (r.status, r.body) == (403, b"Audiences in Jwt are not allowed"), r
    # a token of the right claims signed by another key
    forged = stack.sign_jwt(
        {
            "iss": real["issuer"],
            "aud": [TENANT_AUDIENCE],
            "sub": "system:serviceaccount:acme-web:scraper",
            "kubernetes.io": {"namespace": "acme-web"},
        }
    )
    assert daemonset.get("/pods", token=forged).status == 401
    # an account whose namespace has no tenant label (shared-tools) is no tenant
    r = daemonset.get("/pods", token=tenant_token(cluster, "shared-tools"))
    assert r.status == 404 and r.header("x-kubelet-scope-denied"), r
    assert daemonset.get("/pods").status == 401


# --- 2. injection and isolation on every endpoint ------------------------------------


@pytest.mark.parametrize("tenant", list(SCRAPERS))
@pytest.mark.parametrize("path", ENDPOINTS)
def test_tenant_sees_exactly_its_namespaces(world, cluster, real, path, tenant):
    mine = tenant_namespaces(cluster, tenant)
    assert mine, tenant
    before = items(path, cluster.kubelet(path, real["kubelet"]).body)
    r = world.get(path, tenant)
    after = items(path, cluster.kubelet(path, real["kubelet"]).body)
    assert r.status == 200, r
    got = items(path, r.body)
    foreign = {ns for ns, _ in got} - mine
    assert not foreign, f"{world.name} {path} {tenant}: foreign namespaces {foreign}"
    # what the kubelet answered both before and after is stable: it must be there
    stable = {i for i in before & after if i[0] in mine}
    if path != "/metrics":  # the kubelet's own metrics carry few namespaced series
        assert stable, f"{path}: the kubelet has nothing of {tenant}'s namespaces"
    assert stable <= got, sorted(stable - got)[:20]


@pytest.mark.parametrize("path", METRICS)
def test_injected_team_is_the_apiservers_label(world, cluster, path):
    labels = namespace_labels(cluster)
    for tenant in SCRAPERS:
        body = world.get(path, tenant).text
        checked = 0
        for line in body.splitlines():
            ns = stack.line_namespace(line)
            if ns is None:
                continue
            teams = TEAM.findall(line[: line.rfind("}") + 1])
            # a namespace without the label gets none (and keeps none of its own)
            expected = [labels[ns]["team"]] if "team" in labels[ns] else []
            assert teams == expected, (ns, line)
            checked += 1
        if path != "/metrics":
            assert checked, f"{path}: no namespaced series for {tenant}"


@pytest.mark.parametrize("path", ENDPOINTS)
def test_envoy_output_is_the_clis_on_the_same_upstream_bytes(daemonset, real, tmp_path, path):
    """The filter in Envoy and `kubelet-scope rewrite` agree byte for byte on the
    kubelet's real answer that the hop recorded, with the shipped tenant
    configuration and the control plane's snapshot."""
    snapshot = tmp_path / "snapshot.json"
    config = tmp_path / "tenant.json"
    config.write_text(shipped_plugin_config("kubelet-scope-tenant"))
    for tenant, namespace in SCRAPERS.items():
        before = daemonset.snapshot(real["control_plane"])
        r = daemonset.get(path, tenant)
        upstream = daemonset.hop.last(path)
        after = daemonset.snapshot(real["control_plane"])
        assert r.status == 200 and upstream.status == 200
        assert json.loads(before)["namespaces"] == json.loads(after)["namespaces"]
        snapshot.write_bytes(after)
        cli = subprocess.run(
            [stack.CLI, "rewrite", "--config", config, "--snapshot", snapshot, "--path", path]
            + ["--tenant", namespace],
            input=upstream.body,
            capture_output=True,
            check=False,
        )
        assert cli.returncode == 0, cli.stderr.decode()
        assert cli.stdout == r.body, f"{path} as {tenant}: Envoy and the CLI differ"
        assert cli.stdout != upstream.body  # something was filtered or injected


def shipped_plugin_config(name):
    """The plugin configuration `name` of the shipped DaemonSet envoy.yaml."""
    data = shipped.manifest("ConfigMap", "kubelet-proxy-envoy")["data"]["envoy.yaml"]
    found = []

    def walk(node):
        if isinstance(node, dict):
            if node.get("name") == name and "configuration" in node:
                found.append(node["configuration"]["value"])
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(yaml.safe_load(data))
    assert len(found) == 1, name
    return found[0]


# --- 4. denied paths against real running pods ----------------------------------------


def running_pod(cluster, namespace):
    for p in cluster.pods(namespace):
        if p["status"].get("phase") == "Running":
            return p["metadata"]["name"], p["spec"]["containers"][0]["name"]
    raise AssertionError(f"no running pod in {namespace}")


def test_pod_scoped_paths_are_denied_and_never_reach_the_kubelet(cluster, world, real):
    """exec, attach, portForward, run and containerLogs on real running pods, of
    another tenant and of acme's own (neither shipped configuration allows
    pod-scoped paths), never reach the kubelet: neither the hop (daemonset) nor the
    kubelet's own kubelet_http_requests_total sees any of them. Both configurations
    answers a real SPDY upgrade request (as kubectl exec sends) 403 with no body:
    Envoy's own refusal of an upgrade it is not configured for, before any filter;
    the same paths without the upgrade get the filter's denial, 404 (its default,
    `tenancy.deniedStatus` unset), with the reason in x-kubelet-scope-denied."""
    targets = [running_pod(cluster, "globex"), running_pod(cluster, "acme-web")]
    requests = []
    for ns, (pod, container) in zip(("globex", "acme-web"), targets, strict=True):
        upgrade = {
            "connection": "Upgrade",
            "upgrade": "SPDY/3.1",
            "x-stream-protocol-version": "v4.channel.k8s.io",
        }
        streams = [
            ("GET", f"/exec/{ns}/{pod}/{container}?command=sh&input=1&output=1"),
            ("POST", f"/exec/{ns}/{pod}/{container}?command=sh&output=1"),
            ("GET", f"/attach/{ns}/{pod}/{container}?output=1"),
            ("POST", f"/portForward/{ns}/{pod}"),
        ]
        requests += [(m, p, upgrade) for m, p in streams]
        requests += [(m, p, {}) for m, p in streams]
        requests += [
            ("POST", f"/run/{ns}/{pod}/{container}?cmd=id", {}),
            ("GET", f"/containerLogs/{ns}/{pod}/{container}", {}),
        ]
    before = kubelet_counters(cluster, real["kubelet"])
    seen = len(world.hop.requests()) if world.hop else 0
    for method, path, headers in requests:
        r = world.get(path, "acme", headers, method=method)
        if "upgrade" in headers:
            assert (r.status, r.body) == (403, b""), (method, path, r)
            continue
        assert (r.status, r.body) == (404, b"404 page not found\n"), (method, path, r)
        assert r.header("x-kubelet-scope-denied"), (path, r.headers)
    reached = [e.path for e in world.hop.requests()[seen:]] if world.hop else []
    assert not [p for p in reached if p.split("/")[1] in DENIED_PATH_SEGMENTS], reached
    after = kubelet_counters(cluster, real["kubelet"])
    for seg in DENIED_PATH_SEGMENTS:
        assert after.get(seg, 0) == before.get(seg, 0), (seg, before, after)
    # the counter does count such a request when one reaches the kubelet
    ns, (pod, container) = "globex", targets[0]
    assert cluster.kubelet(f"/containerLogs/{ns}/{pod}/{container}", real["kubelet"]).status == 200
    assert kubelet_counters(cluster, real["kubelet"]).get("containerLogs", 0) > after.get(
        "containerLogs", 0
    )


# --- 3. live changes in the apiserver -------------------------------------------------


def test_a_namespace_label_change_reaches_envoy_within_2s(cluster, daemonset, local):
    old = namespace_labels(cluster)["acme-batch"]["team"]
    new = f"relabelled-{int(time.time())}"
    try:
        label_namespace(cluster, "acme-batch", {"team": new})
        t0 = time.monotonic()
        for world in (daemonset, local):

            def relabelled(world=world):
                body = world.get("/metrics/cadvisor", "acme").text
                return f'team="{new}"' in body and 'namespace="acme-batch",' in body

            stack.wait_for(
                f"{world.name}: the new team",
                relabelled,
                timeout=2 - (time.monotonic() - t0),
                interval=0.05,
            )
        for line in daemonset.get("/metrics/cadvisor", "acme").text.splitlines():
            if stack.line_namespace(line) == "acme-batch":
                assert f'team="{new}"' in line and f'team="{old}"' not in line, line
    finally:
        label_namespace(cluster, "acme-batch", {"team": old})


def test_a_new_pod_appears_for_acme_and_never_for_globex(cluster, daemonset):
    name = f"newcomer-{int(time.time())}"
    pod = {
        "metadata": {"name": name, "namespace": "acme-web"},
        "spec": {
            "automountServiceAccountToken": False,
            "terminationGracePeriodSeconds": 1,
            "enableServiceLinks": False,
            "containers": [
                {
                    "name": "sleeper",
                    "image": "localhost/busybox:kscope",
                    "imagePullPolicy": "Never",
                    "command": ["sh", "-c", "while :; do sleep 1; done"],
                }
            ],
        },
    }
    cluster.ensure("/api/v1/namespaces/acme-web/pods", pod)
    try:
        globex_seen = []

        def listed():
            for path in ("/pods", "/metrics/cadvisor"):
                globex_seen.append(name.encode() in daemonset.get(path, "globex").body)
            acme = [
                name.encode() in daemonset.get(p, "acme").body
                for p in ("/pods", "/metrics/cadvisor")
            ]
            return all(acme)

        stack.wait_for("the new pod's series through Envoy", listed, timeout=60, interval=0.5)
        assert not any(globex_seen)
        assert (("acme-web", name)) in items("/pods", daemonset.get("/pods", "acme").body)
        assert name.encode() not in daemonset.get("/pods", "globex").body
    finally:
        # gone before the next test (test_smoke wants every pod Running)
        cluster.api("DELETE", f"/api/v1/namespaces/acme-web/pods/{name}")
        stack.wait_for(
            "the new pod to be deleted",
            lambda: cluster.api("GET", f"/api/v1/namespaces/acme-web/pods/{name}")[0] == 404,
            timeout=60,
            interval=0.5,
        )


def test_a_namespace_moved_between_tenants_follows(cluster, daemonset, local):
    """shared-tools (no tenant) made acme's, then globex's: the next scrapes follow."""
    try:
        for tenant, other in (("acme", "globex"), ("globex", "acme")):
            label_namespace(cluster, "shared-tools", {"tenant": tenant})
            for world in (daemonset, local):

                def moved(world=world, tenant=tenant, other=other):
                    mine = {ns for ns, _ in items("/pods", world.get("/pods", tenant).body)}
                    theirs = {ns for ns, _ in items("/pods", world.get("/pods", other).body)}
                    return "shared-tools" in mine and "shared-tools" not in theirs

                stack.wait_for(f"{world.name}: shared-tools to be {tenant}'s", moved, timeout=5)
                body = world.get("/metrics/cadvisor", other).text
                assert 'namespace="shared-tools"' not in body
    finally:
        label_namespace(cluster, "shared-tools", {"tenant": None})
    for world in (daemonset, local):
        stack.wait_for(
            "shared-tools to be no tenant's",
            lambda world=world: "shared-tools" not in world.get("/pods", "globex").text,
            timeout=5,
        )


# --- 5. a real Prometheus scraping through the DaemonSet's Envoy -------------------------

METRIC = "container_cpu_usage_seconds_total"


def teams_of(cluster, token, tenant):
    """count by (team) of METRIC in the kubelet's own answer, for `tenant`'s namespaces
    (the team each namespace has in the apiserver)."""
    labels = namespace_labels(cluster)
    counts = {}
    for line in cluster.kubelet("/metrics/cadvisor", token).text.splitlines():
        ns = stack.line_namespace(line)
        if line.startswith(METRIC + "{") and ns and labels[ns].get("tenant") == tenant:
            counts[labels[ns]["team"]] = counts.get(labels[ns]["team"], 0) + 1
    return counts


def test_prometheus_scrapes_through_envoy_with_a_projected_token(cluster, daemonset, real):
    """Debian's Prometheus, its credentials_file a real projected token of acme-web
    (audience kubelet-scope), scraping the DaemonSet Envoy's tenant listener over TLS:
    up == 1, count by (team) as the apiserver's labels and the kubelet's own series
    say, and nothing of another tenant stored."""
    if not stack.PROMETHEUS.exists():
        pytest.skip(f"{stack.PROMETHEUS} is missing (make test unpacks it)")
    workdir = stack.clean_dir(WORK / "prometheus")
    (workdir / "token").write_text(tenant_token(cluster, "acme-web", "prometheus"))
    prometheus = stack.Prometheus(
        workdir,
        [
            {
                "job_name": "kubelet-cadvisor-acme",
                "scheme": "https",
                "metrics_path": "/metrics/cadvisor",
                "honor_timestamps": False,
                "authorization": {"type": "Bearer", "credentials_file": str(workdir / "token")},
                "tls_config": {"ca_file": str(daemonset.s.kubelet_cert)},
                "static_configs": [{"targets": [f"127.0.0.1:{daemonset.s.ports['tenant']}"]}],
            }
        ],
    )
    query = prometheus.query

    try:
        up = stack.wait_for("a successful scrape", lambda: query("up == 1"), timeout=60)
        assert up[0]["metric"]["job"] == "kubelet-cadvisor-acme"
        targets = prometheus.targets()
        assert targets[0]["health"] == "up" and targets[0]["lastError"] == "", targets

        def teams_match():
            result = query(f"count by (team) ({METRIC}{{namespace!=''}})")
            got = {r["metric"].get("team", ""): int(r["value"][1]) for r in result or []}
            return got if got == teams_of(cluster, real["kubelet"], "acme") else None

        got = stack.wait_for("count by (team) as the kubelet's", teams_match, timeout=20)
        assert set(got) == {"frontend", "backend"}, got
        stored = query("count by (namespace) ({__name__=~'.+', namespace!=''})")
        assert {r["metric"]["namespace"] for r in stored} <= tenant_namespaces(cluster, "acme")
    finally:
        prometheus.stop()
