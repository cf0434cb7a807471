"""Through the tenant listener, Envoy with the filter answers as a kubelet that runs
only the tenant's pods: same status, content type and encoding for every route of
kubelets 1.20-1.35, each method, with and without a trailing slash, with the queries
a kubelet honours. A path the tenant may not use looks like one the kubelet does not
serve.

World: the kubelet stand-in (envoy/e2e/kubelet_standin.py), which routes as a kubelet
does (exact Prometheus paths, go-restful's trailing slashes, ServeMux's redirect to
/runningpods/, gzip only on /metrics*). The same table is to run against the real
kubelet of `make cluster-test` once that exists.
"""

import gzip
import json

import pytest

import stack

TEXT = "text/plain; version=0.0.4; charset=utf-8"
JSON = "application/json"
PLAIN = "text/plain; charset=utf-8"
NOT_FOUND = (404, PLAIN, b"404 page not found\n")

# What a kubelet serving only the tenant's pods answers a GET with.
READ = {
    "/metrics": (200, TEXT),
    "/metrics/cadvisor": (200, TEXT),
    "/metrics/resource": (200, TEXT),
    "/metrics/probes": (200, TEXT),
    "/metrics/slis": (200, TEXT),
    "/stats/summary": (200, JSON),
    "/stats/summary/": (200, JSON),
    "/stats/summary?only_cpu_and_memory=true": (200, JSON),
    "/pods": (200, JSON),
    "/pods/": (200, JSON),
    "/runningpods/": (200, JSON),
    "/healthz": (200, PLAIN),
}

# Paths a kubelet does not serve (for some, not since 1.19/1.20), or serves only to
# the node's owner: the tenant gets Go's 404 for all of them.
ABSENT = [
    "/metrics/",
    "/metrics/cadvisor/",
    "/metrics/slis/",
    "/metrics/resource/v1alpha1/",
    "/spec",
    "/spec/",
    "/stats",
    "/stats/",
    "/stats/container",
    "/stats/kube-system/etcd/uid/etcd",
    "/stats/etcd/etcd",
    "/healthz/",
    "/configz",
    "/logs/",
    "/logs/syslog",
    "/debug/pprof/",
    "/debug/flags/v",
    "/exec/kube-system/etcd/etcd?command=sh",
    "/attach/kube-system/etcd/etcd",
    "/portForward/kube-system/etcd",
    "/containerLogs/kube-system/etcd/etcd",
    "/checkpoint/kube-system/etcd/etcd",
    "/pods/x",
    "/nonsense",
    "/",
]


def tenant_request(live, path, method="GET", headers=None):
    h = {"authorization": "Bearer " + stack.jwt("acme"), **(headers or {})}
    return stack.request(live.ports["tenant"], path, h, method=method)


@pytest.mark.parametrize("path", sorted(READ))
def test_read_endpoints_answer_like_the_kubelet(live, path):
    status, content_type = READ[path]
    r = tenant_request(live, path)
    assert (r.status, r.header("content-type")) == (status, content_type), r
    assert r.header("content-encoding") in (None, "identity")
    if content_type == JSON:
        json.loads(r.body)


@pytest.mark.parametrize("path", sorted(READ))
def test_head_on_read_endpoints_has_no_body(live, path):
    r = tenant_request(live, path, method="HEAD")
    assert r.status == READ[path][0] and r.body == b"", r


@pytest.mark.parametrize("path", ABSENT)
def test_paths_the_tenant_may_not_use_look_absent(live, path):
    for method in ("GET", "POST"):
        r = tenant_request(live, path, method=method)
        assert (r.status, r.header("content-type"), r.body) == NOT_FOUND, (method, path, r)
        assert (r.header("x-kubelet-scope-denied") or "").startswith("kubelet-scope:"), r.headers


def test_runningpods_redirects_as_the_kubelet_does(live):
    r = tenant_request(live, "/runningpods?x=1")
    assert r.status == 301, r
    assert r.header("location") == "/runningpods/?x=1"
    assert r.header("content-type") == "text/html; charset=utf-8"


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
def test_read_endpoints_take_only_get_and_head(live, method):
    for path in ("/metrics/cadvisor", "/stats/summary", "/pods"):
        r = tenant_request(live, path, method=method)
        assert r.status == 405, (method, path, r)
        assert r.header("allow") == "GET, HEAD"
        assert r.body == b"405: Method Not Allowed"


def test_json_is_never_gzipped_metrics_are(live):
    gz = {"accept-encoding": "gzip, deflate"}
    for listener, tenant in (("tenant", "acme"), ("inject", None)):
        for path in ("/pods", "/stats/summary"):
            r = live.get(listener, path, tenant=tenant, headers=gz)
            assert r.status == 200 and r.header("content-encoding") is None, (listener, path)
            json.loads(r.body)
        r = live.get(listener, "/metrics/cadvisor", tenant=tenant, headers=gz)
        assert r.status == 200 and r.header("content-encoding") == "gzip", (listener, r.headers)
        assert b"container_" in gzip.decompress(r.body)


def test_kubelet_errors_keep_their_status_not_their_body(live):
    for status in (500, 503, 404, 403):
        r = live.get(
            "tenant", "/metrics/cadvisor", tenant="acme", headers={"x-standin-status": str(status)}
        )
        assert r.status == status, r
        assert b"stand-in" not in r.body and r.header("content-type") == PLAIN, r
    # The platform's listener sees the kubelet's own answer.
    r = live.get("inject", "/metrics/cadvisor", headers={"x-standin-status": "500"})
    assert r.status == 500 and b"stand-in error 500" in r.body


def test_denied_paths_never_reach_the_kubelet(live):
    for path in ABSENT:
        tenant_request(live, path)
    seen = [r["path"] for r in live.kubelet_requests()]
    assert not set(seen) & set(ABSENT), seen
