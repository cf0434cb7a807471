"""deploy/istio/: the filter as an Istio WasmPlugin on a gateway in front of the
kubelets, with its RequestAuthentication, AuthorizationPolicy, EnvoyFilters and
DestinationRule.

1. The objects against the real kube-apiserver v1.20.2 with Istio 1.30's CRDs
   (../shared/istio/crd-all.gen.yaml, installed as its SOURCES.md says): each is
   accepted and stored as written (nothing pruned), and invalid variants are refused
   by the CRDs' schemas. What 1.20 does not check (Istio's CEL rules) is shown as
   accepted, so that nobody counts on it.
2. The Envoy configuration Istio generates for them (envoy/istio-gateway.yaml, the
   pieces istio_xds.py derives from the objects as the apiserver stored them, with the
   cluster's issuer and key set filled in as the install step says), run in front of
   the kubelet stand-in with the control plane on the real apiserver and the
   apiserver's own ServiceAccount tokens: tenants see their namespaces only, labels
   are injected, and when istio-agent cannot fetch the module (it then hands Envoy a
   deny-all RBAC filter for FAIL_CLOSE) or Envoy cannot load it, requests are denied
   and never reach the kubelet.

There is no istiod, istio-agent or istio-proxy here: istio_xds.py does their part.

World: the kubelet stand-in, real ServiceAccount tokens of a real apiserver with Istio's CRDs."""

import copy
import json
import subprocess
import tomllib

import istio_xds
import pytest
import yaml
from test_daemonset import (
    CONTROL_PLANE_AUDIENCE,
    CONTROL_PLANE_MANIFEST,
    PROBES,
    SERVICE,
    control_plane_answers,
    control_plane_args,
    manifest,
    snapshot_fetches,
)

import stack
from conftest import WORK
from test_envoy_configs import envoy_validate, validate

CRDS = stack.REPO.parent / "shared" / "istio" / "crd-all.gen.yaml"
KUBECTL = "kubectl"
NAMESPACE = "kubelet-scope"
# The gateway's ServiceAccount, which the control plane must allow (README, Istio).
GATEWAY_ACCOUNT = "kubelet-scope-gateway"
TENANT_AUDIENCE = "kubelet-scope"
ISTIO_KINDS = (
    "wasmplugins.extensions.istio.io",
    "requestauthentications.security.istio.io",
    "authorizationpolicies.security.istio.io",
    "envoyfilters.networking.istio.io",
    "destinationrules.networking.istio.io",
)
# Paths in the gateway pod (control-plane-client.yaml) → the stack's files.
POD_SDS = "/etc/kubelet-scope/sds/control-plane-token-sds.yaml"
POD_TOKEN_DIR = "/var/run/secrets/kubelet-scope"


def kubectl(api, *args, stdin=None, check=True):
    """kubectl 1.32 with the apiserver's admin kubeconfig and a discovery cache of its
    own (not ~/.kube's, which other runs share and a new apiserver would find stale)."""
    own = ["--kubeconfig", api.dir / "admin.kubeconfig", "--cache-dir", api.dir / "kubectl-cache"]
    r = subprocess.run(
        [KUBECTL, *map(str, own), *map(str, args)],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )
    if check:
        assert r.returncode == 0, f"kubectl {' '.join(map(str, args))}: {r.stdout}{r.stderr}"
    return r


def items(output):
    """The objects of kubectl's `-o json`: a List, or objects one after the other."""
    found, decoder, at = [], json.JSONDecoder(), 0
    output = output.strip()
    while at < len(output):
        doc, at = decoder.raw_decode(output, at)
        found += doc["items"] if doc["kind"] == "List" else [doc]
        at += len(output[at:]) - len(output[at:].lstrip())
    return found


def content(obj):
    """What an object says, without what the apiserver adds to its metadata."""
    body = {k: v for k, v in obj.items() if k not in ("metadata", "status")}
    meta = obj["metadata"]
    return {**body, "metadata": {"name": meta["name"], "namespace": meta.get("namespace")}}


def server_dry_run(api, obj, *args, check=False):
    """The apiserver's verdict on creating `obj` (a server-side dry run; kubectl's own
    schema check off)."""
    return kubectl(
        api,
        "create",
        "--validate=false",
        "--dry-run=server",
        "-f",
        "-",
        *args,
        stdin=json.dumps(obj),
        check=check,
    )


