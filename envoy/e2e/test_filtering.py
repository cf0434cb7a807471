"""Through the real Envoy (V8) with the release filter: injection, tenant isolation,
denied paths, identity handling, and V8 output == the native CLI's output.

World: the kubelet stand-in (captures of kubelets 1.9-1.35, errors, hangs, trailers, forced gzip, odd chunking: faults a real kubelet cannot be made to show)."""

import gzip
import json

import pytest

import stack
from conftest import (
    FIXTURES,
    TENANTS,
    cli_rewrite,
    kubelet_path,
    namespaces_of,
    read_fixture,
    tenant_namespaces,
)
from stack import line_namespace

TEXT_FIXTURES = [f for f in FIXTURES if not f.endswith(".json")]
# The project's own bodies (testdata/synthetic/), for the tests of one mechanism:
# they run whether or not the third-party captures are there.
CADVISOR = "cadvisor-k8s1.20-synthetic.txt"
PODS = "pods-k8s1.20-synthetic.json"


def fixture_header(name):
    return {"x-standin-fixture": name}


@pytest.mark.parametrize("fixture", TEXT_FIXTURES)
def test_injection_labels_every_mapped_series_and_changes_nothing_else(live, spec, fixture):
    original = read_fixture(fixture)
    r = live.get("inject", kubelet_path(fixture), headers=fixture_header(fixture))
    assert r.status == 200, r
    before = original.decode().splitlines()
    after = r.body.decode().splitlines()
    assert len(after) == len(before)
    mapping = stack.example_config("inject")["inject"]["labels"]
    injected = 0
    namespaces = [line_namespace(line) for line in before]
    for old, new, ns in zip(before, after, namespaces, strict=True):
        labels = spec.get(ns, {}) if ns else {}
        expected = [f'{mapping[k]}="{v}"' for k, v in labels.items() if k in mapping]
        stripped = new
        for label in expected:
            # Each label exactly once, appended to the label set.
            assert new.count("," + label) == 1, (new, label)
            stripped = stripped.replace("," + label, "", 1)
        assert stripped == old
        injected += bool(expected)
    if any(namespaces):
        assert injected > 0


@pytest.mark.parametrize("fixture", FIXTURES)
@pytest.mark.parametrize("tenant", TENANTS + ("platform",))
def test_a_tenant_sees_only_its_namespaces(live, spec, fixture, tenant):
    path = kubelet_path(fixture)
    r = live.get("tenant", path, tenant=tenant, headers=fixture_header(fixture))
    assert r.status == 200, r
    own = tenant_namespaces(spec, tenant)
    seen = namespaces_of(fixture, r.body)
    leaked = {ns for ns in seen if ns is not None and ns not in own}
    assert not leaked, f"{tenant} got {sorted(leaked)}"
    # Exactly the tenant's elements/series survive, none of its own is lost.
    expected = [ns for ns in namespaces_of(fixture) if ns in own or (ns is None)]
    assert sorted(map(str, seen)) == sorted(map(str, expected))
    if path in ("/pods", "/stats/summary"):
        json.loads(r.body)


@pytest.mark.parametrize("fixture", FIXTURES)
def test_envoy_output_equals_the_cli_output(live, fixture):
    """The wasm filter in V8 and the native CLI run the same logic: same bytes."""
    snapshot = live.snapshot()
    path = kubelet_path(fixture)
    body = read_fixture(fixture)
    for listener, config, tenant in (
        ("inject", live.inject_config, None),
        ("tenant", live.tenant_config, "acme"),
    ):
        r = live.get(listener, path, tenant=tenant, headers=fixture_header(fixture))
        code, out, err = cli_rewrite(config, snapshot, path, body, tenant)
        assert code == 0, err
        assert r.status == 200
        assert r.body == out, f"{listener}: V8 and CLI differ for {fixture}"


def test_runningpods_is_filtered_like_pods(live, spec):
    fixture = PODS
    r = live.get("tenant", "/runningpods/", tenant="acme", headers=fixture_header(fixture))
    assert r.status == 200
    own = tenant_namespaces(spec, "acme")
    assert set(i["metadata"]["namespace"] for i in json.loads(r.body)["items"]) <= own


@pytest.mark.parametrize(
    "path",
    [
        "/exec/default/web-0/app?command=sh",
        "/configz",
        "/logs/",
        "/logs/syslog",
        "/containerLogs/kube-system/etcd-0/etcd",
        "/debug/pprof/",
        "/spec/",
        "/metrics/../configz",
        "/metrics/%2e%2e/configz",
        "//configz",
        "/no-such-path",
    ],
)
def test_other_kubelet_paths_are_denied_before_reaching_the_kubelet(live, path):
    before = len(live.kubelet_requests())
    r = live.get("tenant", path, tenant="acme")
    # As a kubelet answers a path it does not serve; the reason is in a header.
    assert (r.status, r.body) == (404, b"404 page not found\n"), r
    assert r.header("x-kubelet-scope-denied").startswith("kubelet-scope:")
    seen = live.kubelet_requests()
    assert len(seen) == before, seen[-1]


