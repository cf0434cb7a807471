"""A real Prometheus (Debian's package) scrapes /metrics/cadvisor through Envoy as a
tenant, and queries by the label the filter injected.

World: the kubelet stand-in (envoy/cluster/ scrapes the real kubelet too)."""

import collections
import subprocess

import stack
from conftest import WORK, read_fixture, tenant_namespaces
from stack import line_namespace

FIXTURE = "cadvisor-k8s1.20-synthetic.txt"  # the project's own (testdata/synthetic/)
METRIC = "container_cpu_usage_seconds_total"


def expected_teams(spec, tenant):
    """count by (team) of METRIC in what `tenant` may see, from the raw capture."""
    own = tenant_namespaces(spec, tenant)
    counts = collections.Counter()
    for line in read_fixture(FIXTURE).decode().splitlines():
        if not line.startswith(METRIC + "{"):
            continue
        ns = line_namespace(line)
        if ns is None:
            counts[""] += 1  # nonNamespacedSeries: keep (no team)
        elif ns in own:
            counts[spec[ns]["team"]] += 1
    return dict(counts)


def test_prometheus_scrapes_through_envoy_and_queries_by_injected_team(live, spec):
    workdir = stack.clean_dir(WORK / "prometheus")
    prometheus = stack.Prometheus(
        workdir,
        [
            {
                "job_name": "kubelet-cadvisor-acme",
                "metrics_path": "/metrics/cadvisor",
                # The body carries 2020 timestamps; store samples at scrape time.
                "honor_timestamps": False,
                "authorization": {"type": "Bearer", "credentials": stack.jwt("acme")},
                "static_configs": [{"targets": [f"127.0.0.1:{live.ports['tenant']}"]}],
            }
        ],
    )
    query = prometheus.query

    try:
        up = stack.wait_for("a successful scrape", lambda: query("up == 1"), timeout=30)
        assert up[0]["metric"]["job"] == "kubelet-cadvisor-acme"
        targets = prometheus.targets()
        assert targets[0]["health"] == "up" and targets[0]["lastError"] == "", targets
        result = stack.wait_for(
            "the injected teams", lambda: query(f"count by (team) ({METRIC})"), timeout=10
        )
        got = {r["metric"].get("team", ""): int(r["value"][1]) for r in result}
        assert got == expected_teams(spec, "acme")
        assert len(got) >= 2
        # Nothing of another tenant was stored.
        stored = query("count by (namespace) ({__name__=~'.+', namespace!=''})")
        namespaces = {r["metric"]["namespace"] for r in stored}
        assert namespaces <= tenant_namespaces(spec, "acme"), namespaces
    finally:
        prometheus.stop()


def test_promtool_accepts_the_tenant_body(live):
    promtool = stack.PROMETHEUS.parent / "promtool"
    r = live.get(
        "tenant", "/metrics/cadvisor", tenant="acme", headers={"x-standin-fixture": FIXTURE}
    )
    assert r.status == 200
    check = subprocess.run([promtool, "check", "metrics"], input=r.body, capture_output=True)
    # promtool exits 1 on parse errors, 3 on lint findings (naming) the kubelet's
    # own bodies already have.
    assert check.returncode in (0, 3), check.stdout + check.stderr