@pytest.fixture(scope="module")
def istio_api(daemonset_apiserver):
    """The DaemonSet tests' apiserver (namespaces and their labels as there), with
    Istio's CRDs and the ServiceAccounts of the gateway and of tenants' scrapers."""
    api = daemonset_apiserver
    api.kubeconfig()
    assert CRDS.is_file(), f"{CRDS}: Istio's CRDs are read from ../shared/istio/ beside the project"
    r = kubectl(api, "create", "--validate=false", "-f", CRDS, check=False)
    assert r.returncode == 0 or "AlreadyExists" in r.stderr, r.stderr

    # Polled rather than `kubectl wait` (or a jsonpath filter), which fail at once on a
    # CRD the apiserver has not given conditions yet.
    def established(crd):
        status = json.loads(kubectl(api, "get", "crd", crd, "-o", "json").stdout)["status"]
        return any(
            c["type"] == "Established" and c["status"] == "True"
            for c in status.get("conditions") or []
        )

    for crd in ISTIO_KINDS:
        stack.wait_for(f"the CRD {crd} to be established", lambda crd=crd: established(crd))
    api.service_account(NAMESPACE, GATEWAY_ACCOUNT)
    for namespace in ("acme-monitoring", "globex", "kube-system"):
        api.service_account(namespace, "prometheus")
    return api


def installed_objects(api):
    """deploy/istio with the install step done (the cluster's issuer and key set in
    the RequestAuthentication, read with kubectl as the file says), created in the
    apiserver and read back as istiod would read them."""
    issuer = json.loads(kubectl(api, "get", "--raw", "/.well-known/openid-configuration").stdout)[
        "issuer"
    ]
    jwks = kubectl(api, "get", "--raw", "/openid/v1/jwks").stdout
    objects = istio_xds.manifests()
    auth = istio_xds.find(objects, "RequestAuthentication")
    auth["spec"]["jwtRules"][0].update(issuer=issuer, jwks=jwks)
    for obj in objects:
        kubectl(api, "create", "-f", "-", stdin=json.dumps(obj))
    stored = items(kubectl(api, "get", "-n", NAMESPACE, ",".join(ISTIO_KINDS), "-o", "json").stdout)
    assert len(stored) == sum(1 for o in objects if ".istio.io/" in o["apiVersion"]), stored
    return stored


@pytest.fixture(scope="module")
def installed(istio_api):
    return installed_objects(istio_api)


# -- 1. the objects against the real apiserver ------------------------------------------


@pytest.mark.parametrize("manifest", sorted(istio_xds.DIR.glob("*.yaml")), ids=lambda p: p.name)
def test_every_istio_object_is_accepted_and_stored_as_written(istio_api, manifest):
    """kubectl's own schema check (unknown fields refused client-side: 1.20 has no
    server-side field validation) and the apiserver's server-side dry run; what the
    apiserver would store equals the file, so no field was pruned."""
    written = [renamed(d) for d in yaml.safe_load_all(manifest.read_text()) if d]
    r = kubectl(
        istio_api,
        "create",
        "--dry-run=server",
        "-f",
        "-",
        "-o",
        "json",
        stdin=yaml.safe_dump_all(written),
    )
    assert [content(o) for o in items(r.stdout)] == [content(d) for d in written]


def renamed(obj):
    """`obj` under another name, so that a dry run does not meet the object of the same
    name the Envoy tests create."""
    obj = copy.deepcopy(obj)
    obj["metadata"]["name"] += "-dry-run"
    return obj


def wasmplugin(**spec_changes):
    plugin = renamed(istio_xds.find(istio_xds.manifests(), "WasmPlugin"))
    for key, value in spec_changes.items():
        if value is None:
            del plugin["spec"][key]
        else:
            plugin["spec"][key] = value
    return plugin


def with_spec(kind, **changes):
    obj = renamed(istio_xds.find(istio_xds.manifests(), kind))
    obj["spec"].update(changes)
    return obj


def first_rule(kind, name=None, **changes):
    obj = renamed(istio_xds.find(istio_xds.manifests(), kind, name))
    key = "jwtRules" if kind == "RequestAuthentication" else "configPatches"
    obj["spec"][key][0].update(changes)
    return obj


