"""`make bench-envoy`: what the filter adds to a scrape in a real Envoy.

A benchmark, not a test (it asserts only that every answer was a complete 200).
One Envoy (envoy/bench.yaml, started by envoy/e2e/stack.py with the control plane
and the kubelet stand-in) has two routes to the same stand-in: `/unfiltered/…`
with the filter disabled, and `/…` with the filter as tenant `acme` (injection plus
tenant filtering, the example plugin configuration with a static tenant). Next to
them, the line-by-line Python regex proxy KaaS platforms deploy
(envoy/bench/regex_proxy.py) in front of the same stand-in.

The bodies are synthetic `/metrics/cadvisor` answers from the Rust generator of the
criterion benchmarks (benches/src/synthetic.rs, written to files by its
`synthetic_bodies` example). wrk drives each route at concurrency 1 and 16, the
routes alternating round by round (A B C, C B A, …) so that the machine's other
load falls on all of them alike; a route's rounds are pooled. Reported per route:
time to last byte (p50, p99), requests/s, and the CPU time of the proxy process
(Envoy's or the regex proxy's, from /proc/PID/stat) per request; plus Envoy's
buffer-overflow counters, which must stay 0 at the 1 MiB default limit.
"""

import argparse
import collections
import datetime
import glob
import json
import math
import os
import platform
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "e2e"))

import stack  # noqa: E402

TEMPLATE = stack.REPO / "envoy" / "bench.yaml"
REGEX_PROXY = HERE / "regex_proxy.py"
WRK_SCRIPT = HERE / "wrk_report.lua"
TENANT = "acme"
KUBELET_PATH = "/metrics/cadvisor"
# The stand-in's chunk size for every benchmark response: large and fixed, so that
# the Python stand-in spends as little as it can per byte and the same on every
# route (its default odd sizes, down to 1 byte, are for the tests).
CHUNK = 65536
CONCURRENCIES = (1, 16)
TARGETS_MS = ((5_000_000, 15.0), (0, 5.0))  # (body at least N bytes, added p99 bound)
NAMESPACE_LABEL = re.compile(rb'[{,]namespace="([^"]*)"')
CLOCK_TICK = os.sysconf("SC_CLK_TCK")


# -- set-up --------------------------------------------------------------------


def bench_plugin_config():
    """The example tenant configuration (injection + tenant filtering) with a static
    tenant: both routes then get byte-identical requests, no JWT or header needed."""
    config = stack.example_config("tenant")
    config["tenancy"] = {**config["tenancy"], "tenant": {"static": TENANT}}
    return config


def namespace_spec(snapshot_file):
    """name -> labels of the generator's snapshot (the synthetic namespaces)."""
    snapshot = json.loads(Path(snapshot_file).read_text())
    return {name: ns["labels"] for name, ns in snapshot["namespaces"].items()}


def find_bodies(directory):
    """The generated cadvisor bodies, largest first: (fixture name, path, size)."""
    paths = sorted(
        Path(directory).resolve().glob("cadvisor-*pods.txt"), key=lambda p: -p.stat().st_size
    )
    if not paths:
        raise SystemExit(f"no cadvisor-*pods.txt in {directory}: run the synthetic_bodies example")
    return [("bench-" + p.name, p, p.stat().st_size) for p in paths]


def wrk_env(wrk):
    """wrk unpacked from its .deb finds its libluajit beside it, not system-wide."""
    root = Path(wrk).resolve().parents[2]
    libs = {str(Path(p).parent) for p in glob.glob(str(root / "usr/lib/*/libluajit-5.1.so.2"))}
    return {
        **os.environ,
        "LD_LIBRARY_PATH": ":".join(sorted(libs) + [os.environ.get("LD_LIBRARY_PATH", "")]),
    }


def start_regex_proxy(s, allowed):
    port = stack.free_port()
    argv = [
        sys.executable,
        REGEX_PROXY,
        "--port",
        port,
        "--kubelet",
        f"https://127.0.0.1:{s.ports['kubelet']}",
        "--ca",
        s.kubelet_cert,
        "--allowed",
        ",".join(allowed),
    ]
    proc = stack.Process("regex-proxy", argv, s.dir)

    def up():
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True

    try:
        proc.wait_ready("the regex proxy", up)
    except BaseException:
        proc.stop()
        raise
    return port, proc


