"""`make demo`: the whole chain on loopback, and what it does to a kubelet's answers.

Starts the control plane on deploy/examples/namespaces.yaml, a kubelet stand-in
serving the project's own bodies of a v1.20 node (testdata/synthetic/, made by its
generate.py; nothing from ../shared), and Envoy with the filter (envoy/local.yaml, the
example plugin configurations). Prints a before/after, then keeps the stack running with the curl
commands to try, until Ctrl-C (or exits at once with --no-wait).

Everything it starts or reads goes through envoy/e2e/stack.py, the harness the
end-to-end tests use; this file only chooses what to show.
"""

import argparse
import collections
import re
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "e2e"))

import stack  # noqa: E402

# Every path the stand-in serves gets its body from testdata/synthetic/.
BODIES = {
    "/metrics": "kubelet-metrics-k8s1.20-synthetic.txt",
    "/metrics/cadvisor": "cadvisor-k8s1.20-synthetic.txt",
    "/metrics/resource": "resource-k8s1.20-synthetic.txt",
    "/metrics/probes": "probes-k8s1.20-synthetic.txt",
    "/metrics/slis": "slis-synthetic.txt",
    "/pods": "pods-k8s1.20-synthetic.json",
    "/runningpods/": "pods-k8s1.20-synthetic.json",
    "/stats/summary": "stats-summary-k8s1.20-synthetic.json",
}
TENANTS = ("acme", "globex", "platform")


def per_namespace(body):
    """Series per namespace of a Prometheus text body."""
    return collections.Counter(
        "(no namespace label)" if ns is None else ns or '(namespace="")'
        for ns in stack.series_namespaces(body)
    )


def pods_per_namespace(body):
    return collections.Counter(stack.json_namespaces("/pods", body))


def table(title, unit, columns):
    """columns: name -> Counter. One row per namespace."""
    names = sorted(set().union(*columns.values()), key=lambda n: (n.startswith("("), n))
    width = max(len(n) for n in names)
    print(f"\n{title}")
    print(f"  {unit:<{width}}  " + "  ".join(f"{c:>9}" for c in columns))
    for n in names:
        print(f"  {n:<{width}}  " + "  ".join(f"{columns[c].get(n, 0) or '-':>9}" for c in columns))


def show(s):
    pick = re.compile(r'^container_cpu_usage_seconds_total\{container="nginx",.*namespace="shop"')
    raw = s.kubelet("/metrics/cadvisor").body
    injected = s.get("inject", "/metrics/cadvisor").body
    before = [line for line in raw.decode().splitlines() if pick.match(line)][:2]
    after = [line for line in injected.decode().splitlines() if pick.match(line)][:2]
    print("== Label injection: the platform's view (inject listener), /metrics/cadvisor")
    print("-- the kubelet says:")
    for line in before:
        print("   " + line)
    print("-- through Envoy (labels of the Namespace appended: team, part_of):")
    for line in after:
        print("   " + line)

    columns = {"kubelet": per_namespace(raw)}
    for t in TENANTS:
        columns[t] = per_namespace(s.get("tenant", "/metrics/cadvisor", tenant=t).body)
    table("== Tenant filtering: series per namespace in /metrics/cadvisor", "namespace", columns)

    columns = {"kubelet": pods_per_namespace(s.kubelet("/pods").body)}
    for t in TENANTS:
        columns[t] = pods_per_namespace(s.get("tenant", "/pods", tenant=t).body)
    table("== Tenant filtering: pods per namespace in /pods (JSON)", "namespace", columns)

    print("\n== Everything else is denied to tenants:")
    for path in ("/configz", "/exec/kube-system/etcd-0/etcd?command=sh", "/logs/"):
        r = s.get("tenant", path, tenant="acme")
        why = r.header("x-kubelet-scope-denied") or ""
        print(f"   GET {path:<42} -> {r.status} {r.text.strip()}  ({why})")


def instructions(s):
    p = s.ports
    for t in TENANTS:
        (s.dir / f"token-{t}").write_text(stack.jwt(t, lifetime=24 * 3600))
    token = f"$(cat {s.dir}/token-acme)"
    print(
        f"""
== The stack is running (work directory {s.dir})
   Envoy tenant listener  http://127.0.0.1:{p["tenant"]}  (JWT with a `tenant` claim:
                          {s.dir}/token-{{{",".join(TENANTS)}}})
   Envoy inject listener  http://127.0.0.1:{p["inject"]}  (platform view, labels injected)
   Envoy admin            http://127.0.0.1:{p["admin"]}/stats?filter=kubelet_scope
   control plane          http://127.0.0.1:{p["control_plane"]}/v1/snapshot
   kubelet stand-in       https://127.0.0.1:{p["kubelet"]}  (token in {s.dir / "node-token"})

   Try:
   curl -s -H "authorization: Bearer {token}" \\
        http://127.0.0.1:{p["tenant"]}/metrics/cadvisor | grep -o 'namespace="[^"]*"' | sort | uniq -c
   curl -s -H "authorization: Bearer {token}" http://127.0.0.1:{p["tenant"]}/pods | head -20
   curl -s -i -H "authorization: Bearer {token}" http://127.0.0.1:{p["tenant"]}/configz
   curl -s http://127.0.0.1:{p["inject"]}/metrics/cadvisor | grep -m3 team=
   Edit {s.namespaces_file} (labels `team`, `tenant`):
   Envoy's answers change within a second or two.

   Ctrl-C stops everything.""",
        flush=True,
    )


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--no-wait", action="store_true", help="stop after printing the demo")
    args = p.parse_args()
    workdir = stack.clean_dir(stack.REPO / ".cache" / "demo")
    namespaces = workdir / "namespaces.yaml"
    namespaces.write_text((stack.EXAMPLES / "namespaces.yaml").read_text())
    s = stack.Stack(
        workdir,
        namespaces_file=namespaces,
        standin_args=[a for path, body in BODIES.items() for a in ("--serve", f"{path}={body}")],
    )
    # Ctrl-C and SIGTERM stop the stack (also when started in the background, where
    # SIGINT would otherwise be ignored).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with s:
        s.wait_ready("acme")
        show(s)
        if args.no_wait:
            return 0
        instructions(s)
        try:
            while all(proc.running() for proc in s.processes.values()):
                time.sleep(1)
            print("a process of the stack exited:\n" + s.logs(), file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("\nstopping Envoy, the stand-in and the control plane")
    return 0


if __name__ == "__main__":
    sys.exit(main())