REFUSED = {
    "failStrategy FAIL_SOMETIMES": (
        wasmplugin(failStrategy="FAIL_SOMETIMES"),
        'spec.failStrategy: Unsupported value: "FAIL_SOMETIMES"',
    ),
    "phase LATE": (wasmplugin(phase="LATE"), 'spec.phase: Unsupported value: "LATE"'),
    "no url": (wasmplugin(url=None), "spec.url: Required value"),
    "empty url": (wasmplugin(url=""), "spec.url: Invalid value"),
    "sha256 too short": (wasmplugin(sha256="abc"), "spec.sha256: Invalid value"),
    "sha256 in capitals": (wasmplugin(sha256="AB" * 32), "spec.sha256: Invalid value"),
    "sha256 with its prefix": (
        wasmplugin(sha256="sha256:" + "0" * 64),
        "spec.sha256: Invalid value",
    ),
    "type BOTH": (wasmplugin(type="BOTH"), 'spec.type: Unsupported value: "BOTH"'),
    "AuthorizationPolicy action PERMIT": (
        with_spec("AuthorizationPolicy", action="PERMIT"),
        'spec.action: Unsupported value: "PERMIT"',
    ),
    "RequestAuthentication empty issuer": (
        first_rule("RequestAuthentication", issuer=""),
        "spec.jwtRules.issuer in body should be at least 1 chars long",
    ),
    "EnvoyFilter applyTo HTTP_FILTERS": (
        first_rule("EnvoyFilter", "kubelet-scope-namespace-header", applyTo="HTTP_FILTERS"),
        'Unsupported value: "HTTP_FILTERS"',
    ),
    "DestinationRule tls mode STRICT": (
        with_spec("DestinationRule", trafficPolicy={"tls": {"mode": "STRICT"}}),
        'spec.trafficPolicy.tls.mode: Unsupported value: "STRICT"',
    ),
    "DestinationRule without host": (
        {**with_spec("DestinationRule"), "spec": {"exportTo": ["."]}},
        "spec.host: Required value",
    ),
}


@pytest.mark.parametrize("case", REFUSED, ids=list(REFUSED))
def test_invalid_variants_are_refused_by_the_apiserver(istio_api, case):
    """Enums, required fields, lengths and the sha256 pattern are OpenAPI schema, which
    1.20 enforces (--validate=false: the server's verdict, not kubectl's)."""
    obj, message = REFUSED[case]
    r = server_dry_run(istio_api, obj)
    assert r.returncode != 0, f"{case} was accepted"
    assert message in r.stderr, r.stderr


def test_a_misspelt_field_is_refused_by_kubectl_and_pruned_by_the_apiserver(istio_api, installed):
    """Unknown fields: kubectl's client-side schema check refuses them; an apiserver
    1.20 drops them silently. A misspelt `pluginConfig` therefore leaves the plugin
    without configuration, which the filter refuses (so Envoy fails closed)."""
    plugin = wasmplugin(pluginConfig=None)
    plugin["spec"]["pluginconfig"] = istio_xds.find(istio_xds.manifests(), "WasmPlugin")["spec"][
        "pluginConfig"
    ]
    r = kubectl(
        istio_api, "create", "--dry-run=server", "-f", "-", stdin=json.dumps(plugin), check=False
    )
    assert r.returncode != 0 and 'unknown field "pluginconfig"' in r.stderr, r.stderr
    r = server_dry_run(istio_api, plugin, "-o", "json", check=True)
    stored = json.loads(r.stdout)
    assert "pluginconfig" not in stored["spec"] and "pluginConfig" not in stored["spec"]
    resource = istio_xds.wasm_extension_config(stored, stack.WASM)
    assert resource["typed_config"]["config"]["configuration"] == {}
    out = validate_inline(WORK / "istio-validate-pruned", installed, resource, expect_ok=False)
    assert "kubelet-scope: invalid configuration: needs inject or tenancy" in out, out


CEL_ONLY = {
    # x-kubernetes-validations (CEL) are ignored by 1.20; an apiserver >= 1.25 (CEL
    # rules beta) refuses these, and so does istiod's validation.
    "url of scheme ftp": wasmplugin(url="ftp://registry.example/filter.wasm"),
    "selector and targetRefs": wasmplugin(
        targetRefs=[{"kind": "Gateway", "name": "kubelet-scope"}]
    ),
    "both jwks and jwksUri": first_rule(
        "RequestAuthentication", jwksUri="https://kubernetes.default.svc/openid/v1/jwks"
    ),
}


@pytest.mark.parametrize("case", CEL_ONLY, ids=list(CEL_ONLY))
def test_what_only_istios_cel_rules_refuse_passes_apiserver_1_20(istio_api, case):
    r = server_dry_run(istio_api, CEL_ONLY[case], check=True)
    assert "created (server dry run)" in r.stdout


# -- 2. the Envoy configuration Istio generates ------------------------------------------