class Route:
    """One way to the stand-in: a URL, the headers wrk sends, and the processes
    whose CPU is read around each run (pid: {"proxy": …, "stand-in": …})."""

    def __init__(self, name, port, path, pid, headers=None):
        self.name = name
        self.port = port
        self.path = path
        self.pid = pid
        self.headers = headers or {}

    def url(self):
        return f"http://127.0.0.1:{self.port}{self.path}"

    def headers_for(self, fixture):
        """The route's headers plus the stand-in's: `fixture` in CHUNK-byte chunks."""
        return {**self.headers, "x-standin-fixture": fixture, "x-standin-chunk": str(CHUNK)}

    def get(self, fixture):
        return stack.request(self.port, self.path, self.headers_for(fixture), timeout=60)


def check_answers(routes, bodies, spec):
    """One request per route and body before timing anything: the unfiltered route
    returns the body unchanged, the filtered one only the tenant's namespaces with
    their team label. Returns body sizes per (route, fixture)."""
    own = stack.namespaces_of_tenant(spec, TENANT)
    sizes = {}
    for fixture, path, _ in bodies:
        raw = path.read_bytes()
        for route in routes:
            r = route.get(fixture)
            assert r.status == 200, (route.name, r)
            seen = {m.decode() for m in NAMESPACE_LABEL.findall(r.body)} - {""}
            if route.name == "off":
                assert r.body == raw, "the unfiltered route changed the body"
            else:
                assert seen and seen <= own, (route.name, sorted(seen - own))
            if route.name == "filter":
                assert b'team="' in r.body
            sizes[route.name, fixture] = len(r.body)
    return sizes


# -- measuring -----------------------------------------------------------------


def cpu_seconds(pid):
    """utime + stime of a process (all its threads), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICK


def machine_times():
    """(busy, total) jiffies of all CPUs, from /proc/stat: how saturated the machine
    was during a run, whoever kept it busy."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


def undo_correction(histogram, requests, connections, duration_us):
    """wrk 4 adds synthetic samples below every slow response (its coordinated-
    omission correction, meant for open-loop load; ours is closed-loop): for each
    sample at n >= 2e it adds one at n-e, n-2e, … while above e, with
    e = duration / (requests / connections). This subtracts them again, from the top
    down, and gives back the measured latencies exactly."""
    if requests // connections == 0:
        return dict(histogram)
    e = duration_us // (requests // connections)
    real, above = {}, collections.Counter()
    for value in sorted(histogram, reverse=True):
        added = above[value % e] if value > e else 0
        real[value] = histogram[value] - added
        above[value % e] += real[value]
    return real


def read_wrk_report(path, connections):
    lines = [line.split() for line in Path(path).read_text().splitlines()]
    totals = {w[0]: [int(x) for x in w[1:]] for w in lines if w[0] != "latency"}
    histogram = {int(w[1]): int(w[2]) for w in lines if w[0] == "latency"}
    run = {
        "requests": totals["requests"][0],
        "duration_us": totals["duration_us"][0],
        "bytes": totals["bytes"][0],
        "errors": dict(
            zip(("connect", "read", "write", "status", "timeout"), totals["errors"], strict=True)
        ),
    }
    run["latency"] = undo_correction(histogram, run["requests"], connections, run["duration_us"])
    return run


def wrk_run(wrk, route, fixture, connections, seconds, report):
    """One wrk run on `route`; returns the run's totals, latency histogram and the
    CPU seconds of the route's proxy and of the stand-in during it."""
    headers = route.headers_for(fixture)
    argv = [
        wrk,
        f"-t{min(connections, 2)}",
        f"-c{connections}",
        f"-d{seconds}s",
        "--timeout",
        "10s",
        "-s",
        WRK_SCRIPT,
        route.url(),
    ]
    for name, value in headers.items():
        argv += ["-H", f"{name}: {value}"]
    env = {**wrk_env(wrk), "WRK_REPORT": str(report)}
    before = {name: cpu_seconds(pid) for name, pid in route.pid.items()}
    machine_before = machine_times()
    subprocess.run([str(a) for a in argv], env=env, check=True, capture_output=True)
    machine_after = machine_times()
    after = {name: cpu_seconds(pid) for name, pid in route.pid.items()}
    run = read_wrk_report(report, connections)
    run["cpu"] = {name: after[name] - before[name] for name in route.pid}
    run["machine"] = [a - b for a, b in zip(machine_after, machine_before, strict=True)]
    return run


