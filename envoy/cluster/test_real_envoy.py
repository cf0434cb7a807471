"""Envoy with the release filter in front of the REAL kubelet (world: the real
kubelet, apiserver, containers and ServiceAccount tokens of hack/cluster.sh; no
stand-in anywhere).

Two shipped configurations run here:
- `daemonset`: deploy/base/kubelet-proxy.yaml's envoy.yaml as shipped (mounts and
  addresses mapped as test_daemonset maps them), with the control plane of
  deploy/base/control-plane.yaml's arguments (TLS, --allow-serviceaccount,
  --token-audience: real TokenReviews) watching the real apiserver. Envoy reaches the
  kubelet with a real token of kubelet-scope:kubelet-proxy, bound to exactly the
  manifest's ClusterRole; tenants present real projected tokens (TokenRequest,
  audience kubelet-scope) that Envoy's jwt_authn verifies against the apiserver's own
  JWKS and issuer. Between Envoy and the kubelet sits a recording hop
  (recording_hop.py), so Envoy's output is compared with `kubelet-scope rewrite` on
  the same upstream bytes, and what reached the kubelet is known.
- `local`: envoy/local.yaml through the stack's template, pointed straight at the
  kubelet (127.0.0.1:10250, verified against the cluster's CA) with the same real
  kubelet-proxy token, and the control plane watching the real apiserver. Its
  tenants are what that file's provider accepts: the demo issuer's JWTs with a
  `tenant` claim (a real ServiceAccount token carries no such claim).

Mapped beyond test_daemonset's mapping: the issuer (this apiserver's is
https://kubernetes.default.svc, the shipped one https://kubernetes.default.svc.cluster.local),
the kubelet's CA (the cluster's) and the control plane's kubeconfig (the admin's).
"""

import json
import os
import re
import subprocess
import time

import pytest
import test_daemonset as shipped
import yaml
from recording_hop import RecordingHop

import stack
from conftest import CAPTURES, WORK

ENDPOINTS = list(CAPTURES)
METRICS = [p for p in ENDPOINTS if p.startswith("/metrics")]
SHIPPED_ISSUER = shipped.ISSUER
TENANT_AUDIENCE = "kubelet-scope"
# The namespace (and ServiceAccount) a tenant's scraper runs as, in the daemonset world.
SCRAPERS = {"acme": "acme-web", "globex": "globex"}
TEAM = re.compile(r'[{,]team="([^"]*)"')
NAME = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)")
DENIED_PATH_SEGMENTS = ("exec", "attach", "portForward", "run", "containerLogs")


# --- the real world's credentials and facts ------------------------------------------


@pytest.fixture(scope="module")
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


def tenant_token(cluster, namespace, name="scraper", audiences=(TENANT_AUDIENCE,)):
    return cluster.service_account_token(namespace, name, list(audiences))


def namespace_labels(cluster):
    return {
        n["metadata"]["name"]: n["metadata"].get("labels", {})
        for n in cluster.get("/api/v1/namespaces")["items"]
    }


def tenant_namespaces(cluster, tenant):
    return {n for n, labels in namespace_labels(cluster).items() if labels.get("tenant") == tenant}


def label_namespace(cluster, name, labels):
    """Merge-patches the namespace's labels (None removes one)."""
    status, doc = cluster.api(
        "PATCH",
        f"/api/v1/namespaces/{name}",
        {"metadata": {"labels": labels}},
        content_type="application/merge-patch+json",
    )
    assert status == 200, (status, doc)


# --- the two worlds ----------------------------------------------------------------


class World:
    """One running Envoy configuration: `get(path, tenant)` through its tenant
    listener, as the tenant's scraper."""

    def __init__(self, name, s, cluster, hop=None):
        self.name, self.s, self.cluster, self.hop = name, s, cluster, hop
        self.tokens = {}

    def auth(self, tenant):
        if self.name == "local":
            return "Bearer " + stack.jwt(tenant)
        if tenant not in self.tokens:
            self.tokens[tenant] = tenant_token(self.cluster, SCRAPERS[tenant])
        return "Bearer " + self.tokens[tenant]

    def get(self, path, tenant=None, headers=None, token=None, method="GET"):
        h = dict(headers or {})
        if token:
            h["authorization"] = "Bearer " + token
        elif tenant:
            h["authorization"] = self.auth(tenant)
        tls = self.s.kubelet_cert if self.name == "daemonset" else None
        return stack.request(self.s.ports["tenant"], path, h, tls_ca=tls, method=method)

    def snapshot(self, control_plane_token):
        r = stack.request(
            self.s.ports["control_plane"],
            "/v1/snapshot",
            {"authorization": "Bearer " + control_plane_token},
            tls_ca=self.s.control_plane_ca,
        )
        assert r.status == 200, r
        return r.body