def gateway_values(s, objects, ecds_resource, token="unused", control_plane_ca=None):
    """envoy/istio-gateway.yaml's placeholders for stack `s`: the gateway listener on
    the stack's tenant port, the ECDS file holding `ecds_resource`, the gateway pod's
    control-plane token `token`, the Secret's CA `control_plane_ca`."""
    auth = istio_xds.find(objects, "RequestAuthentication")["spec"]["jwtRules"][0]
    ecds = s.dir / "ecds.json"
    istio_xds.write_ecds(ecds, ecds_resource)
    token_dir = s.dir / "gateway-token"
    token_dir.mkdir(exist_ok=True)
    (token_dir / "control-plane-token").write_text(token)
    # The ConfigMap of control-plane-client.yaml, its path mapped.
    sds = yaml.safe_load(
        istio_xds.find(istio_xds.manifests(), "ConfigMap")["data"]["control-plane-token-sds.yaml"]
    )
    sds["resources"][0]["generic_secret"]["secret"]["filename"] = str(
        token_dir / "control-plane-token"
    )
    (s.dir / "control-plane-token-sds.yaml").write_text(json.dumps(sds))
    # What istiod serves as kubernetes://kubelet-scope-ca-cacert from the Secret.
    (s.dir / "control-plane-ca-sds.yaml").write_text(
        json.dumps(
            {
                "resources": [
                    {
                        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret",
                        "name": "kubernetes://kubelet-scope-ca-cacert",
                        "validation_context": {
                            "trusted_ca": {"filename": str(control_plane_ca or s.kubelet_cert)}
                        },
                    }
                ]
            }
        )
    )
    return {
        "ADMIN_PORT": s.ports["admin"],
        "GATEWAY_PORT": s.ports["tenant"],
        "KUBELET_PORT": s.ports["kubelet"],
        "CONTROL_PLANE_PORT": s.ports["control_plane"],
        "GATEWAY_CERT": s.kubelet_cert,
        "GATEWAY_KEY": s.dir / "kubelet.key",
        "KUBELET_CA_FILE": s.kubelet_cert,
        "KUBELET_TOKEN_SDS_FILE": s.dir / "token-sds.yaml",
        "ECDS_FILE": ecds,
        "JWT_ISSUER": json.dumps(auth["issuer"]),
        "JWKS": json.dumps(auth["jwks"]),
        "CONTROL_PLANE_TOKEN_SDS_FILE": s.dir / "control-plane-token-sds.yaml",
        "CONTROL_PLANE_TOKEN_DIR": token_dir,
        "CONTROL_PLANE_CA_SDS_FILE": s.dir / "control-plane-ca-sds.yaml",
    }


def render_gateway(s, objects, ecds_resource, **kwargs):
    return stack.render_envoy_config(
        gateway_values(s, objects, ecds_resource, **kwargs), istio_xds.TEMPLATE
    )


def module_resource(objects):
    """The WasmPlugin's ECDS resource once istio-agent fetched the module (the
    release build: the image's plugin.wasm)."""
    return istio_xds.wasm_extension_config(istio_xds.find(objects, "WasmPlugin"), stack.WASM)


def http_filters(config):
    listener = config["static_resources"]["listeners"][0]
    return listener["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"]


def cluster(config, name):
    return next(c for c in config["static_resources"]["clusters"] if c["name"] == name)


def validate_inline(workdir, objects, resource, expect_ok=True):
    """`envoy --mode validate` on the gateway configuration with the ECDS resource
    in place of its discovery (validate mode fetches nothing): the filter's own
    configuration check runs on what Istio hands it."""
    s = stack.Stack(stack.clean_dir(workdir), render=lambda s: "")
    s.prepare()
    config = yaml.safe_load(render_gateway(s, objects, resource))
    [f] = [f for f in http_filters(config) if "config_discovery" in f]
    del f["config_discovery"]
    f.update(name=resource["name"], typed_config=resource["typed_config"])
    s.envoy_config.write_text(yaml.safe_dump(config))
    if expect_ok:
        return validate(s.envoy_config)
    r = envoy_validate(s.envoy_config)
    assert r.returncode != 0, r.stdout[-2000:]
    return r.stdout + r.stderr


def test_the_istio_gateway_configuration_validates(installed):
    s = stack.Stack(stack.clean_dir(WORK / "istio-validate"), render=lambda s: "")
    s.prepare()
    s.envoy_config.write_text(render_gateway(s, installed, module_resource(installed)))
    validate(s.envoy_config)
    # The configuration string Istio makes of pluginConfig is one the filter takes.
    out = validate_inline(WORK / "istio-validate-inline", installed, module_resource(installed))
    assert "kubelet-scope: configured:" in out, out
    # Left as shipped, the RequestAuthentication's key set has no key: Envoy refuses
    # the listener (the gateway then serves nothing).
    s.envoy_config.write_text(render_gateway(s, istio_xds.manifests(), module_resource(installed)))
    r = envoy_validate(s.envoy_config)
    assert r.returncode != 0 and "Jwks doesn't have any valid public key" in r.stdout + r.stderr


