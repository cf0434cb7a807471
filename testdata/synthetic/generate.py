"""Writes the project's own kubelet bodies: one small node's answers on every endpoint.

    python3 testdata/synthetic/generate.py [OUT_DIR]     (default: this folder)

One made-up node (kubelet v1.20.2, containerd, cgroup v1 with the cgroupfs driver)
running nine pods in six namespaces (two of tenant acme, one of globex, kube-system,
monitoring, and `default` with no tenant), rendered in the shapes a v1.20 kubelet
writes: Prometheus text with cadvisor's millisecond timestamps and Go's float format,
`/pods` as one line of JSON, `/stats/summary` indented. Every endpoint describes the
same pods and containers. Nothing here is copied from a capture; values come from a
fixed seed, so the output is the same on every run (a test checks that the committed
bodies are this script's output).
"""

import datetime
import json
import random
import sys
from decimal import Decimal
from pathlib import Path

NODE = "node-1"
NODE_IP = "10.88.0.2"
KUBELET = "v1.20.2"
RUNTIME = "containerd://1.6.20"
KERNEL = "6.1.0-28-amd64"
OS_IMAGE = "Debian GNU/Linux 12 (bookworm)"
PAUSE = "k8s.gcr.io/pause:3.2"
NOW = 1607250600  # 2020-12-06T10:30:00Z: the scrape
BOOT = NOW - 86400
MACHINE_ID = "3f1c2a9e5b7d4e608a1b2c3d4e5f6a7b"
BOOT_ID = "8e2b6c1d-4f3a-4b5c-9d8e-7f6a5b4c3d2e"

# (namespace, pod, owner kind, QoS class, containers, persistent volume claim)
# with each container as (name, image, cpu limit in millicores or 0, probes).
PODS = [
    (
        "kube-system",
        "coredns-74ff55c5b-4xw2p",
        "ReplicaSet",
        "Burstable",
        [("coredns", "k8s.gcr.io/coredns:1.7.0", 0, ("Liveness", "Readiness"))],
        None,
    ),
    (
        "kube-system",
        "kube-proxy-9tq8l",
        "DaemonSet",
        "BestEffort",
        [("kube-proxy", "k8s.gcr.io/kube-proxy:v1.20.2", 0, ())],
        None,
    ),
    (
        "monitoring",
        "prometheus-0",
        "StatefulSet",
        "Burstable",
        [
            ("prometheus", "quay.io/prometheus/prometheus:v2.24.1", 1000, ("Readiness",)),
            (
                "config-reloader",
                "quay.io/prometheus-operator/prometheus-config-reloader:v0.45.0",
                100,
                (),
            ),
        ],
        "data-prometheus-0",
    ),
    (
        "shop",
        "web-6d8f9c7b5-hx2mk",
        "ReplicaSet",
        "Guaranteed",
        [("nginx", "docker.io/library/nginx:1.19.6", 500, ("Liveness", "Readiness"))],
        None,
    ),
    (
        "shop",
        "web-6d8f9c7b5-q7zrt",
        "ReplicaSet",
        "Guaranteed",
        [("nginx", "docker.io/library/nginx:1.19.6", 500, ("Liveness", "Readiness"))],
        None,
    ),
    (
        "shop",
        "cart-0",
        "StatefulSet",
        "Burstable",
        [("redis", "docker.io/library/redis:6.0.10", 250, ("Liveness",))],
        "data-cart-0",
    ),
    (
        "payments",
        "api-5b9c8d7f6-rk4vn",
        "ReplicaSet",
        "Burstable",
        [
            ("api", "docker.io/library/busybox:1.32.1", 200, ("Readiness",)),
            ("log-shipper", "docker.io/library/busybox:1.32.1", 0, ()),
        ],
        None,
    ),
    (
        "analytics",
        "report-7c6d5b4a9-z2w8s",
        "ReplicaSet",
        "BestEffort",
        [("report", "docker.io/library/busybox:1.32.1", 0, ("Liveness",))],
        None,
    ),
    (
        "default",
        "toolbox",
        None,
        "BestEffort",
        [("toolbox", "docker.io/library/busybox:1.32.1", 0, ("Liveness",))],
        None,
    ),
]

rng = random.Random(120)


