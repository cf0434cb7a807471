"""The namespace map on its way from the control plane into Envoy's VMs: changes
propagate within 2 s (namespaces file, real apiserver), a stopped control plane
leaves the last snapshot serving until it is too old, no snapshot means 503.

World: the kubelet stand-in; the control plane on a namespaces file or a real apiserver."""

import os
import time

import pytest

import stack
from conftest import WORK, same_snapshot_source
from stack import write_namespaces_file

PROBES = "probes-k8s1.20-synthetic.txt"  # namespaces default, kube-system and others
PROPAGATION_LIMIT_S = 2.0


def team_of_default(s):
    """The team label Envoy's inject listener puts on namespace `default`."""
    r = s.get("inject", "/metrics/probes", headers={"x-standin-fixture": PROBES})
    assert r.status == 200
    for line in r.text.splitlines():
        if 'namespace="default"' in line:
            start = line.find(',team="')
            if start < 0:
                return None
            return line[start + 7 : line.index('"', start + 7)]
    raise AssertionError("no series of namespace default")


def wait_for_team(s, team, limit):
    """Seconds until Envoy answers with `team`; from then on every answer (fresh
    connections, any worker) must have it."""
    start = time.monotonic()
    while team_of_default(s) != team:
        elapsed = time.monotonic() - start
        assert elapsed < limit + 5, f"still no team={team} after {elapsed:.1f} s"
        time.sleep(0.02)
    elapsed = time.monotonic() - start
    for _ in range(4 * s.concurrency):
        assert team_of_default(s) == team
    return elapsed


def test_a_namespaces_file_change_reaches_envoy_within_2s():
    workdir = stack.clean_dir(WORK / "file-propagation")
    spec = {"default": {"team": "alpha", "tenant": "acme"}, "kube-system": {"team": "platform"}}
    write_namespaces_file(workdir / "namespaces.json", spec)
    with stack.Stack(workdir, namespaces_file=workdir / "namespaces.json") as s:
        s.wait_ready("acme")
        assert team_of_default(s) == "alpha"
        timings = []
        for team in ("beta", "gamma", "delta"):
            spec["default"]["team"] = team
            write_namespaces_file(workdir / "namespaces.json", spec)
            timings.append(wait_for_team(s, team, PROPAGATION_LIMIT_S))
        print(f"file change -> Envoy: {', '.join(f'{t * 1000:.0f} ms' for t in timings)}")
        assert max(timings) <= PROPAGATION_LIMIT_S, timings


@pytest.mark.skipif(
    not (stack.REPO / ".cache" / "kube" / "bin" / "kube-apiserver").exists()
    and not os.environ.get("KUBE_CACHE"),
    reason="kube-apiserver not built: `make kube-apiserver` (make e2e builds it)",
)
def test_a_namespace_label_change_in_the_apiserver_reaches_envoy_within_2s():
    workdir = stack.clean_dir(WORK / "apiserver-propagation")
    api = stack.Apiserver(workdir / "kube")
    try:
        api.label_namespace("default", {"team": "alpha", "tenant": "acme"})
        with stack.Stack(workdir / "stack", kubeconfig=api.kubeconfig()) as s:
            s.wait_ready("acme")
            assert team_of_default(s) == "alpha"
            timings = []
            for team in ("beta", "gamma"):
                api.label_namespace("default", {"team": team})
                timings.append(wait_for_team(s, team, PROPAGATION_LIMIT_S))
            print(f"apiserver change -> Envoy: {', '.join(f'{t * 1000:.0f} ms' for t in timings)}")
            assert max(timings) <= PROPAGATION_LIMIT_S, timings
    finally:
        api.stop()


def test_without_a_snapshot_tenants_get_503_and_injection_passes():
    workdir = stack.clean_dir(WORK / "no-control-plane")
    with stack.Stack(workdir, control_plane=False) as s:
        r = s.get("tenant", "/metrics/probes", tenant="acme")
        assert r.status == 503, r
        assert r.header("retry-after")
        # Injection without labels is the kubelet's body, unchanged.
        r = s.get("inject", "/metrics/probes", headers={"x-standin-fixture": PROBES})
        assert r.status == 200
        assert r.body == stack.fixture_path(PROBES).read_bytes()


def test_a_stopped_control_plane_leaves_the_last_snapshot_until_it_is_stale():
    workdir = stack.clean_dir(WORK / "stale")
    fast = {"pollTimeoutMs": 1000, "maxStalenessSeconds": 4}
    tenant = same_snapshot_source(stack.example_config("tenant"), fast)
    inject = same_snapshot_source(stack.example_config("inject"), fast)
    spec = {"default": {"team": "alpha", "tenant": "acme"}}
    write_namespaces_file(workdir / "namespaces.json", spec)
    with stack.Stack(
        workdir,
        tenant_config=tenant,
        inject_config=inject,
        namespaces_file=workdir / "namespaces.json",
    ) as s:
        s.wait_ready("acme")
        s.stop_process("control-plane")
        stopped = time.monotonic()
        # The last snapshot keeps serving...
        r = s.get("tenant", "/metrics/probes", tenant="acme", headers={"x-standin-fixture": PROBES})
        assert r.status == 200
        assert 'namespace="default"' in r.text
        # ...until it is older than maxStalenessSeconds: then tenants get 503, and
        # injection keeps the last labels.
        stack.wait_for(
            "tenant mode to fail closed",
            lambda: s.get("tenant", "/metrics/probes", tenant="acme").status == 503,
            timeout=15,
        )
        assert time.monotonic() - stopped >= 3
        assert team_of_default(s) == "alpha"
