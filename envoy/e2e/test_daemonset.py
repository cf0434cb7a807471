"""The production Envoy configuration of deploy/kubelet-proxy.yaml, run for real.

The ConfigMap's envoy.yaml is taken as it ships; only what the DaemonSet mounts
(files) and the node's addresses (ports, the control plane's Service name) are mapped
to this machine. Tenants present ServiceAccount-shaped tokens (the `kubernetes.io`
claim with the scraper's namespace), signed with the stack's test key instead of the
cluster's.
"""

import yaml

import stack
from conftest import WORK
from stack import write_namespaces_file

MANIFEST = stack.REPO / "deploy" / "kubelet-proxy.yaml"
PROBES = {"x-standin-fixture": "probes-k8s1.20-synthetic.txt"}  # default, kube-system
ISSUER = "https://kubernetes.default.svc.cluster.local"


def manifest(kind, name=None):
    for doc in yaml.safe_load_all(MANIFEST.read_text()):
        if doc["kind"] == kind and (name is None or doc["metadata"]["name"] == name):
            return doc
    raise KeyError(f"{kind} {name} not in {MANIFEST}")


def local_daemonset_config(s):
    """The DaemonSet's envoy.yaml with its mounts and addresses mapped to stack `s`."""
    data = manifest("ConfigMap", "kubelet-proxy-envoy")["data"]
    token_dir = s.dir / "kubelet-proxy-token"
    token_dir.mkdir(exist_ok=True)
    (token_dir / "token").write_text(stack.NODE_TOKEN)
    sds = s.dir / "kubelet-token-sds.yaml"
    sds.write_text(
        map_text(data["kubelet-token-sds.yaml"], {"/var/run/secrets/kubelet-proxy": token_dir})
    )
    replacements = {
        # Files the DaemonSet mounts.
        "/etc/kubelet-proxy/tls/tls.crt": s.kubelet_cert,
        "/etc/kubelet-proxy/tls/tls.key": s.dir / "kubelet.key",
        "/etc/kubelet-proxy/jwks/jwks.json": s.dir / "jwks.json",
        "/etc/kubelet-proxy/envoy/kubelet-token-sds.yaml": sds,
        "/etc/kubelet-scope/filter/kubelet_scope_filter.wasm": stack.WASM,
        "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt": s.kubelet_cert,
        "/var/run/secrets/kubelet-proxy": token_dir,
        # The node's addresses.
        "address: 0.0.0.0, port_value: 10443": f"address: 127.0.0.1, port_value: {s.ports['tenant']}",
        "address: 0.0.0.0, port_value: 10444": f"address: 127.0.0.1, port_value: {s.ports['inject']}",
        "port_value: 9901": f"port_value: {s.ports['admin']}",
        "port_value: 10250": f"port_value: {s.ports['kubelet']}",
        "address: kubelet-scope.kubelet-scope.svc.cluster.local, port_value: 80": f"address: 127.0.0.1, port_value: {s.ports['control_plane']}",
    }
    return map_text(data["envoy.yaml"], replacements)


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
    ):
        assert path in text
        assert any(path.rstrip("/") == m for m in mounts), path


def test_the_daemonset_configuration_serves_tenants_by_serviceaccount_namespace():
    workdir = stack.clean_dir(WORK / "daemonset")
    spec = {
        "default": {"team": "web", "tenant": "acme"},
        "kube-system": {"team": "platform"},
        # Where acme's scraper runs: labelled, so its ServiceAccounts are acme.
        "acme-monitoring": {"tenant": "acme"},
        # Named like a tenant, without the label: anyone who may create namespaces
        # could have made it.
        "globex": {"team": "squatter"},
    }
    write_namespaces_file(workdir / "namespaces.json", spec)
    with stack.Stack(
        workdir, namespaces_file=workdir / "namespaces.json", render=local_daemonset_config
    ) as s:
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