def hexid(n):
    return "".join(rng.choice("0123456789abcdef") for _ in range(n))


def uid():
    h = hexid(32)
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:]}"


def rfc3339(t):
    return datetime.datetime.fromtimestamp(t, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def gofloat(x):
    """Go's strconv.FormatFloat(x, 'g', -1, 64), as client_golang writes samples."""
    if x == 0:
        return "0"
    sign, digits, exp = Decimal(repr(float(x))).normalize().as_tuple()
    digits = "".join(map(str, digits))
    point = len(digits) + exp  # digits before the decimal point
    e = point - 1
    s = "-" if sign else ""
    if e < -4 or e >= 6:
        mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        return f"{s}{mantissa}e{'-' if e < 0 else '+'}{abs(e):02d}"
    if point <= 0:
        return f"{s}0.{'0' * -point}{digits}"
    if point >= len(digits):
        return s + digits + "0" * (point - len(digits))
    return f"{s}{digits[:point]}.{digits[point:]}"


class Pod:
    def __init__(self, namespace, name, owner, qos, containers, claim):
        self.namespace, self.name, self.owner, self.qos, self.claim = (
            namespace,
            name,
            owner,
            qos,
            claim,
        )
        self.uid = uid()
        self.started = NOW - rng.randint(3600, 80000)
        self.ip = f"10.244.0.{rng.randint(2, 250)}"
        self.sandbox = hexid(64)
        self.cgroup = f"/kubepods/{qos.lower()}/pod{self.uid}"
        if qos == "Guaranteed":
            self.cgroup = f"/kubepods/pod{self.uid}"
        self.containers = [
            {
                "name": c,
                "image": image,
                "cpu_limit": limit,
                "probes": probes,
                "id": hexid(64),
                "cpu": round(rng.uniform(0.5, 400), 6),
                "memory": rng.randint(4, 300) << 20,
                "started": self.started + rng.randint(2, 30),
            }
            for c, image, limit, probes in containers
        ]


NODE_PODS = [Pod(*p) for p in PODS]


# -- Prometheus text ---------------------------------------------------------------


class Text:
    def __init__(self):
        self.lines = []

    def family(self, name, kind, help_text):
        self.lines.append(f"# HELP {name} {help_text}\n# TYPE {name} {kind}\n")

    def sample(self, name, labels, value, timestamp=None):
        rendered = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        line = f"{name}{{{rendered}}}" if labels else name
        line += " " + gofloat(value)
        if timestamp is not None:
            line += f" {timestamp}"
        self.lines.append(line + "\n")

    def body(self):
        return "".join(self.lines).encode()


def cgroups():
    """cadvisor's cgroups: (labels, cpu seconds, memory bytes, is a pod sandbox)."""
    empty = {"container": "", "image": "", "name": "", "namespace": "", "pod": ""}
    out = [({**empty, "id": "/"}, 51234.5, 3 << 30, False)]
    for cg in ("/kubepods", "/kubepods/besteffort", "/kubepods/burstable"):
        out.append(({**empty, "id": cg}, 2345.6, 900 << 20, False))
    for unit in ("containerd.service", "kubelet.service", "systemd-journald.service"):
        out.append(({**empty, "id": f"/system.slice/{unit}"}, 812.25, 120 << 20, False))
    for p in NODE_PODS:
        pod = {**empty, "namespace": p.namespace, "pod": p.name}
        total_cpu = sum(c["cpu"] for c in p.containers)
        total_mem = sum(c["memory"] for c in p.containers)
        out.append(({**pod, "id": p.cgroup}, total_cpu, total_mem, False))
        sandbox = {**pod, "id": f"{p.cgroup}/{p.sandbox}", "image": PAUSE, "name": p.sandbox}
        out.append((sandbox, 0.021352, 237568, True))
        for c in p.containers:
            labels = {
                **pod,
                "container": c["name"],
                "id": f"{p.cgroup}/{c['id']}",
                "image": c["image"],
                "name": c["id"],
            }
            out.append((labels, c["cpu"], c["memory"], False))
    return out


CADVISOR_FAMILIES = [
    (
        "container_cpu_load_average_10s",
        "gauge",
        "Value of container cpu load average over the last 10 seconds.",
        lambda cpu, mem: 0,
    ),
    (
        "container_cpu_system_seconds_total",
        "counter",
        "Cumulative system cpu time consumed in seconds.",
        lambda cpu, mem: round(cpu * 0.31, 2),
    ),
    (
        "container_cpu_usage_seconds_total",
        "counter",
        "Cumulative cpu time consumed in seconds.",
        lambda cpu, mem: cpu,
    ),
    (
        "container_cpu_user_seconds_total",
        "counter",
        "Cumulative user cpu time consumed in seconds.",
        lambda cpu, mem: round(cpu * 0.66, 2),
    ),
    (
        "container_file_descriptors",
        "gauge",
        "Number of open file descriptors for the container.",
        lambda cpu, mem: int(cpu) % 60,
    ),
    (
        "container_last_seen",
        "gauge",
        "Last time a container was seen by the exporter",
        lambda cpu, mem: NOW,
    ),
    (
        "container_memory_cache",
        "gauge",
        "Number of bytes of page cache memory.",
        lambda cpu, mem: mem // 3 & ~4095,
    ),
    (
        "container_memory_failcnt",
        "counter",
        "Number of memory usage hits limits",
        lambda cpu, mem: 0,
    ),
    (
        "container_memory_mapped_file",
        "gauge",
        "Size of memory mapped files in bytes.",
        lambda cpu, mem: mem // 20 & ~4095,
    ),
    (
        "container_memory_max_usage_bytes",
        "gauge",
        "Maximum memory usage recorded in bytes",
        lambda cpu, mem: mem + (mem >> 2),
    ),
    ("container_memory_rss", "gauge", "Size of RSS in bytes.", lambda cpu, mem: mem >> 1),
    ("container_memory_swap", "gauge", "Container swap usage in bytes.", lambda cpu, mem: 0),
    (
        "container_memory_usage_bytes",
        "gauge",
        "Current memory usage in bytes, including all memory regardless of when it was accessed",
        lambda cpu, mem: mem,
    ),
    (
        "container_memory_working_set_bytes",
        "gauge",
        "Current working set in bytes.",
        lambda cpu, mem: mem - (mem >> 3),
    ),
    (
        "container_processes",
        "gauge",
        "Number of processes running inside the container.",
        lambda cpu, mem: 1 + int(cpu) % 4,
    ),
    (
        "container_sockets",
        "gauge",
        "Number of open sockets for the container.",
        lambda cpu, mem: int(cpu) % 9,
    ),
    ("container_spec_cpu_period", "gauge", "CPU period of the container.", lambda cpu, mem: 100000),
    ("container_spec_cpu_shares", "gauge", "CPU share of the container.", lambda cpu, mem: 2),
    (
        "container_spec_memory_limit_bytes",
        "gauge",
        "Memory limit for the container.",
        lambda cpu, mem: 0,
    ),
    (
        "container_spec_memory_reservation_limit_bytes",
        "gauge",
        "Memory reservation limit for the container.",
        lambda cpu, mem: 0,
    ),
    (
        "container_spec_memory_swap_limit_bytes",
        "gauge",
        "Memory swap limit for the container.",
        lambda cpu, mem: 0,
    ),
    (
        "container_start_time_seconds",
        "gauge",
        "Start time of the container since unix epoch in seconds.",
        lambda cpu, mem: BOOT,
    ),
    (
        "container_threads",
        "gauge",
        "Number of threads running inside the container",
        lambda cpu, mem: 1 + int(cpu) % 23,
    ),
    (
        "container_threads_max",
        "gauge",
        "Maximum number of threads allowed inside the container, infinity if value is zero",
        lambda cpu, mem: 0,
    ),
]

NETWORK = [
    ("receive_bytes_total", "Cumulative count of bytes received", 3.2e6),
    ("receive_errors_total", "Cumulative count of errors encountered while receiving", 0),
    ("receive_packets_dropped_total", "Cumulative count of packets dropped while receiving", 0),
    ("receive_packets_total", "Cumulative count of packets received", 21000),
    ("transmit_bytes_total", "Cumulative count of bytes transmitted", 1.9e6),
    ("transmit_errors_total", "Cumulative count of errors encountered while transmitting", 0),
    ("transmit_packets_dropped_total", "Cumulative count of packets dropped while transmitting", 0),
    ("transmit_packets_total", "Cumulative count of packets transmitted", 17500),
]


def cadvisor():
    t = Text()
    groups = cgroups()
    ts = [NOW * 1000 - rng.randint(0, 14999) for _ in groups]
    t.family(
        "cadvisor_version_info",
        "gauge",
        "A metric with a constant '1' value labeled by kernel version, OS version, docker "
        "version, cadvisor version & cadvisor revision.",
    )
    t.sample(
        "cadvisor_version_info",
        {
            "cadvisorRevision": "",
            "cadvisorVersion": "",
            "dockerVersion": "Unknown",
            "kernelVersion": KERNEL,
            "osVersion": OS_IMAGE,
        },
        1,
    )
    for name, kind, help_text, value in CADVISOR_FAMILIES:
        t.family(name, kind, help_text)
        for (labels, cpu, mem, _), stamp in zip(groups, ts, strict=True):
            extra = {"cpu": "total"} if name == "container_cpu_usage_seconds_total" else {}
            v = value(cpu, mem)
            if name == "container_start_time_seconds" and labels["pod"]:
                v = next(p.started for p in NODE_PODS if p.name == labels["pod"])
            t.sample(name, {**labels, **extra}, v, stamp)
    for suffix, help_text, base in NETWORK:
        name = f"container_network_{suffix}"
        t.family(name, "counter", help_text)
        for (labels, cpu, _, sandbox), stamp in zip(groups, ts, strict=True):
            if labels["id"] == "/":
                t.sample(name, {**labels, "interface": "ens3"}, base * 40 + cpu, stamp)
            elif sandbox:
                t.sample(name, {**labels, "interface": "eth0"}, int(base * (1 + cpu)), stamp)
    t.family("container_tasks_state", "gauge", "Number of tasks in given state")
    for (labels, cpu, _, _), stamp in zip(groups, ts, strict=True):
        for state in ("iowaiting", "running", "sleeping", "stopped", "uninterruptible"):
            t.sample(
                "container_tasks_state",
                {**labels, "state": state},
                1 + int(cpu) % 5 if state == "sleeping" else 0,
                stamp,
            )
    machine = {"boot_id": BOOT_ID, "machine_id": MACHINE_ID, "system_uuid": MACHINE_ID}
    for name, help_text, value in (
        ("machine_cpu_cores", "Number of logical CPU cores.", 2),
        ("machine_cpu_physical_cores", "Number of physical CPU cores.", 2),
        ("machine_cpu_sockets", "Number of CPU sockets.", 1),
        ("machine_memory_bytes", "Amount of memory installed on the machine.", 8346468352),
    ):
        t.family(name, "gauge", help_text)
        t.sample(name, machine, value)
    t.family(
        "machine_scrape_error",
        "gauge",
        "1 if there was an error while getting machine metrics, 0 otherwise.",
    )
    t.sample("machine_scrape_error", {}, 0)
    return t.body()


def resource():
    t = Text()
    t.family(
        "container_cpu_usage_seconds_total",
        "counter",
        "[ALPHA] Cumulative cpu time consumed by the container in core-seconds",
    )
    for p in NODE_PODS:
        for c in p.containers:
            labels = {"container": c["name"], "namespace": p.namespace, "pod": p.name}
            t.sample("container_cpu_usage_seconds_total", labels, c["cpu"], NOW * 1000 - 3127)
    t.family(
        "container_memory_working_set_bytes",
        "gauge",
        "[ALPHA] Current working set of the container in bytes",
    )
    for p in NODE_PODS:
        for c in p.containers:
            labels = {"container": c["name"], "namespace": p.namespace, "pod": p.name}
            mem = c["memory"] - (c["memory"] >> 3)
            t.sample("container_memory_working_set_bytes", labels, mem, NOW * 1000 - 3127)
    t.family(
        "node_cpu_usage_seconds_total",
        "counter",
        "[ALPHA] Cumulative cpu time consumed by the node in core-seconds",
    )
    t.sample("node_cpu_usage_seconds_total", {}, 51234.512876, NOW * 1000 - 1406)
    t.family(
        "node_memory_working_set_bytes", "gauge", "[ALPHA] Current working set of the node in bytes"
    )
    t.sample("node_memory_working_set_bytes", {}, 2863456256, NOW * 1000 - 1406)
    t.family(
        "scrape_error",
        "gauge",
        "[ALPHA] 1 if there was an error while getting container metrics, 0 otherwise",
    )
    t.sample("scrape_error", {}, 0)
    return t.body()


def probes():
    t = Text()
    t.family(
        "prober_probe_total",
        "counter",
        "[ALPHA] Cumulative number of a liveness, readiness or startup probe for a container "
        "by result.",
    )
    for p in NODE_PODS:
        for c in p.containers:
            for kind in c["probes"]:
                runs = (NOW - c["started"]) // 10
                labels = {
                    "container": c["name"],
                    "namespace": p.namespace,
                    "pod": p.name,
                    "pod_uid": p.uid,
                    "probe_type": kind,
                }
                t.sample("prober_probe_total", {**labels, "result": "successful"}, runs)
                if kind == "Readiness":
                    t.sample("prober_probe_total", {**labels, "result": "failed"}, 2)
    return t.body()


def kubelet_metrics():
    t = Text()
    buckets = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
    t.family(
        "apiserver_client_certificate_expiration_seconds",
        "histogram",
        "[ALPHA] Distribution of the remaining lifetime on the certificate used to "
        "authenticate a request.",
    )
    for le in (
        0,
        1800,
        3600,
        7200,
        21600,
        43200,
        86400,
        172800,
        345600,
        604800,
        2592000,
        7776000,
        15552000,
        31104000,
    ):
        t.sample("apiserver_client_certificate_expiration_seconds_bucket", {"le": gofloat(le)}, 0)
    t.sample("apiserver_client_certificate_expiration_seconds_bucket", {"le": "+Inf"}, 0)
    t.sample("apiserver_client_certificate_expiration_seconds_sum", {}, 0)
    t.sample("apiserver_client_certificate_expiration_seconds_count", {}, 0)
    t.family("go_goroutines", "gauge", "Number of goroutines that currently exist.")
    t.sample("go_goroutines", {}, 412)
    t.family(
        "kubelet_container_log_filesystem_used_bytes",
        "gauge",
        "[ALPHA] Bytes used by the container's logs on the filesystem.",
    )
    for p in NODE_PODS:
        for c in p.containers:
            labels = {"container": c["name"], "namespace": p.namespace, "pod": p.name, "uid": p.uid}
            t.sample(
                "kubelet_container_log_filesystem_used_bytes", labels, 4096 * (1 + len(c["id"]) % 7)
            )
    t.family("kubelet_node_name", "gauge", "[ALPHA] The node's name. The count is always 1.")
    t.sample("kubelet_node_name", {"node": NODE}, 1)
    t.family(
        "kubelet_pod_start_duration_seconds",
        "histogram",
        "[ALPHA] Duration in seconds for a single pod to go from pending to running.",
    )
    total = 0
    for le in buckets:
        total = min(len(NODE_PODS), total + (2 if le >= 0.5 else 0))
        t.sample("kubelet_pod_start_duration_seconds_bucket", {"le": gofloat(le)}, total)
    t.sample("kubelet_pod_start_duration_seconds_bucket", {"le": "+Inf"}, len(NODE_PODS))
    t.sample("kubelet_pod_start_duration_seconds_sum", {}, 14.712395)
    t.sample("kubelet_pod_start_duration_seconds_count", {}, len(NODE_PODS))
    t.family(
        "kubelet_running_containers", "gauge", "[ALPHA] Number of containers currently running"
    )
    containers = sum(len(p.containers) for p in NODE_PODS)
    t.sample("kubelet_running_containers", {"container_state": "running"}, containers)
    t.family(
        "kubelet_running_pods", "gauge", "[ALPHA] Number of pods that have a running pod sandbox"
    )
    t.sample("kubelet_running_pods", {}, len(NODE_PODS))
    for name, kind, help_text, value in (
        ("available_bytes", "gauge", "Number of available bytes in the volume", 9.5e9),
        ("capacity_bytes", "gauge", "Capacity in bytes of the volume", 10726932480),
        ("inodes", "gauge", "Maximum number of inodes in the volume", 655360),
        ("inodes_free", "gauge", "Number of free inodes in the volume", 655100),
        ("inodes_used", "gauge", "Number of used inodes in the volume", 260),
        ("used_bytes", "gauge", "Number of used bytes in the volume", 1.2264e9),
    ):
        t.family(f"kubelet_volume_stats_{name}", kind, f"[ALPHA] {help_text}")
        for p in NODE_PODS:
            if p.claim:
                labels = {"namespace": p.namespace, "persistentvolumeclaim": p.claim}
                t.sample(f"kubelet_volume_stats_{name}", labels, value)
    t.family(
        "kubernetes_build_info",
        "gauge",
        "[ALPHA] A metric with a constant '1' value labeled by major, minor, git version, "
        "git commit, git tree state, build date, Go version, and compiler from which "
        "Kubernetes was built, and platform on which it is running.",
    )
    t.sample(
        "kubernetes_build_info",
        {
            "buildDate": "2021-01-13T13:20:00Z",
            "compiler": "gc",
            "gitCommit": "faecb196815e248d3ecfb03c680a4507229c2a56",
            "gitTreeState": "clean",
            "gitVersion": KUBELET,
            "goVersion": "go1.15.5",
            "major": "1",
            "minor": "20",
            "platform": "linux/amd64",
        },
        1,
    )
    t.family(
        "process_cpu_seconds_total", "counter", "Total user and system CPU time spent in seconds."
    )
    t.sample("process_cpu_seconds_total", {}, 1843.27)
    t.family(
        "rest_client_requests_total",
        "counter",
        "[ALPHA] Number of HTTP requests, partitioned by status code, method, and host.",
    )
    for code, method, n in (
        ("200", "GET", 31022),
        ("200", "PATCH", 1650),
        ("201", "POST", 37),
        ("404", "GET", 12),
        ("<error>", "GET", 3),
    ):
        t.sample(
            "rest_client_requests_total",
            {"code": code, "host": "10.88.0.1:6443", "method": method},
            n,
        )
    return t.body()


def slis():
    """/metrics/slis as kubelets since 1.26 serve it (no namespace anywhere)."""
    t = Text()
    checks = ("log", "ping", "syncloop")
    t.family(
        "kubernetes_healthcheck",
        "gauge",
        "[ALPHA] This metric records the result of a single healthcheck.",
    )
    for name in checks:
        t.sample("kubernetes_healthcheck", {"name": name, "type": "healthz"}, 1)
    t.family(
        "kubernetes_healthchecks_total",
        "counter",
        "[ALPHA] This metric records the results of all healthcheck.",
    )
    for name in checks:
        t.sample(
            "kubernetes_healthchecks_total",
            {"name": name, "status": "success", "type": "healthz"},
            8640,
        )
    return t.body()


# -- JSON --------------------------------------------------------------------------


def pod_item(p):
    base = {"ReplicaSet": 2, "DaemonSet": 1, "StatefulSet": 1}.get(p.owner, 0)
    labels = {"app": p.name.rsplit("-", base)[0]}
    if p.owner == "ReplicaSet":
        labels["pod-template-hash"] = p.name.split("-")[-2]
    if p.owner == "StatefulSet":
        labels["statefulset.kubernetes.io/pod-name"] = p.name
    metadata = {"name": p.name}
    if p.owner == "ReplicaSet":
        metadata["generateName"] = p.name[: p.name.rfind("-") + 1]
    metadata = {
        **metadata,
        "namespace": p.namespace,
        "selfLink": f"/api/v1/namespaces/{p.namespace}/pods/{p.name}",
        "uid": p.uid,
        "resourceVersion": str(1000 + rng.randint(0, 9000)),
        "creationTimestamp": rfc3339(p.started - 5),
        "labels": labels,
        "annotations": {
            "kubernetes.io/config.seen": rfc3339(p.started - 4).replace("Z", ".412871939Z"),
            "kubernetes.io/config.source": "api",
        },
    }
    if p.owner:
        owner = p.name.rsplit("-", 1)[0] if p.owner != "StatefulSet" else p.name[:-2]
        metadata["ownerReferences"] = [
            {
                "apiVersion": "apps/v1",
                "kind": p.owner,
                "name": owner,
                "uid": uid(),
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
    metadata["managedFields"] = [
        {
            "manager": "kube-controller-manager",
            "operation": "Update",
            "apiVersion": "v1",
            "time": rfc3339(p.started - 5),
            "fieldsType": "FieldsV1",
            "fieldsV1": {"f:metadata": {"f:labels": {".": {}, "f:app": {}}}},
        }
    ]
    token = f"default-token-{hexid(5)}"
    volumes = [{"name": token, "secret": {"secretName": token, "defaultMode": 420}}]
    if p.claim:
        volumes.insert(0, {"name": "data", "persistentVolumeClaim": {"claimName": p.claim}})
    containers = []
    for c in p.containers:
        spec = {"name": c["name"], "image": c["image"]}
        if c["image"].startswith("docker.io/library/busybox"):
            spec["command"] = ["sh", "-c", "while true; do md5sum /dev/zero & sleep 1; done"]
        resources = {}
        if c["cpu_limit"]:
            cpu = f"{c['cpu_limit']}m"
            resources = {
                "limits": {"cpu": cpu, "memory": "256Mi"},
                "requests": {"cpu": cpu, "memory": "256Mi"},
            }
        spec["resources"] = resources
        spec["volumeMounts"] = [
            {
                "name": token,
                "readOnly": True,
                "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount",
            }
        ]
        for kind in c["probes"]:
            spec[kind.lower() + "Probe"] = {
                "exec": {"command": ["true"]},
                "timeoutSeconds": 1,
                "periodSeconds": 10,
                "successThreshold": 1,
                "failureThreshold": 3,
            }
        spec.update(
            {
                "terminationMessagePath": "/dev/termination-log",
                "terminationMessagePolicy": "File",
                "imagePullPolicy": "IfNotPresent",
            }
        )
        containers.append(spec)
    spec = {
        "volumes": volumes,
        "containers": containers,
        "restartPolicy": "Always",
        "terminationGracePeriodSeconds": 30,
        "dnsPolicy": "ClusterFirst",
        "serviceAccountName": "default",
        "serviceAccount": "default",
        "nodeName": NODE,
        "securityContext": {},
        "schedulerName": "default-scheduler",
        "tolerations": [
            {
                "key": "node.kubernetes.io/not-ready",
                "operator": "Exists",
                "effect": "NoExecute",
                "tolerationSeconds": 300,
            },
            {
                "key": "node.kubernetes.io/unreachable",
                "operator": "Exists",
                "effect": "NoExecute",
                "tolerationSeconds": 300,
            },
        ],
        "priority": 0,
        "enableServiceLinks": True,
        "preemptionPolicy": "PreemptLowerPriority",
    }
    started = rfc3339(p.started)
    conditions = [
        {"type": t, "status": "True", "lastProbeTime": None, "lastTransitionTime": started}
        for t in ("Initialized", "Ready", "ContainersReady", "PodScheduled")
    ]
    statuses = [
        {
            "name": c["name"],
            "state": {"running": {"startedAt": rfc3339(c["started"])}},
            "lastState": {},
            "ready": True,
            "restartCount": 0,
            "image": c["image"],
            "imageID": c["image"].split(":")[0] + "@sha256:" + hexid(64),
            "containerID": "containerd://" + c["id"],
            "started": True,
        }
        for c in p.containers
    ]
    status = {
        "phase": "Running",
        "conditions": conditions,
        "hostIP": NODE_IP,
        "podIP": p.ip,
        "podIPs": [{"ip": p.ip}],
        "startTime": started,
        "containerStatuses": statuses,
        "qosClass": p.qos,
    }
    return {"metadata": metadata, "spec": spec, "status": status}


def pods():
    items = [pod_item(p) for p in NODE_PODS]
    body = {"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": items}
    return json.dumps(body, separators=(",", ":")).encode() + b"\n"


def cpu_stats(seconds, at):
    return {
        "time": rfc3339(at),
        "usageNanoCores": int(seconds * 7919) % 90000000,
        "usageCoreNanoSeconds": int(seconds * 1e9),
    }


def memory_stats(used, at):
    return {
        "time": rfc3339(at),
        "usageBytes": used,
        "workingSetBytes": used - (used >> 3),
        "rssBytes": used >> 1,
        "pageFaults": used >> 14,
        "majorPageFaults": used >> 22,
    }


def fs_stats(used, at):
    return {
        "time": rfc3339(at),
        "availableBytes": 9468923904,
        "capacityBytes": 10726932480,
        "usedBytes": used,
        "inodesFree": 655100,
        "inodes": 655360,
        "inodesUsed": 260,
    }


def stats_summary():
    at = NOW - 7
    node = {
        "nodeName": NODE,
        "systemContainers": [
            {
                "name": name,
                "startTime": rfc3339(BOOT + 20),
                "cpu": cpu_stats(812.25, at),
                "memory": memory_stats(120 << 20, at),
                "userDefinedMetrics": None,
            }
            for name in ("kubelet", "runtime", "pods")
        ],
        "startTime": rfc3339(BOOT),
        "cpu": cpu_stats(51234.5, at),
        "memory": {**memory_stats(3 << 30, at), "availableBytes": 5120000000},
        "network": {
            "time": rfc3339(at),
            "name": "ens3",
            "rxBytes": 128000000,
            "rxErrors": 0,
            "txBytes": 76000000,
            "txErrors": 0,
            "interfaces": [
                {
                    "name": "ens3",
                    "rxBytes": 128000000,
                    "rxErrors": 0,
                    "txBytes": 76000000,
                    "txErrors": 0,
                }
            ],
        },
        "fs": fs_stats(1257000960, at),
        "runtime": {"imageFs": fs_stats(1257000960, at)},
        "rlimit": {"time": rfc3339(at), "maxpid": 4194304, "curproc": 402},
    }
    summaries = []
    for p in NODE_PODS:
        containers = [
            {
                "name": c["name"],
                "startTime": rfc3339(c["started"]),
                "cpu": cpu_stats(c["cpu"], at),
                "memory": memory_stats(c["memory"], at),
                "rootfs": fs_stats(24576, at),
                "logs": fs_stats(8192, at),
                "userDefinedMetrics": None,
            }
            for c in p.containers
        ]
        net = int(3.2e6 * (1 + sum(c["cpu"] for c in p.containers)))
        volumes = [{**fs_stats(12288, at), "name": "default-token"}]
        if p.claim:
            volumes.append(
                {
                    **fs_stats(1226400000, at),
                    "name": "data",
                    "pvcRef": {"name": p.claim, "namespace": p.namespace},
                }
            )
        summaries.append(
            {
                "podRef": {"name": p.name, "namespace": p.namespace, "uid": p.uid},
                "startTime": rfc3339(p.started),
                "containers": containers,
                "cpu": cpu_stats(sum(c["cpu"] for c in p.containers), at),
                "memory": memory_stats(sum(c["memory"] for c in p.containers), at),
                "network": {
                    "time": rfc3339(at),
                    "name": "eth0",
                    "rxBytes": net,
                    "rxErrors": 0,
                    "txBytes": net // 2,
                    "txErrors": 0,
                    "interfaces": [
                        {
                            "name": "eth0",
                            "rxBytes": net,
                            "rxErrors": 0,
                            "txBytes": net // 2,
                            "txErrors": 0,
                        }
                    ],
                },
                "volume": volumes,
                "ephemeral-storage": fs_stats(45056, at),
                "process_stats": {
                    "process_count": sum(1 + int(c["cpu"]) % 4 for c in p.containers)
                },
            }
        )
    return json.dumps({"node": node, "pods": summaries}, indent=2).encode() + b"\n"


# File name -> body, named as every fixture source is: `<endpoint prefix>-<origin>`.
BODIES = {
    "cadvisor-k8s1.20-synthetic.txt": cadvisor,
    "kubelet-metrics-k8s1.20-synthetic.txt": kubelet_metrics,
    "resource-k8s1.20-synthetic.txt": resource,
    "probes-k8s1.20-synthetic.txt": probes,
    "slis-synthetic.txt": slis,
    "pods-k8s1.20-synthetic.json": pods,
    "stats-summary-k8s1.20-synthetic.json": stats_summary,
}


def main(argv):
    out = Path(argv[1]) if len(argv) > 1 else Path(__file__).resolve().parent
    out.mkdir(parents=True, exist_ok=True)
    for name, render in BODIES.items():
        (out / name).write_bytes(render())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