def test_the_gateway_configuration_is_what_istio_derives_from_deploy_istio(istio_api, installed):
    """Every part of envoy/istio-gateway.yaml that a deploy/istio object decides is
    what Istio derives from that object as the apiserver stored it."""
    s = stack.Stack(stack.clean_dir(WORK / "istio-derived"), render=lambda s: "")
    s.prepare()
    config = yaml.safe_load(render_gateway(s, installed, module_resource(installed)))
    filters = http_filters(config)
    names = [f["name"] for f in filters]
    by_name = {f["name"]: f for f in filters}
    plugin = istio_xds.find(installed, "WasmPlugin")
    jwt = names.index(istio_xds.JWT_FILTER)

    # jwt_authn, then (phase AUTHZ) the WasmPlugin, then the AuthorizationPolicy's RBAC.
    assert by_name[istio_xds.JWT_FILTER]["typed_config"] == istio_xds.jwt_authn_config(
        istio_xds.find(installed, "RequestAuthentication")
    )
    assert plugin["spec"]["phase"] == "AUTHZ"
    wasm = names.index(istio_xds.resource_name(plugin))
    assert names.index("envoy.filters.http.rbac") == wasm + 1
    assert by_name["envoy.filters.http.rbac"]["typed_config"] == istio_xds.rbac_config(
        istio_xds.find(installed, "AuthorizationPolicy")
    )
    discovery = filters[wasm]["config_discovery"]
    assert discovery["type_urls"] == [istio_xds.WASM_TYPE, istio_xds.RBAC_TYPE]
    assert discovery["config_source"]["initial_fetch_timeout"] == "0s"

    # The EnvoyFilter's patches, where Istio inserts them (relative to jwt_authn).
    header_patches = istio_xds.find(installed, "EnvoyFilter", "kubelet-scope-namespace-header")
    for patch in header_patches["spec"]["configPatches"]:
        assert patch["applyTo"] == "HTTP_FILTER" and patch["match"]["context"] == "GATEWAY"
        assert (
            patch["match"]["listener"]["filterChain"]["filter"]["subFilter"]["name"]
            == istio_xds.JWT_FILTER
        )
        at = {"INSERT_BEFORE": jwt - 1, "INSERT_AFTER": jwt + 1}[patch["patch"]["operation"]]
        assert filters[at] == patch["patch"]["value"], patch["patch"]["operation"]
    # Nothing else in the chain but what Istio always adds, the installer's kubelet
    # credential and the router.
    before, after = (
        next(
            p["patch"]["value"]["name"]
            for p in header_patches["spec"]["configPatches"]
            if p["patch"]["operation"] == op
        )
        for op in ("INSERT_BEFORE", "INSERT_AFTER")
    )
    assert names == [
        before,
        istio_xds.JWT_FILTER,
        after,
        istio_xds.resource_name(plugin),
        "envoy.filters.http.rbac",
        "envoy.filters.http.grpc_stats",
        "envoy.filters.http.fault",
        "envoy.filters.http.cors",
        "envoy.filters.http.credential_injector",
        "envoy.filters.http.router",
    ]

    # The snapshot's cluster: Istio's name for the DestinationRule's host and the
    # Service's port, the filter's snapshot.cluster, with the rule's TLS and the
    # EnvoyFilter's credential.
    rule = istio_xds.find(installed, "DestinationRule")
    name = istio_xds.cluster_name(rule["spec"]["host"], 443)
    assert plugin["spec"]["pluginConfig"]["snapshot"]["cluster"] == name
    assert plugin["spec"]["pluginConfig"]["snapshot"]["authority"] == SERVICE
    control_plane = cluster(config, name)
    tls = rule["spec"]["trafficPolicy"]["tls"]
    assert tls["mode"] == "SIMPLE"
    socket = control_plane["transport_socket"]["typed_config"]
    assert socket["sni"] == tls["sni"]
    combined = socket["common_tls_context"]["combined_validation_context"]
    assert combined["default_validation_context"]["match_subject_alt_names"] == [
        {"exact": n} for n in tls["subjectAltNames"]
    ]
    assert combined["validation_context_sds_secret_config"]["name"] == (
        f"kubernetes://{tls['credentialName']}-cacert"
    )
    token_patch = istio_xds.find(installed, "EnvoyFilter", "kubelet-scope-control-plane-token")
    [patch] = token_patch["spec"]["configPatches"]
    assert patch["applyTo"] == "CLUSTER" and patch["patch"]["operation"] == "MERGE"
    assert patch["match"]["cluster"] == {"service": rule["spec"]["host"], "portNumber": 443}
    mapped = json.loads(
        json.dumps(patch["patch"]["value"])
        .replace(POD_SDS, str(s.dir / "control-plane-token-sds.yaml"))
        .replace(POD_TOKEN_DIR, str(s.dir / "gateway-token"))
    )
    assert (
        control_plane["typed_extension_protocol_options"]
        == mapped["typed_extension_protocol_options"]
    )

    # Every deploy/istio object selects the same gateway, and the NetworkPolicy lets
    # that gateway reach the control plane's pods.
    labels = {"istio": "kubelet-scope-gateway"}
    for obj in installed:
        selector = obj["spec"].get("selector") or obj["spec"].get("workloadSelector")
        assert (selector.get("matchLabels") or selector.get("labels")) == labels, obj["kind"]
    policy = istio_xds.find(istio_xds.manifests(), "NetworkPolicy")["spec"]
    [rule] = policy["ingress"]
    assert rule["from"] == [{"podSelector": {"matchLabels": labels}}]
    deployment = manifest("Deployment", path=CONTROL_PLANE_MANIFEST)
    assert policy["podSelector"] == deployment["spec"]["selector"]
    ports = deployment["spec"]["template"]["spec"]["containers"][0]["ports"]
    # The snapshot's port only: the gateway does not use the ext_authz listener.
    assert [p["port"] for p in rule["ports"]] == ["https"]
    assert "https" in [p["name"] for p in ports]