def wait_serving(world, tenant):
    streak = [0]

    def ok():
        streak[0] = streak[0] + 1 if world.get("/pods", tenant).status == 200 else 0
        return streak[0] >= 4

    stack.wait_for(f"{world.name}: the filter to serve {tenant}", ok, timeout=30, interval=0.2)


@pytest.fixture(scope="module")
def daemonset(cluster, real):
    workdir = stack.clean_dir(WORK / "daemonset")
    ca, cert, key = stack.issue_certificate(
        workdir, "control-plane", f"DNS:{shipped.SERVICE},IP:127.0.0.1"
    )
    hop = RecordingHop(
        cluster.env["KUBELET_CERT"],
        cluster.env["KUBELET_KEY"],
        cluster.ca,
        cluster.node_ip,
        cluster.kubelet_port,
    )

    def render(s):
        s.ports["kubelet"] = hop.port
        text = shipped.local_daemonset_config(s, real["control_plane"], ca)
        (s.dir / "kubelet-proxy-token" / "token").write_text(real["kubelet"])
        (s.dir / "jwks.json").write_text(json.dumps(real["jwks"]))
        upstream_ca = f"trusted_ca: {{ filename: {s.kubelet_cert} }}"
        assert text.count(upstream_ca) == 1, "the kubelet cluster's CA is no longer mapped"
        text = text.replace(upstream_ca, f"trusted_ca: {{ filename: {cluster.ca} }}")
        return shipped.map_text(text, {f"issuer: {SHIPPED_ISSUER}": f"issuer: {real['issuer']}"})

    with hop:
        s = stack.Stack(
            workdir,
            kubeconfig=cluster.env["ADMIN_KUBECONFIG"],
            control_plane_args=shipped.control_plane_args(cert, key),
            control_plane_ca=ca,
            render=render,
            standin=False,
        )
        with s:
            world = World("daemonset", s, cluster, hop)
            for tenant in SCRAPERS:
                wait_serving(world, tenant)
            yield world


@pytest.fixture(scope="module")
def local(cluster, real):
    workdir = stack.clean_dir(WORK / "local")

    def render(s):
        (s.dir / "node-token").write_text(real["kubelet"])
        values = s.envoy_values()
        values.update(KUBELET_PORT=cluster.kubelet_port, KUBELET_CA_FILE=cluster.ca)
        return stack.render_envoy_config(values)

    s = stack.Stack(
        workdir, kubeconfig=cluster.env["ADMIN_KUBECONFIG"], render=render, standin=False
    )
    with s:
        world = World("local", s, cluster)
        for tenant in SCRAPERS:
            wait_serving(world, tenant)
        yield world


@pytest.fixture(scope="module", params=["daemonset", "local"])
def world(request):
    return request.getfixturevalue(request.param)


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
            assert teams == [labels[ns]["team"]], (ns, line)
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


def test_pod_scoped_paths_are_denied_and_never_reach_the_kubelet(cluster, daemonset, real):
    """exec, attach, portForward, run and containerLogs on real running pods, of
    another tenant and of acme's own (the shipped configuration does not allow
    pod-scoped paths), never reach the kubelet: neither the hop nor the kubelet's
    own kubelet_http_requests_total sees any of them. The shipped configuration
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
    seen = len(daemonset.hop.requests())
    for method, path, headers in requests:
        r = daemonset.get(path, "acme", headers, method=method)
        if "upgrade" in headers:
            assert (r.status, r.body) == (403, b""), (method, path, r)
            continue
        assert (r.status, r.body) == (404, b"404 page not found\n"), (method, path, r)
        assert r.header("x-kubelet-scope-denied"), (path, r.headers)
    reached = [e.path for e in daemonset.hop.requests()[seen:]]
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
        cluster.api("DELETE", f"/api/v1/namespaces/acme-web/pods/{name}")


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
