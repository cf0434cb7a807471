"""The production configurations of deploy/, run for real: the DaemonSet's Envoy
(deploy/base/kubelet-proxy.yaml) and the control plane's arguments
(deploy/base/control-plane.yaml) against a real kube-apiserver.

The ConfigMap's envoy.yaml and the Deployment's arguments are taken as they ship;
only what the pods mount (files) and the node's addresses (ports, the control
plane's Service) are mapped to this machine. The control plane watches the real
apiserver and checks the DaemonSet's token with real TokenReviews; that token, of the
audience the DaemonSet projects, comes from the apiserver's TokenRequest API. The
kubelet is the stand-in, and tenants present ServiceAccount-shaped tokens signed with
the stack's test key (the real-cluster tests, envoy/cluster/, use real ones).
"""

import re
from pathlib import Path

import yaml

import stack
from conftest import WORK

MANIFEST = stack.REPO / "deploy" / "base" / "kubelet-proxy.yaml"
CONTROL_PLANE_MANIFEST = stack.REPO / "deploy" / "base" / "control-plane.yaml"
PROBES = {"x-standin-fixture": "probes-k8s1.20-synthetic.txt"}  # default, kube-system
ISSUER = "https://kubernetes.default.svc.cluster.local"
SERVICE = "kubelet-scope.kubelet-scope.svc"
# The audience of the DaemonSet's second projected token, the control plane's.
CONTROL_PLANE_AUDIENCE = "kubelet-scope-control-plane"
NAMESPACES = {
    "default": {"team": "web", "tenant": "acme"},
    "kube-system": {"team": "platform"},
    # Where acme's scraper runs: labelled, so its ServiceAccounts are acme.
    "acme-monitoring": {"tenant": "acme"},
    # Named like a tenant, without the label: anyone who may create namespaces
    # could have made it.
    "globex": {"team": "squatter"},
    # test_attacks' tenant scraper.
    "acme-mon": {"tenant": "acme"},
}


def manifest(kind, name=None, path=MANIFEST):
    for doc in yaml.safe_load_all(path.read_text()):
        if doc["kind"] == kind and (name is None or doc["metadata"]["name"] == name):
            return doc
    raise KeyError(f"{kind} {name} not in {path}")


def local_daemonset_config(s, control_plane_token="unused", control_plane_ca=None, authz_port=None):
    """The DaemonSet's envoy.yaml with its mounts and addresses mapped to stack `s`;
    `control_plane_token` is what its projected volume holds for the control plane,
    `control_plane_ca` the CA its ConfigMap holds, `authz_port` where the control
    plane answers ext_authz (`s.ports["virtual"]` is the :10445 listener's)."""
    s.ports.setdefault("virtual", stack.free_port())
    s.ports.setdefault("authz", authz_port or stack.free_port())
    data = manifest("ConfigMap", "kubelet-proxy-envoy")["data"]
    token_dir = s.dir / "kubelet-proxy-token"
    token_dir.mkdir(exist_ok=True)
    (token_dir / "token").write_text(stack.NODE_TOKEN)
    (token_dir / "control-plane-token").write_text(control_plane_token)
    sds = {}
    for name in ("kubelet-token-sds.yaml", "control-plane-token-sds.yaml"):
        sds[name] = s.dir / name
        sds[name].write_text(map_text(data[name], {"/var/run/secrets/kubelet-proxy": token_dir}))
    replacements = {
        # Files the DaemonSet mounts.
        "/etc/kubelet-proxy/tls/tls.crt": s.kubelet_cert,
        "/etc/kubelet-proxy/tls/tls.key": s.dir / "kubelet.key",
        "/etc/kubelet-proxy/jwks/jwks.json": s.dir / "jwks.json",
        "/etc/kubelet-proxy/envoy/kubelet-token-sds.yaml": sds["kubelet-token-sds.yaml"],
        "/etc/kubelet-proxy/envoy/control-plane-token-sds.yaml": sds[
            "control-plane-token-sds.yaml"
        ],
        "/etc/kubelet-proxy/control-plane-ca/ca.crt": control_plane_ca or s.kubelet_cert,
        "/etc/kubelet-scope/filter/kubelet_scope_filter.wasm": stack.WASM,
        "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt": s.kubelet_cert,
        "/var/run/secrets/kubelet-proxy": token_dir,
        # The node's addresses.
        "address: 0.0.0.0, port_value: 10443": f"address: 127.0.0.1, port_value: {s.ports['tenant']}",
        "address: 0.0.0.0, port_value: 10444": f"address: 127.0.0.1, port_value: {s.ports['inject']}",
        "address: 0.0.0.0, port_value: 10445": f"address: 127.0.0.1, port_value: {s.ports['virtual']}",
        "port_value: 9901": f"port_value: {s.ports['admin']}",
        "port_value: 10250": f"port_value: {s.ports['kubelet']}",
        "address: kubelet-scope.kubelet-scope.svc.cluster.local, port_value: 443": f"address: 127.0.0.1, port_value: {s.ports['control_plane']}",
        "address: kubelet-scope.kubelet-scope.svc.cluster.local, port_value: 8444": f"address: 127.0.0.1, port_value: {s.ports['authz']}",
    }
    return map_text(data["envoy.yaml"], replacements)