def test_istio_hands_the_plugin_configuration_over_as_one_json_string(installed):
    plugin = istio_xds.find(installed, "WasmPlugin")
    value = module_resource(installed)["typed_config"]["config"]["configuration"]["value"]
    assert json.loads(value) == plugin["spec"]["pluginConfig"]
    # Whole numbers stay whole numbers (the filter's integer fields refuse 3.3554432e+07).
    assert '"maxJsonBodyBytes":33554432' in value and '"pollTimeoutMs":30000' in value
    config = module_resource(installed)["typed_config"]["config"]
    assert config["name"] == "kubelet-scope.kubelet-scope-tenant"
    assert "vm_id" not in config["vm_config"] and "root_id" not in config
    assert config["failure_policy"] == "FAIL_CLOSED"


def gateway_stack(api, objects, workdir, resource, token=None, edit=None):
    """The gateway's Envoy (envoy/istio-gateway.yaml with ECDS resource `resource`)
    in front of the stand-in, the control plane run with the Deployment's arguments
    plus the gateway's ServiceAccount, on the real apiserver. token: what the gateway
    pod's projected volume holds (by default a real one of the gateway's account);
    edit: a function changing the configuration (a dict) before it is written."""
    ca, cert, key = stack.issue_certificate(workdir, "control-plane", f"DNS:{SERVICE},IP:127.0.0.1")
    if token is None:
        token = api.token(NAMESPACE, GATEWAY_ACCOUNT, CONTROL_PLANE_AUDIENCE)

    def render(s):
        text = render_gateway(s, objects, resource, token=token, control_plane_ca=ca)
        if edit is None:
            return text
        config = yaml.safe_load(text)
        edit(config)
        return yaml.safe_dump(config)

    return stack.Stack(
        workdir,
        kubeconfig=api.kubeconfig(),
        control_plane_args=[
            *control_plane_args(cert, key),
            f"--allow-serviceaccount={NAMESPACE}:{GATEWAY_ACCOUNT}",
        ],
        control_plane_ca=ca,
        render=render,
    )


def scrape(api, s, path, namespace=None, headers=None, audience=TENANT_AUDIENCE):
    """GET through the gateway as ServiceAccount `prometheus` of `namespace`, with a
    token from the apiserver's TokenRequest API (what a projected volume holds)."""
    h = dict(headers or {})
    if namespace:
        h["authorization"] = "Bearer " + api.token(namespace, "prometheus", audience)
    return stack.request(s.ports["tenant"], path, h, tls_ca=s.kubelet_cert)


def reached_kubelet(s):
    return [r["path"] for r in s.kubelet_requests() if not r["path"].startswith("/_standin")]