def measure(wrk, routes, bodies, rounds, seconds, workdir):
    """Every (body, concurrency), the routes alternating A B C, C B A, …; returns the
    list of runs."""
    runs = []
    for fixture, _, size in bodies:
        for route in routes[:2]:  # V8 tiers up on first use; the stand-in caches the body
            wrk_run(wrk, route, fixture, 2, 2, workdir / "warmup.txt")
        for connections in CONCURRENCIES:
            for r in range(rounds):
                order = routes if r % 2 == 0 else routes[::-1]
                for route in order:
                    report = workdir / f"wrk-{fixture}-{connections}-{r}-{route.name}.txt"
                    run = wrk_run(wrk, route, fixture, connections, seconds, report)
                    run.update(
                        route=route.name,
                        fixture=fixture,
                        size=size,
                        connections=connections,
                        round=r,
                    )
                    print(
                        f"  {fixture} c={connections} round {r} {route.name:>7}: {run['requests']} requests,"
                        f" p50 {percentile(run['latency'], 50) / 1000:.1f} ms",
                        flush=True,
                    )
                    runs.append(run)
    return runs


# -- pooling and reporting -------------------------------------------------------


def percentile(histogram, p):
    """The smallest latency with at least p % of the samples at or below it."""
    rank = max(1, math.ceil(p / 100 * sum(histogram.values())))
    seen = 0
    for value in sorted(histogram):
        seen += histogram[value]
        if seen >= rank:
            return value
    return 0


def pool(runs):
    """A route's rounds as one sample: latencies merged, totals added."""
    histogram = collections.Counter()
    for run in runs:
        histogram.update(run["latency"])
    requests = sum(r["requests"] for r in runs)
    seconds = sum(r["duration_us"] for r in runs) / 1e6
    cpu = collections.Counter()
    for run in runs:
        cpu.update(run["cpu"])
    errors = collections.Counter()
    for run in runs:
        errors.update(run["errors"])
    busy, total = (sum(r["machine"][i] for r in runs) for i in (0, 1))
    return {
        "requests": requests,
        "samples": sum(histogram.values()),
        "rps": requests / seconds,
        "p50": percentile(histogram, 50) / 1000,
        "p90": percentile(histogram, 90) / 1000,
        "p99": percentile(histogram, 99) / 1000,
        "proxy_cpu_ms": 1000 * cpu["proxy"] / max(requests, 1),
        "standin_cores": cpu["stand-in"] / seconds,
        "machine_busy": busy / max(total, 1),
        "bytes_per_response": sum(r["bytes"] for r in runs) / max(requests, 1),
        "errors": sum(errors.values()),
    }


def target_for(size):
    return next(ms for at_least, ms in TARGETS_MS if size >= at_least)


def mb(size):
    return f"{size / 1e6:.1f} MB"


ROUTE_TITLES = {
    "off": "Envoy, filter off",
    "filter": f"Envoy + filter (tenant {TENANT})",
    "regex": "Python regex proxy",
}


def summarize(runs, bodies, sizes):
    """Pooled results per (body, concurrency, route), and the comparisons."""
    table = []
    for fixture, _, size in bodies:
        for connections in CONCURRENCIES:
            rows = {}
            for name in ROUTE_TITLES:
                mine = [
                    r
                    for r in runs
                    if (r["fixture"], r["connections"], r["route"]) == (fixture, connections, name)
                ]
                rows[name] = pool(mine)
                rows[name]["body_out"] = sizes[name, fixture]
            off, on, regex = rows["off"], rows["filter"], rows["regex"]
            table.append(
                {
                    "fixture": fixture,
                    "size": size,
                    "connections": connections,
                    "rows": rows,
                    "added_p50": on["p50"] - off["p50"],
                    "added_p90": on["p90"] - off["p90"],
                    "added_p99": on["p99"] - off["p99"],
                    "added_cpu_ms": on["proxy_cpu_ms"] - off["proxy_cpu_ms"],
                    "target_p99": target_for(size),
                    "regex_vs_filter": {
                        k: regex[k] / on[k] if on[k] else float("nan")
                        for k in ("p50", "p99", "proxy_cpu_ms")
                    },
                }
            )
    return table