def test_the_tenant_comes_only_from_the_verified_token(live, spec):
    fixture = CADVISOR
    spoofed = {"x-kubelet-scope-tenant": "globex", **fixture_header(fixture)}
    as_acme = live.get("tenant", "/metrics/cadvisor", tenant="acme", headers=spoofed)
    plain = live.get("tenant", "/metrics/cadvisor", tenant="acme", headers=fixture_header(fixture))
    assert as_acme.status == 200
    assert as_acme.body == plain.body
    assert set(namespaces_of(fixture, as_acme.body)) - {None} <= tenant_namespaces(spec, "acme")
    # Without a valid token there is no tenant at all: the JWT filter answers.
    for headers in (spoofed, {"authorization": "Bearer " + stack.jwt("acme", key=b"wrong-key")}):
        r = stack.request(live.ports["tenant"], "/metrics/cadvisor", headers)
        assert r.status == 401, r


def test_what_the_kubelet_receives(live):
    live.get(
        "tenant",
        "/metrics/probes",
        tenant="acme",
        headers={"x-kubelet-scope-tenant": "globex", "accept-encoding": "gzip"},
    )
    last = live.kubelet_requests()[-1]
    headers = dict(last["headers"])
    assert last["path"] == "/metrics/probes"
    # The node's token, added by Envoy; never the tenant's JWT or tenant header.
    assert headers["authorization"] == "Bearer " + stack.NODE_TOKEN
    assert "x-kubelet-scope-tenant" not in headers
    # The filter asks for what it can read.
    assert headers["accept-encoding"] == "identity"
    assert headers["accept"].startswith("text/plain")


def test_gzip_from_the_kubelet_is_refused_in_tenant_mode_and_passed_when_injecting(live):
    h = {"x-standin-gzip": "always"}
    r = live.get("tenant", "/metrics/cadvisor", tenant="acme", headers=h)
    assert (r.status, r.body) == (502, b"Bad Gateway\n"), r
    assert "content-encoding" in r.header("x-kubelet-scope-denied")
    r = live.get("inject", "/metrics/cadvisor", headers=h)
    assert r.status == 200
    assert r.header("content-encoding") == "gzip"
    assert gzip.decompress(r.body) == read_fixture(CADVISOR)


@pytest.mark.parametrize(
    "fixture",
    [
        CADVISOR,
        "stats-summary-k8s1.20-synthetic.json",
    ],
)
def test_a_body_ending_in_trailers(live, fixture):
    path = kubelet_path(fixture)
    body = read_fixture(fixture)
    h = {"x-standin-trailers": "1", **fixture_header(fixture)}
    code, out, err = cli_rewrite(live.tenant_config, live.snapshot(), path, body, "acme")
    assert code == 0, err
    if path.startswith("/metrics"):
        r = live.get("tenant", path, tenant="acme", headers=h)
        assert r.status == 200
        assert r.body == out
    else:
        # The end of a JSON document cannot be written after trailers began: the
        # stream is reset rather than ending in truncated JSON.
        try:
            r = live.get("tenant", path, tenant="acme", headers=h)
        except stack.http.client.HTTPException:
            return
        assert r.body == out, "a JSON body with trailers must be complete or reset"


def test_kubelet_errors_pass_through_as_errors(live):
    # The status passes; the body (which can name other tenants' pods) does not.
    r = live.get("tenant", "/metrics/cadvisor", tenant="acme", headers={"x-standin-status": "500"})
    assert (r.status, r.body) == (500, b"Internal Server Error\n"), r
    r = live.get(
        "tenant", "/metrics/cadvisor", tenant="acme", headers={"x-standin-hang": "headers"}
    )
    assert r.status == 504, r


def test_a_kubelet_that_stalls_mid_body_gives_a_truncated_response_not_a_leak(live, spec):
    fixture = CADVISOR
    h = {"x-standin-hang": "body", **fixture_header(fixture)}
    with pytest.raises(stack.http.client.IncompleteRead) as e:
        live.get("tenant", "/metrics/cadvisor", tenant="acme", headers=h)
    partial = e.value.partial
    assert set(namespaces_of(fixture, partial)) - {None} <= tenant_namespaces(spec, "acme")


@pytest.mark.parametrize("listener", ["tenant", "inject"])
def test_a_scraper_accepting_gzip_gets_the_rewritten_body_compressed(live, listener):
    fixture = CADVISOR
    path = kubelet_path(fixture)
    tenant = "acme" if listener == "tenant" else None
    config = live.tenant_config if tenant else live.inject_config
    h = {"accept-encoding": "gzip", **fixture_header(fixture)}
    r = live.get(listener, path, tenant=tenant, headers=h)
    assert r.status == 200
    assert r.header("content-encoding") == "gzip"
    code, out, err = cli_rewrite(config, live.snapshot(), path, read_fixture(fixture), tenant)
    assert code == 0, err
    assert gzip.decompress(r.body) == out
    # The kubelet was asked for identity all the same.
    assert dict(live.kubelet_requests()[-1]["headers"])["accept-encoding"] == "identity"