def test_the_filter_serves_tenants_through_the_istio_gateway(istio_api, installed):
    api = istio_api
    workdir = stack.clean_dir(WORK / "istio-gateway")
    with gateway_stack(api, installed, workdir, module_resource(installed)) as s:
        stack.wait_for(
            "the filter to have a snapshot",
            lambda: scrape(api, s, "/metrics/probes", "acme-monitoring", PROBES).status == 200,
        )
        # acme-monitoring is labelled tenant=acme: its scraper is acme, sees `default`
        # (tenant=acme) with its team injected, and not kube-system.
        r = scrape(api, s, "/metrics/probes", "acme-monitoring", PROBES)
        assert 'namespace="default"' in r.text and 'team="web"' in r.text, r
        assert 'namespace="kube-system"' not in r.text
        pods = scrape(api, s, "/pods", "acme-monitoring")
        assert pods.status == 200
        assert set(stack.json_namespaces("/pods", pods.body)) == {"default"}
        # A client-sent namespace header changes nothing, with a token or without.
        spoofed = scrape(
            api,
            s,
            "/metrics/probes",
            "acme-monitoring",
            {"x-kubelet-scope-namespace": "kube-system", **PROBES},
        )
        assert spoofed.body == r.body
        before = len(reached_kubelet(s))
        r = scrape(
            api,
            s,
            "/metrics/probes",
            headers={"x-kubelet-scope-namespace": "acme-monitoring", **PROBES},
        )
        assert (r.status, r.body) == (404, b"404 page not found\n"), r
        # No token: Istio's jwt_authn lets it pass, no namespace header is set, the
        # filter denies it as it denies an unknown tenant.
        assert scrape(api, s, "/metrics/probes").status == 404
        # A namespace without the tenant label (globex, named like a tenant), and
        # kube-system, are no tenants.
        for namespace in ("globex", "kube-system"):
            r = scrape(api, s, "/metrics/probes", namespace, PROBES)
            assert (r.status, r.body) == (404, b"404 page not found\n"), namespace
        # Denied paths, even for a tenant.
        assert scrape(api, s, "/configz", "acme-monitoring").status == 404
        assert scrape(api, s, "/run/kube-system/etcd/etcd?cmd=id", "acme-monitoring").status == 404
        assert len(reached_kubelet(s)) == before
        # A token of another audience (the apiserver's) is refused by jwt_authn (a
        # verified token that is not for us: 403; an unverifiable one: 401).
        r = scrape(
            api, s, "/metrics/probes", "acme-monitoring", audience="https://kubernetes.default.svc"
        )
        assert (r.status, r.body) == (403, b"Audiences in Jwt are not allowed"), r
        forged = api.token("acme-monitoring", "prometheus", TENANT_AUDIENCE)[:-4] + "AAAA"
        r = scrape(api, s, "/metrics/probes", headers={"authorization": "Bearer " + forged})
        assert (r.status, r.body) == (401, b"Jwt verification fails"), r
        # The kubelet saw the node's credential only, never a tenant's token or header.
        for seen in s.kubelet_requests()[-4:]:
            headers = dict(seen["headers"])
            assert headers["authorization"] == "Bearer " + stack.NODE_TOKEN
            assert "x-kubelet-scope-namespace" not in headers
        # The snapshot came with the gateway's token: the control plane answered it.
        assert snapshot_fetches(s, "success") > 0
        assert set(control_plane_answers(s)) <= {"200", "304"}, control_plane_answers(s)


def test_the_wasmplugin_holds_the_placeholders_the_release_renders():
    """The contract with `make release`: it replaces the registry and the tag (the
    workspace's version) of `url`, and `sha256`, whose placeholder (64 zeros) is a
    digest no image has: unrendered, istio-agent refuses the module (below)."""
    spec = istio_xds.find(istio_xds.manifests(), "WasmPlugin")["spec"]
    version = tomllib.loads((stack.REPO / "Cargo.toml").read_text())["workspace"]["package"][
        "version"
    ]
    assert spec["url"] == f"oci://registry.example/kubelet-scope/kubelet-scope-filter:{version}"
    assert spec["sha256"] == "0" * 64