def control_plane_args(cert, key, authz_port=None, virtual_clusters=None):
    """The shipped Deployment's `serve` arguments, its Secret's files mapped to these
    and its virtual clusters to the file `virtual_clusters` (default: the shipped
    ConfigMap's); the listen address is the stack's, ext_authz on `authz_port`."""
    container = manifest("Deployment", path=CONTROL_PLANE_MANIFEST)["spec"]["template"]["spec"]
    args = container["containers"][0]["args"]
    assert args[0] == "serve", args
    if virtual_clusters is None:
        virtual_clusters = Path(cert).parent / "virtual-clusters.yaml"
        data = manifest("ConfigMap", "kubelet-scope-virtual-clusters", CONTROL_PLANE_MANIFEST)
        virtual_clusters.write_text(data["data"]["virtual-clusters.yaml"])
    files = {
        "/etc/kubelet-scope/tls/tls.crt": cert,
        "/etc/kubelet-scope/tls/tls.key": key,
        "/etc/kubelet-scope/virtual-clusters/virtual-clusters.yaml": virtual_clusters,
    }
    mapped = []
    for arg in args[1:]:
        if arg.startswith("--listen="):
            continue
        if arg.startswith("--authz-listen="):
            arg = f"--authz-listen=127.0.0.1:{authz_port or stack.free_port()}"
        for old, new in files.items():
            arg = arg.replace(old, str(new))
        mapped.append(arg)
    for shipped in files:
        assert any(str(files[shipped]) in a for a in mapped), f"{shipped} no longer in {args}"
    return mapped


def start_apiserver(workdir):
    """A real apiserver holding NAMESPACES and the DaemonSet's ServiceAccount (and
    another one of the same namespace); conftest's `daemonset_apiserver`."""
    api = stack.Apiserver(stack.clean_dir(workdir))
    try:
        for name, labels in NAMESPACES.items():
            api.label_namespace(name, labels)
        for account in ("kubelet-proxy", "prometheus"):
            api.service_account("kubelet-scope", account)
    except BaseException:
        api.stop()
        raise
    return api


def daemonset_token(api):
    """What the DaemonSet's projected volume holds for the control plane."""
    return api.token("kubelet-scope", "kubelet-proxy", CONTROL_PLANE_AUDIENCE)


def daemonset_stack(
    api,
    workdir,
    token,
    server_name=SERVICE,
    trusted_ca=None,
    virtual_clusters=None,
    more_control_plane_args=(),
    standin_args=(),
):
    """The DaemonSet's Envoy and the shipped control plane (serving a certificate for
    `server_name`), the DaemonSet presenting `token`; trusted_ca: the CA the Envoy
    is given, when it is not the control plane's; virtual_clusters: the control
    plane's file of them instead of the shipped ConfigMap's."""
    ca, cert, key = stack.issue_certificate(
        workdir, "control-plane", f"DNS:{server_name},IP:127.0.0.1"
    )
    authz_port = stack.free_port()
    args = control_plane_args(cert, key, authz_port, virtual_clusters)
    return stack.Stack(
        workdir,
        kubeconfig=api.kubeconfig(),
        control_plane_args=[*args, *more_control_plane_args],
        control_plane_ca=ca,
        standin_args=standin_args,
        render=lambda s: local_daemonset_config(s, token, trusted_ca or ca, authz_port),
    )


def control_plane_answers(s):
    """Status code → count of the control plane's answers on /v1/snapshot (its own
    /metrics)."""
    text = stack.request(s.ports["control_plane"], "/metrics", tls_ca=s.control_plane_ca).text
    found = re.findall(
        r'^kubelet_scope_http_requests_total\{(?=[^}]*path="/v1/snapshot")[^}]*code="(\d+)"[^}]*\} (\S+)',
        text,
        re.M,
    )
    return {code: float(n) for code, n in found}