def render(table, stats, context):
    out = [
        "# kubelet-scope in Envoy: benchmark",
        "",
        f"{context['date']}, {context['machine']}. Envoy {context['envoy']} (V8), "
        f"--concurrency {context['envoy_workers']}; wrk {context['wrk']}; {context['rounds']} alternating rounds "
        f"of {context['seconds']} s per route and concurrency, pooled. The kubelet stand-in (Python, TLS) "
        f"sends every body in {CHUNK}-byte chunks. Latency: time to last byte at the client. "
        "Proxy CPU: utime+stime of the Envoy (or regex proxy) process per request. Stand-in: "
        "CPU cores it kept busy (near 1.0 = it is the bottleneck, GIL-bound). Machine busy: all CPUs, "
        "every process (near 100 % = the latencies are queueing for CPU).",
        "",
        "| body | conc | route | requests | req/s | p50 ms | p99 ms | proxy CPU ms/req | stand-in cores | machine busy | bytes out |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for t in table:
        for name, title in ROUTE_TITLES.items():
            r = t["rows"][name]
            out.append(
                f"| {mb(t['size'])} | {t['connections']} | {title} | {r['requests']} | {r['rps']:.1f} | "
                f"{r['p50']:.1f} | {r['p99']:.1f} | {r['proxy_cpu_ms']:.1f} | {r['standin_cores']:.2f} | {100 * r['machine_busy']:.0f} % | "
                f"{mb(r['body_out'])} |"
            )
    out += [
        "",
        "Added by the filter (filter minus filter off) and the regex proxy relative to the filter:",
        "",
        "| body | conc | added p50 ms | added p90 ms | added p99 ms | p99 target | met | added CPU ms/req "
        "| regex/filter p50 | regex/filter p99 | regex/filter CPU |",
        "|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|",
    ]
    for t in table:
        ratio = t["regex_vs_filter"]
        met = "yes" if t["added_p99"] <= t["target_p99"] else "**no**"
        out.append(
            f"| {mb(t['size'])} | {t['connections']} | {t['added_p50']:+.1f} | {t['added_p90']:+.1f} | "
            f"{t['added_p99']:+.1f} | "
            f"≤ {t['target_p99']:g} | {met} | {t['added_cpu_ms']:+.1f} | ×{ratio['p50']:.1f} | "
            f"×{ratio['p99']:.1f} | ×{ratio['proxy_cpu_ms']:.1f} |"
        )
    out += [
        "",
        "Reading it: a p99 far above its p50 on the unfiltered route too means the tail is "
        "the machine's (scheduling behind other work), not the filter's; the added p50 and the "
        "added CPU per request are then the stable measures. When the machine is saturated "
        "(concurrency 16), every request queues for CPU, and the filter's extra CPU per request "
        "shows up multiplied by the queue length.",
        "",
        "Envoy counters during the timed runs (1 MiB buffer limits):",
        "",
    ]
    out += [f"- `{name}` = {value}" for name, value in sorted(stats.items())]
    return "\n".join(out) + "\n"


def envoy_counters(s):
    """Buffer overflows and the filter's decisions, from Envoy's admin /stats."""
    wanted = re.compile(
        r"too_large|^http\.bench\.downstream_rq_[2-5]xx$|kubelet_scope_(requests|refused)_"
        r"|kubelet_scope_body_bytes"
    )
    return {
        k: v
        for k, v in s.envoy_stats().items()
        if wanted.search(k) and not k.startswith("http.admin.")
    }


def tool_version(argv, pattern, env=None):
    r = subprocess.run([str(a) for a in argv], capture_output=True, text=True, env=env)
    m = re.search(pattern, r.stdout + r.stderr)
    return m.group(1) if m else "?"


def run_context(args):
    load = Path("/proc/loadavg").read_text().split()[:3]
    return {
        "date": datetime.date.today().isoformat(),
        "machine": f"{os.cpu_count()} cores ({platform.processor() or platform.machine()}), "
        f"load average {' '.join(load)} at the start",
        "envoy": tool_version([stack.ENVOY, "--version"], r"/(\d+\.\d+\.\d+)/"),
        "wrk": tool_version([args.wrk, "-v"], r"wrk (\S+)", wrk_env(args.wrk)),
        "rounds": args.rounds,
        "seconds": args.seconds,
        "envoy_workers": 2,
    }


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bodies", required=True, help="directory written by synthetic_bodies")
    p.add_argument("--wrk", required=True)
    p.add_argument("--out", default=str(stack.REPO / "target" / "bench-envoy"))
    p.add_argument("--rounds", type=int, default=int(os.environ.get("BENCH_ENVOY_ROUNDS", 3)))
    p.add_argument("--seconds", type=int, default=int(os.environ.get("BENCH_ENVOY_SECONDS", 4)))
    args = p.parse_args(argv)

    out = Path(args.out)
    workdir = stack.clean_dir(out / "stack")
    bodies = find_bodies(args.bodies)
    spec = namespace_spec(Path(args.bodies) / "snapshot.json")
    stack.write_namespaces_file(workdir / "namespaces.json", spec)
    context = run_context(args)
    s = stack.Stack(
        workdir,
        tenant_config=bench_plugin_config(),
        namespaces_file=workdir / "namespaces.json",
        upstream_timeout="60s",
        concurrency=context["envoy_workers"],
        template=TEMPLATE,
        standin_args=[a for f, path, _ in bodies for a in ("--extra-fixture", f"{f}={path}")],
    )
    started = time.monotonic()
    with s:
        runs, sizes, stats = run_all(s, args, bodies, spec, workdir)
    return report(out, runs, bodies, sizes, stats, context, started)


def routes_of(s, regex_port, regex_pid):
    """Envoy without and with the filter, and the regex proxy; each route's CPU is
    read from its proxy and from the stand-in."""
    envoy_pid, standin_pid = s.processes["envoy"].proc.pid, s.processes["kubelet"].proc.pid
    return [
        Route(
            "off",
            s.ports["tenant"],
            "/unfiltered" + KUBELET_PATH,
            {"proxy": envoy_pid, "stand-in": standin_pid},
        ),
        Route(
            "filter",
            s.ports["tenant"],
            KUBELET_PATH,
            {"proxy": envoy_pid, "stand-in": standin_pid},
        ),
        Route(
            "regex",
            regex_port,
            KUBELET_PATH,
            {"proxy": regex_pid, "stand-in": standin_pid},
            {"authorization": "Bearer " + stack.NODE_TOKEN},
        ),
    ]


def run_all(s, args, bodies, spec, workdir):
    """On the running stack `s`: the regex proxy beside it, every answer checked, then
    every run timed. Returns the runs, the body sizes per route and Envoy's counters
    during the runs."""
    s.wait_ready(TENANT)
    allowed = sorted(stack.namespaces_of_tenant(spec, TENANT))
    regex_port, regex = start_regex_proxy(s, allowed)
    try:
        routes = routes_of(s, regex_port, regex.proc.pid)
        sizes = check_answers(routes, bodies, spec)
        counters_before = envoy_counters(s)
        print(
            f"bench-envoy: {len(bodies)} bodies x {CONCURRENCIES} x {len(routes)} routes"
            f" x {args.rounds} rounds x {args.seconds} s",
            flush=True,
        )
        runs = measure(args.wrk, routes, bodies, args.rounds, args.seconds, workdir)
        stats = {k: v - counters_before.get(k, 0) for k, v in envoy_counters(s).items()}
    finally:
        regex.stop()
    return runs, sizes, stats


def report(out, runs, bodies, sizes, stats, context, started):
    """Writes report.md and results.json into `out` and prints the report; 1 when a
    run had errors."""
    table = summarize(runs, bodies, sizes)
    text = render(table, stats, context)
    (out / "report.md").write_text(text)
    (out / "results.json").write_text(
        json.dumps({"context": context, "table": table, "stats": stats}, indent=1)
    )
    print("\n" + text)
    print(f"bench-envoy: {time.monotonic() - started:.0f} s; written to {out / 'report.md'}")
    failed = [r for r in runs if sum(r["errors"].values())]
    if failed:
        print(
            f"bench-envoy: {len(failed)} runs had errors (non-2xx, resets, timeouts): "
            + ", ".join(
                f"{r['fixture']} c={r['connections']} {r['route']}: {r['errors']}" for r in failed
            )
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
