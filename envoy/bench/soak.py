"""`make bench-soak`: tenants and the platform listener through Envoy for a while,
with the control plane restarted and the namespace map changed during the run.

A benchmark, not a test: it reports, and exits non-zero only when a tenant got a
byte it must not see. One stack (envoy/e2e/stack.py: Envoy with the filter, the
control plane on a namespaces file, the kubelet stand-in serving real captures).
Two tenants scrape `/metrics/cadvisor` and `/pods`, the platform scrapes
`/metrics/cadvisor` and `/stats/summary`; every `--change-every` seconds a team
label changes in the namespaces file, every `--restart-every` seconds the control
plane is stopped and started again. Namespaces that no map version ever gives a
tenant are its foreign ones; any of them in its body counts as an unfiltered byte.

Reported: requests, answers by status, Envoy's RSS and heap (its admin /memory;
the V8 heaps of the wasm VMs are inside RSS, Envoy exposes no per-VM figure), and
the filter's counters, at start and end.
"""

import argparse
import collections
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "e2e"))

import stack  # noqa: E402

CADVISOR = "cadvisor-k8s1.21-eks-docker-datadog.txt"
PODS = "pods-k8s1.35-minikube-containerd2.2-nri.json"
SUMMARY = "stats-summary-k8s1.35-minikube-containerd2.2-nri.json"


def namespace_map(namespaces, flip):
    """Tenants alternate over the captures' namespaces; `flip` moves the first one
    from acme to globex (and changes its team), as a platform team would."""
    spec = {}
    for i, ns in enumerate(namespaces):
        spec[ns] = {"tenant": ("acme", "globex")[i % 2], "team": f"team-{ns}-{flip}"}
    if flip % 2 and namespaces:
        spec[namespaces[0]]["tenant"] = "globex"
    return spec


def captured_namespaces():
    found = set()
    for name in (CADVISOR, PODS, SUMMARY):
        body = stack.fixture_path(name).read_bytes()
        if name.endswith(".json"):
            path = "/stats/summary" if name.startswith("stats") else "/pods"
            found.update(stack.json_namespaces(path, body))
        else:
            found.update(stack.series_namespaces(body))
    return sorted(ns for ns in found if ns)


def memory(s):
    pid = s.processes["envoy"].proc.pid
    rss_kb = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss_kb = int(line.split()[1])
    heap = json.loads(stack.request(s.ports["admin"], "/memory").body)
    return {
        "rss_mib": round(rss_kb / 1024, 1),
        "heap_allocated_mib": round(int(heap["allocated"]) / 2**20, 1),
        "heap_size_mib": round(int(heap["heap_size"]) / 2**20, 1),
    }


def filter_counters(s):
    text = stack.request(s.ports["admin"], "/stats?filter=kubelet_scope").text
    return {
        k.split("kubelet_scope_", 1)[1]: int(v)
        for k, v in (line.split(": ", 1) for line in text.splitlines() if ": " in line)
        if v.strip().isdigit()
    }


def scrape(s, plan, statuses, foreign):
    """One request of the plan; returns the number of foreign namespaces seen."""
    listener, path, tenant, fixture = plan
    try:
        r = s.get(listener, path, tenant=tenant, headers={"x-standin-fixture": fixture})
    except OSError as e:
        statuses[f"error {type(e).__name__}"] += 1
        return 0
    statuses[r.status] += 1
    if tenant is None or r.status != 200:
        return 0
    if path == "/metrics/cadvisor":
        seen = stack.series_namespaces(r.body)
    else:
        seen = stack.json_namespaces(path, r.body)
    return len(set(seen) & foreign[tenant])


def run(args):
    namespaces = captured_namespaces()
    versions = [namespace_map(namespaces, flip) for flip in range(2)]
    # Foreign: never the tenant's in any version of the map.
    foreign = {
        t: {ns for ns in namespaces if all(v[ns]["tenant"] != t for v in versions)}
        for t in ("acme", "globex")
    }
    workdir = stack.clean_dir(Path(args.workdir))
    ns_file = workdir / "namespaces.json"
    stack.write_namespaces_file(ns_file, versions[0])
    plans = [
        ("tenant", "/metrics/cadvisor", "acme", CADVISOR),
        ("tenant", "/pods", "globex", PODS),
        ("tenant", "/metrics/cadvisor", "globex", CADVISOR),
        ("tenant", "/stats/summary", "acme", SUMMARY),
        ("inject", "/metrics/cadvisor", None, CADVISOR),
        ("inject", "/stats/summary", None, SUMMARY),
    ]
    statuses = collections.Counter()
    leaks = changes = restarts = requests = 0
    with stack.Stack(workdir, namespaces_file=ns_file) as s:
        s.wait_ready("acme")
        start = {"memory": memory(s), "counters": filter_counters(s)}
        t0 = time.monotonic()
        next_change = t0 + args.change_every
        next_restart = t0 + args.restart_every
        while time.monotonic() - t0 < args.seconds:
            now = time.monotonic()
            if now >= next_change:
                changes += 1
                stack.write_namespaces_file(ns_file, versions[changes % 2])
                next_change = now + args.change_every
            if now >= next_restart:
                restarts += 1
                s.stop_process("control-plane")
                s.start_control_plane()
                next_restart = now + args.restart_every
            leaks += scrape(s, plans[requests % len(plans)], statuses, foreign)
            requests += 1
        end = {"memory": memory(s), "counters": filter_counters(s)}
    report = {
        "seconds": args.seconds,
        "requests": requests,
        "statuses": {str(k): v for k, v in sorted(statuses.items(), key=str)},
        "non_2xx": sum(v for k, v in statuses.items() if not str(k).startswith("2")),
        "map_changes": changes,
        "control_plane_restarts": restarts,
        "foreign_namespaces_seen": leaks,
        "start": start,
        "end": end,
    }
    growth = end["memory"]["rss_mib"] - start["memory"]["rss_mib"]
    report["rss_growth_mib"] = round(growth, 1)
    print(json.dumps(report, indent=1))
    (workdir / "report.json").write_text(json.dumps(report, indent=1))
    print(
        f"soak: {requests} requests in {args.seconds} s, non-2xx {report['non_2xx']}, "
        f"Envoy RSS {start['memory']['rss_mib']} -> {end['memory']['rss_mib']} MiB, "
        f"unfiltered: {leaks}"
    )
    return 1 if leaks else 0


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=int, default=600)
    p.add_argument("--change-every", type=float, default=20.0)
    p.add_argument("--restart-every", type=float, default=60.0)
    p.add_argument("--workdir", default=str(stack.REPO / "target" / "bench-soak"))
    return run(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