def snapshot_fetches(s, outcome):
    """The filter's count of snapshot fetches that ended in `outcome` (success or
    failure), over both listeners' plugins."""
    name = f"kubelet_scope_snapshot_fetch_{outcome}_total"
    return sum(v for k, v in s.envoy_stats().items() if k.endswith(name))


def map_text(text, replacements):
    for old, new in replacements.items():
        assert old in text, f"{old!r} no longer in {MANIFEST.name}: update the mapping"
        text = text.replace(old, str(new))
    return text


def service_account_token(namespace, name="prometheus"):
    """Claims as the apiserver puts them in a projected ServiceAccount token."""
    return stack.sign_jwt(
        {
            "iss": ISSUER,
            "aud": ["kubelet-scope"],
            "sub": f"system:serviceaccount:{namespace}:{name}",
            "kubernetes.io": {"namespace": namespace, "serviceaccount": {"name": name, "uid": "0"}},
        }
    )


def get(s, listener, path, namespace=None, headers=None):
    h = dict(headers or {})
    if namespace:
        h["authorization"] = "Bearer " + service_account_token(namespace)
    return stack.request(s.ports[listener], path, h, tls_ca=s.kubelet_cert)


def test_the_daemonset_envoy_configuration_validates_and_mounts_what_it_reads():
    s = stack.Stack(stack.clean_dir(WORK / "validate-daemonset"), render=local_daemonset_config)
    s.prepare()
    from test_envoy_configs import validate

    out = validate(s.envoy_config)
    assert out.count("kubelet-scope: configured:") >= 2, out
    mounts = [
        m["mountPath"]
        for m in manifest("DaemonSet")["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
    ]
    text = manifest("ConfigMap", "kubelet-proxy-envoy")["data"]["envoy.yaml"]
    for path in (
        "/etc/kubelet-proxy/tls/",
        "/etc/kubelet-proxy/jwks/",
        "/etc/kubelet-proxy/envoy/",
        "/etc/kubelet-scope/filter/",
        "/var/run/secrets/kubelet-proxy",
        "/etc/kubelet-proxy/control-plane-ca/",
    ):
        assert path in text
        assert any(path.rstrip("/") == m for m in mounts), path


def test_the_daemonset_configuration_serves_tenants_by_serviceaccount_namespace(
    daemonset_apiserver,
):
    workdir = stack.clean_dir(WORK / "daemonset")
    with daemonset_stack(daemonset_apiserver, workdir, daemonset_token(daemonset_apiserver)) as s:
        stack.wait_for(
            "the filter to have a snapshot",
            lambda: get(s, "tenant", "/metrics/probes", "acme-monitoring", PROBES).status == 200,
        )
        # A scraper in a namespace labelled tenant=acme is acme: it sees `default`.
        r = get(s, "tenant", "/metrics/probes", "acme-monitoring", PROBES)
        assert 'namespace="default"' in r.text and 'team="web"' in r.text
        assert 'namespace="kube-system"' not in r.text
        # A client-sent copy of the namespace header changes nothing.
        spoofed = get(
            s,
            "tenant",
            "/metrics/probes",
            "acme-monitoring",
            {"x-kubelet-scope-namespace": "kube-system", **PROBES},
        )
        assert spoofed.body == r.body
        # A namespace is no tenant by its name: `globex` has no tenant label, `acme`
        # does not exist. Both are answered as an absent path, reason in a header.
        for namespace in ("globex", "acme", "kube-system"):
            r = get(s, "tenant", "/metrics/probes", namespace, PROBES)
            assert (r.status, r.body) == (404, b"404 page not found\n"), namespace
            assert "unknown tenant" in r.header("x-kubelet-scope-denied") or "no tenant" in (
                r.header("x-kubelet-scope-denied")
            )
        assert get(s, "tenant", "/configz", "acme-monitoring").status == 404
        assert get(s, "tenant", "/metrics/probes").status == 401
        # Encodings as a kubelet's: gzip for /metrics*, never for JSON.
        gz = {"accept-encoding": "gzip"}
        r = get(s, "tenant", "/pods", "acme-monitoring", gz)
        assert r.status == 200 and r.header("content-encoding") is None
        r = get(s, "tenant", "/metrics/cadvisor", "acme-monitoring", gz)
        assert r.status == 200 and r.header("content-encoding") == "gzip"
        # A token meant for another audience (e.g. the apiserver) is not accepted.
        other = stack.sign_jwt(
            {"iss": ISSUER, "aud": ["kubernetes"], "kubernetes.io": {"namespace": "acme"}}
        )
        r = stack.request(
            s.ports["tenant"],
            "/metrics/probes",
            {"authorization": "Bearer " + other},
            tls_ca=s.kubelet_cert,
        )
        assert r.status == 403 and b"Audiences" in r.body

        # The platform listener: only ServiceAccounts of `monitoring`, full view.
        r = get(s, "inject", "/metrics/probes", "monitoring", PROBES)
        assert r.status == 200
        assert 'namespace="kube-system"' in r.text and 'team="platform"' in r.text
        assert get(s, "inject", "/metrics/probes", "acme", PROBES).status == 403
        # Even there, only the read endpoints: no exec, run or configz with the
        # node's credentials.
        for path in ("/run/kube-system/etcd/etcd?cmd=id", "/configz", "/logs/"):
            assert get(s, "inject", path, "monitoring").status == 404, path
        r = get(s, "inject", "/stats/summary", "monitoring", {"accept-encoding": "gzip"})
        assert r.status == 200 and r.header("content-encoding") is None

        # The kubelet saw the DaemonSet's token, never a scraper's.
        for seen in s.kubelet_requests()[-6:]:
            headers = dict(seen["headers"])
            assert headers["authorization"] == "Bearer " + stack.NODE_TOKEN
            assert "x-kubelet-scope-namespace" not in headers


def test_the_daemonset_token_reaches_the_control_plane_and_nothing_else_does(daemonset_apiserver):
    """The snapshot is the DaemonSet's alone: another ServiceAccount's token, or the
    DaemonSet's own token of another audience (one the kubelet or the apiserver would
    accept), gets none; the filter, without one, denies every tenant."""
    apiserver = daemonset_apiserver
    cases = {
        "another account": (
            apiserver.token("kubelet-scope", "prometheus", CONTROL_PLANE_AUDIENCE),
            "403",
        ),
        "the apiserver's audience": (
            apiserver.token("kubelet-scope", "kubelet-proxy", "https://kubernetes.default.svc"),
            "401",
        ),
        # Envoy's credential_injector sends no request without a credential.
        "no token": ("", None),
    }
    for case, (token, code) in cases.items():
        workdir = stack.clean_dir(WORK / "daemonset-token" / case.replace(" ", "-"))
        with daemonset_stack(apiserver, workdir, token) as s:
            stack.wait_for(
                f"{case}: a refused snapshot fetch", lambda: snapshot_fetches(s, "failure") > 0
            )
            r = get(s, "tenant", "/metrics/probes", "acme-monitoring", PROBES)
            assert r.status == 503, (case, r)
            assert snapshot_fetches(s, "success") == 0, case
            # The control plane refused it, or never saw it, and served no snapshot.
            served = control_plane_answers(s)
            assert served == ({code: served.get(code)} if code else {}), (case, served)
            assert served.get(code, 1) > 0, (case, served)


def test_the_snapshot_is_taken_only_from_a_control_plane_the_ca_vouches_for(daemonset_apiserver):
    """Whoever answers for the Service's address (a spoofed endpoint, an externalIP)
    without the control plane's certificate gives the filter nothing: a certificate
    of another CA, or of the right CA for another name."""
    apiserver = daemonset_apiserver
    token = daemonset_token(apiserver)
    other = stack.clean_dir(WORK / "daemonset-tls" / "other-ca")
    other_ca, _, _ = stack.issue_certificate(other, "impostor", f"DNS:{SERVICE}")
    cases = {
        "another CA": {"trusted_ca": other_ca},
        "another name": {"server_name": "kubelet-scope.other.svc"},
    }
    for case, kwargs in cases.items():
        workdir = stack.clean_dir(WORK / "daemonset-tls" / case.replace(" ", "-"))
        with daemonset_stack(apiserver, workdir, token, **kwargs) as s:
            stack.wait_for(
                f"{case}: a failed snapshot fetch", lambda: snapshot_fetches(s, "failure") > 0
            )
            assert get(s, "tenant", "/metrics/probes", "acme-monitoring", PROBES).status == 503
            assert snapshot_fetches(s, "success") == 0, case
            stats = s.envoy_stats()
            handshake_errors = sum(
                v
                for k, v in stats.items()
                if k.startswith("cluster.kubelet-scope-control-plane.ssl.")
                and ("fail_verify" in k or "connection_error" in k)
            )
            assert handshake_errors > 0, {k: v for k, v in stats.items() if ".ssl." in k}
