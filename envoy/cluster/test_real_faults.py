"""Restart faults with the real parts (world: the real kubelet, apiserver and
containerd of hack/cluster.sh, Envoy of the shipped DaemonSet configuration in front
of the kubelet, the shipped control plane watching the apiserver; real_world.py):
the kubelet restarted mid-scrape, the apiserver restarted (the control plane keeps
serving its snapshot), containerd restarted. Through all of them a tenant never sees
another tenant's data, and each recovers.

The stand-in (envoy/e2e/) keeps the faults a real kubelet cannot be made to show:
hangs, trailers, forced gzip, 500s, odd chunking."""

import json
import threading
import time

from real_world import label_namespace, namespace_labels, tenant_namespaces

import stack

FOREIGN = (b"globex", b"kube-system", b"shared-tools")


class Poller:
    """GETs `fn()` in a loop in a thread until stopped; keeps (time, result or
    exception)."""

    def __init__(self, fn):
        self.fn, self.results, self.stopped = fn, [], threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        while not self.stopped.is_set():
            try:
                self.results.append((time.monotonic(), self.fn()))
            except Exception as e:  # noqa: BLE001 - a reset or refused connection is a result
                self.results.append((time.monotonic(), e))
            time.sleep(0.1)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stopped.set()
        self.thread.join(30)


def only_acme(cluster, path, r):
    """A tenant answer: a 200 holds only acme's namespaces; anything else no body of
    anybody's."""
    if r.status == 200:
        got = (
            stack.series_namespaces(r.body)
            if path.startswith("/metrics")
            else stack.json_namespaces(path, r.body)
        )
        foreign = {ns for ns in got if ns} - tenant_namespaces(cluster, "acme")
        assert not foreign, (path, foreign)
    else:
        assert not any(name in r.body for name in FOREIGN), (path, r)


def acme_listed(cluster, daemonset):
    mine = tenant_namespaces(cluster, "acme")

    def ok():
        r = daemonset.get("/pods", "acme", timeout=5)
        return r.status == 200 and set(stack.json_namespaces("/pods", r.body)) == mine

    return ok


def test_kubelet_restart_mid_scrape(cluster, daemonset):
    paths = ("/metrics/cadvisor", "/pods")
    with Poller(lambda: [(p, daemonset.get(p, "acme", timeout=10)) for p in paths]) as poller:
        time.sleep(1)
        cluster.restart("kubelet")
        stack.wait_for("acme's pods after the restart", acme_listed(cluster, daemonset), 60, 0.5)
    answers = [r for _, rs in poller.results if not isinstance(rs, Exception) for r in rs]
    assert len(answers) >= 4, poller.results
    for path, r in answers:
        only_acme(cluster, path, r)
    statuses = sorted({r.status for _, r in answers})
    print(f"kubelet restart: {len(poller.results)} scrapes, statuses {statuses}")


def test_apiserver_restart_control_plane_keeps_serving(cluster, daemonset, real):
    """The control plane's snapshot stays served (same namespaces, 200 on every
    probe) while the apiserver is down, the filter keeps filtering, and the watch
    comes back: a label changed after the restart reaches Envoy. While it is down the
    kubelet cannot review Envoy's token (TokenReview): its own 401 passes, without a
    body."""
    before = daemonset.snapshot(real["control_plane"])

    def probe():
        snap = stack.request(
            daemonset.s.ports["control_plane"],
            "/v1/snapshot",
            {"authorization": "Bearer " + real["control_plane"]},
            tls_ca=daemonset.s.control_plane_ca,
            timeout=10,
        )
        return snap, daemonset.get("/metrics/cadvisor", "acme", timeout=10)

    with Poller(probe) as poller:
        time.sleep(1)
        cluster.restart("kube-apiserver")
        stack.wait_for(
            "the apiserver back",
            lambda: cluster.api("GET", "/api/v1/namespaces/acme-web")[0] == 200,
            60,
        )
    results = [rs for _, rs in poller.results]
    assert results and not [e for e in results if isinstance(e, Exception)], results
    for snap, r in results:
        assert snap.status == 200, snap
        assert json.loads(snap.body)["namespaces"] == json.loads(before)["namespaces"]
        only_acme(cluster, "/metrics/cadvisor", r)
    print(
        f"apiserver restart: {len(results)} probes, Envoy {sorted({r.status for _, r in results})}"
    )

    old = namespace_labels(cluster)["acme-web"]["team"]
    try:
        label_namespace(cluster, "acme-web", {"team": "after-restart"})
        stack.wait_for(
            "the label changed after the restart",
            lambda: 'team="after-restart"' in daemonset.get("/metrics/cadvisor", "acme").text,
            timeout=30,
            interval=0.2,
        )
    finally:
        label_namespace(cluster, "acme-web", {"team": old})


def test_containerd_restart(cluster, daemonset, real):
    """Containers outlive containerd (their shims stay); the kubelet reconnects, and
    through Envoy acme sees its pods and series again, never another tenant's."""
    with Poller(lambda: daemonset.get("/metrics/cadvisor", "acme", timeout=10)) as poller:
        time.sleep(1)
        cluster.restart("containerd")
        stack.wait_for("acme's pods", acme_listed(cluster, daemonset), 60, 0.5)
        # the kubelet's CRI connection back too (its image-filesystem stats)
        stack.wait_for(
            "the kubelet's /stats/summary after the containerd restart",
            lambda: cluster.kubelet("/stats/summary", real["kubelet"], timeout=10).status == 200,
            60,
            0.5,
        )
    r = daemonset.get("/stats/summary", "acme")
    assert r.status == 200, r
    only_acme(cluster, "/stats/summary", r)
    for _, r in poller.results:
        if not isinstance(r, Exception):
            only_acme(cluster, "/metrics/cadvisor", r)
    body = daemonset.get("/metrics/cadvisor", "acme").body
    assert set(stack.series_namespaces(body)) - {None} == tenant_namespaces(cluster, "acme")
    assert all(p["status"].get("phase") == "Running" for p in cluster.pods("acme-web"))