def test_a_module_istio_cannot_fetch_denies_instead_of_passing(istio_api, installed):
    """istio-agent fetches the module before Envoy sees the plugin; when it cannot
    (registry unreachable, a digest that does not match, as the placeholder's never
    does, not a wasm file), it hands Envoy, under the plugin's name, an RBAC filter:
    deny-all for FAIL_CLOSE. Requests are then refused and never reach the kubelet.
    The same Envoy then gets what FAIL_OPEN would have given (everything passes,
    unfiltered: why the manifest says FAIL_CLOSE), and the module once fetched."""
    api = istio_api
    plugin = istio_xds.find(installed, "WasmPlugin")
    assert plugin["spec"]["failStrategy"] == "FAIL_CLOSE"
    workdir = stack.clean_dir(WORK / "istio-fetch-failed")
    with gateway_stack(api, installed, workdir, istio_xds.agent_fallback(plugin)) as s:
        for path in ("/metrics/probes", "/pods", "/healthz"):
            r = scrape(api, s, path, "acme-monitoring", PROBES)
            assert (r.status, r.body) == (403, b"RBAC: access denied"), (path, r)
        assert reached_kubelet(s) == []
        stats = s.envoy_stats()
        assert stats["http.outbound_0.0.0.0_10443.rbac.wasm-default-deny.denied"] >= 3, stats

        def ecds_version():
            return s.envoy_stats().get(
                "extension_config_discovery.http_filter."
                + istio_xds.resource_name(plugin)
                + ".update_success"
            )

        def deliver(resource):
            seen = ecds_version()
            istio_xds.write_ecds(s.dir / "ecds.json", resource)
            stack.wait_for("Envoy to apply the ECDS update", lambda: ecds_version() > seen)

        # What FAIL_OPEN would give: the kubelet's whole answer, every namespace.
        deliver(istio_xds.agent_fallback(plugin, "FAIL_OPEN"))
        r = scrape(api, s, "/metrics/probes", "acme-monitoring", PROBES)
        assert r.status == 200 and 'namespace="kube-system"' in r.text
        # The module fetched at last (the agent converts every ECDS push anew).
        deliver(module_resource(installed))
        stack.wait_for(
            "the filter to serve acme",
            lambda: scrape(api, s, "/metrics/probes", "acme-monitoring", PROBES).status == 200,
        )
        r = scrape(api, s, "/metrics/probes", "acme-monitoring", PROBES)
        assert 'namespace="default"' in r.text and 'namespace="kube-system"' not in r.text


@pytest.mark.parametrize("broken", ["module", "configuration"])
def test_a_module_envoy_cannot_load_denies_instead_of_passing(istio_api, installed, broken):
    """What istio-agent passes on but Envoy cannot run: a file with the wasm magic
    number but no module (the agent checks only that), or a configuration the filter
    refuses (pluginConfig without `tenancy` or `inject`). Envoy rejects the ECDS
    resource; the filter, with no configuration, answers 500 and forwards nothing."""
    api = istio_api
    workdir = stack.clean_dir(WORK / "istio-unloadable" / broken)
    resource = module_resource(installed)
    config = resource["typed_config"]["config"]
    if broken == "module":
        (workdir / "plugin.wasm").write_bytes(b"\0asm\1\0\0\0" + b"not a module")
        config["vm_config"]["code"]["local"]["filename"] = str(workdir / "plugin.wasm")
    else:
        config["configuration"]["value"] = istio_xds.plugin_configuration(
            {"snapshot": {"cluster": "x"}}
        )
    with gateway_stack(api, installed, workdir, resource) as s:
        name = "extension_config_discovery.http_filter." + resource["name"] + ".update_rejected"
        stack.wait_for("the ECDS resource to be rejected", lambda: s.envoy_stats().get(name, 0) > 0)
        for path in ("/metrics/probes", "/healthz"):
            r = scrape(api, s, path, "acme-monitoring", PROBES)
            assert r.status == 500 and r.body == b"", (path, r)
        assert reached_kubelet(s) == []


def test_without_the_gateways_token_the_snapshot_is_refused_and_tenants_get_503(
    istio_api, installed
):
    """The control plane answers the snapshot only to an allowed ServiceAccount's token:
    without the EnvoyFilter's credential_injector (an istio-proxy built without it),
    or with another account's token, the filter gets none and fails closed."""
    api = istio_api
    name = istio_xds.cluster_name(istio_xds.find(installed, "DestinationRule")["spec"]["host"], 443)

    def without_credential(config):
        del cluster(config, name)["typed_extension_protocol_options"]

    cases = {
        "no credential": ({"edit": without_credential}, "401"),
        "another account": (
            {"token": api.token("kube-system", "prometheus", CONTROL_PLANE_AUDIENCE)},
            "403",
        ),
    }
    for case, (kwargs, code) in cases.items():
        workdir = stack.clean_dir(WORK / "istio-snapshot" / case.replace(" ", "-"))
        with gateway_stack(api, installed, workdir, module_resource(installed), **kwargs) as s:
            stack.wait_for(
                f"{case}: a refused snapshot fetch", lambda: snapshot_fetches(s, "failure") > 0
            )
            r = scrape(api, s, "/metrics/probes", "acme-monitoring", PROBES)
            assert r.status == 503, (case, r)
            assert snapshot_fetches(s, "success") == 0, case
            served = control_plane_answers(s)
            assert set(served) == {code}, (case, served)
