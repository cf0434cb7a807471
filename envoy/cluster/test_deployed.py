"""deploy/ installed as a user installs it (the README's "Deploying", step by step),
on the real cluster. World: hack/cluster.sh's node (kubelet, containerd, kube-proxy,
its DNS); no stand-in, nothing mapped, no file of deploy/ changed.

The images `make images` built are pushed to a registry on the node's loopback
(Debian's docker-registry, as images-test runs it) and containerd pulls them from
there; deploy/overlays/image is rendered as `make release` renders it (our images
pinned by digest; upstream envoyproxy/envoy, which no registry here serves, replaced
by the test Envoy image of the same version). Then, with the cluster's kubectl:
the namespace, the control plane's certificate and CA, the JWKS and the proxy's
certificate, the NetworkPolicy's ipBlock set to the node, `apply --server-side`.
A tenant's scraper is a real Prometheus in a pod of acme-web with a projected token
of the audience kubelet-scope, scraping the node's :10443 as a tenant would.

Not shown here: the NetworkPolicy's effect (the cluster's bridge CNI enforces no
policy)."""

import collections
import http.client
import json
import subprocess
import sys
import threading
import time
import urllib.parse

import pytest
import yaml
from real_world import TENANT_AUDIENCE, label_namespace, namespace_labels, tenant_namespaces

import stack
from conftest import WORK, WORKLOAD_NAMESPACES

sys.path.insert(0, str(stack.REPO / "images"))

import build  # noqa: E402

import oci  # noqa: E402
import render_manifests  # noqa: E402
from local_registry import LocalRegistry  # noqa: E402

IMAGES = stack.REPO / "target" / "images"
WASM = stack.REPO / "target" / "wasm32-wasip1" / "release" / "kubelet_scope_filter.wasm"
PROMETHEUS_BIN = stack.REPO / ".cache" / "prometheus" / "usr" / "bin" / "prometheus"
GLIBC = stack.REPO / ".cache" / "libc6"
NAMESPACE = "kubelet-scope"
SERVICE = "kubelet-scope.kubelet-scope.svc"
UPSTREAM_ENVOY = "envoyproxy/envoy:v1.40.0"
PLACEHOLDER_CIDR = "cidr: 192.0.2.0/24"
TENANT, SCRAPER_NAMESPACE = "acme", "acme-web"


def kubectl(cluster, *args, stdin=None, check=True):
    """The cluster's own kubectl (v1.20.2) as admin; its stdout."""
    argv = [cluster.env["KUBECTL"], "--kubeconfig", cluster.env["ADMIN_KUBECONFIG"]]
    argv += ["--cache-dir", cluster.env["KUBECTL_CACHE_DIR"], *map(str, args)]
    r = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 or not check, f"kubectl {' '.join(map(str, args))}: {r.stderr}"
    return r.stdout + r.stderr


def prometheus_image(out):
    """Debian's Prometheus (it links only glibc) on the glibc layer of the test Envoy
    image, as uid 65532: the tenant's scraper."""
    libdir = GLIBC / "lib/x86_64-linux-gnu"
    glibc = [
        oci.Entry(f"lib/x86_64-linux-gnu/{n}", 0o755, (libdir / n).read_bytes())
        for n in build.GLIBC
    ]
    glibc.append(
        oci.Entry("lib64/ld-linux-x86-64.so.2", link="/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2")
    )
    binary = [oci.Entry("bin/prometheus", 0o755, PROMETHEUS_BIN.read_bytes())]
    config = {"User": build.NONROOT, "Entrypoint": ["/bin/prometheus"], "WorkingDir": "/"}
    image = oci.build_image([glibc, binary], config, ["glibc (Debian libc6)", "prometheus"])
    oci.write_archive(image, "test", out)
    return image.digest


def scraper_objects(image, node_ip, proxy_ca):
    """acme's scraper: a ServiceAccount, Prometheus' configuration and the proxy's CA,
    and the pod, its token projected for the audience kubelet-scope."""
    ns = SCRAPER_NAMESPACE
    token = "/var/run/secrets/kubelet-scope/token"
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
        "scrape_configs": [
            {
                "job_name": f"kubelet-{path.strip('/').replace('/', '-')}",
                "scheme": "https",
                "metrics_path": path,
                "authorization": {"credentials_file": token},
                "tls_config": {"ca_file": "/etc/prometheus/proxy-ca.crt"},
                "static_configs": [{"targets": [f"{node_ip}:10443"]}],
            }
            for path in ("/metrics/cadvisor", "/metrics/resource")
        ],
    }
    pod_spec = {
        "serviceAccountName": "scraper",
        "automountServiceAccountToken": False,
        "securityContext": {"runAsNonRoot": True, "runAsUser": 65532, "runAsGroup": 65532},
        "containers": [
            {
                "name": "prometheus",
                "image": image,
                "args": [
                    "--config.file=/etc/prometheus/prometheus.yml",
                    "--storage.tsdb.path=/prometheus",
                    "--web.listen-address=0.0.0.0:9090",
                ],
                "ports": [{"name": "web", "containerPort": 9090}],
                "readinessProbe": {"httpGet": {"path": "/-/ready", "port": "web"}},
                "securityContext": {"readOnlyRootFilesystem": True},
                "volumeMounts": [
                    {"name": "config", "mountPath": "/etc/prometheus"},
                    {"name": "token", "mountPath": "/var/run/secrets/kubelet-scope"},
                    {"name": "data", "mountPath": "/prometheus"},
                ],
            }
        ],
        "volumes": [
            {"name": "config", "configMap": {"name": "scraper"}},
            {"name": "data", "emptyDir": {}},
            {
                "name": "token",
                "projected": {
                    "sources": [
                        {
                            "serviceAccountToken": {
                                "path": "token",
                                "audience": TENANT_AUDIENCE,
                                "expirationSeconds": 3600,
                            }
                        }
                    ]
                },
            },
        ],
    }
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "scraper", "namespace": ns}},
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "scraper", "namespace": ns},
            "data": {"prometheus.yml": json.dumps(config), "proxy-ca.crt": proxy_ca.read_text()},
        },
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "scraper", "namespace": ns, "labels": {"app": "scraper"}},
            "spec": pod_spec,
        },
    ]  # fmt: skip


class Deployment:
    """What the fixture installed, and how a tenant reaches it."""

    def __init__(self, cluster, reg, registry, workdir, images, proxy_ca):
        self.cluster, self.reg, self.registry, self.dir = cluster, reg, registry, workdir
        self.images, self.proxy_ca = images, proxy_ca
        self.node_ip = cluster.node_ip
        self.scraper_ip = None
        self._token = None

    def token(self):
        """A token of acme's scraper (what its pod holds, from the same API)."""
        if self._token is None:
            self._token = self.cluster.service_account_token(
                SCRAPER_NAMESPACE, "scraper", [TENANT_AUDIENCE]
            )
        return self._token

    def get(self, path, timeout=10.0):
        """`path` through the DaemonSet's tenant listener as acme's scraper."""
        headers = {"authorization": f"Bearer {self.token()}"}
        return stack.request(
            10443, path, headers, tls_ca=self.proxy_ca, timeout=timeout, host=self.node_ip
        )

    def query(self, q):
        """An instant query of the scraper pod's Prometheus."""
        r = stack.request(9090, "/api/v1/query?" + _qs(q), timeout=5, host=self.scraper_ip)
        assert r.status == 200, r
        return json.loads(r.body)["data"]["result"]

    def render(self, images, out):
        """deploy/overlays/image as `make release` renders it, NetworkPolicy set."""
        overrides = {UPSTREAM_ENVOY: f"{self.registry}/{self.images['envoy']['reference']}"}
        warnings = render_manifests.render(
            stack.REPO / "deploy", WASM, images, self.registry, overrides, out
        )
        assert warnings == [], warnings
        text = (out / "image.yaml").read_text()
        # README step 4: the NetworkPolicy's ipBlock, the node's address.
        assert text.count(PLACEHOLDER_CIDR) == 1
        manifest = out / "image-node.yaml"
        manifest.write_text(text.replace(PLACEHOLDER_CIDR, f"cidr: {self.node_ip}/32"))
        return manifest


def _qs(q):
    return urllib.parse.urlencode({"query": q})


def rollout(cluster, kind, name, timeout=120):
    kubectl(
        cluster, "-n", NAMESPACE, "rollout", "status", f"{kind}/{name}", f"--timeout={timeout}s"
    )


def pod_of(cluster, namespace, selector):
    pods = json.loads(
        kubectl(cluster, "-n", namespace, "get", "pods", "-l", selector, "-o", "json")
    )
    return pods["items"]


@pytest.fixture(scope="module")
def deployed(cluster):
    images_json = IMAGES / "images.json"
    assert images_json.exists(), f"{images_json} is missing: `make images` (cluster-test runs it)"
    images = json.loads(images_json.read_text())
    workdir = stack.clean_dir(WORK / "deployed")
    with LocalRegistry() as reg:
        registry = f"localhost:{reg.host.rsplit(':', 1)[1]}"
        for name, info in images.items():
            pushed = reg.push(IMAGES / info["archive"], info["tag"], info["repository"])
            assert pushed == info["manifest_digest"], (name, pushed)
        prometheus = prometheus_image(workdir / "prometheus.tar")
        reg.push(workdir / "prometheus.tar", "test", "kubelet-scope-test/prometheus")
        d = Deployment(cluster, reg, registry, workdir, images, None)

        # 1. the namespace (an earlier run on the same cluster may have left it)
        out = kubectl(cluster, "create", "namespace", NAMESPACE, check=False)
        assert "created" in out or "AlreadyExists" in out, out
        # 2. the control plane's serving certificate and its CA
        ca, cert, key = stack.issue_certificate(workdir, "control-plane", f"DNS:{SERVICE}")
        kubectl(cluster, "-n", NAMESPACE, "create", "secret", "tls", "kubelet-scope-tls",
                f"--cert={cert}", f"--key={key}")  # fmt: skip
        kubectl(cluster, "-n", NAMESPACE, "create", "configmap", "kubelet-scope-ca",
                f"--from-file=ca.crt={ca}")  # fmt: skip
        # 3. the JWKS, the issuer (the shipped one: nothing to change), the proxy's TLS
        (workdir / "jwks.json").write_text(kubectl(cluster, "get", "--raw", "/openid/v1/jwks"))
        kubectl(cluster, "-n", NAMESPACE, "create", "configmap", "kubelet-proxy-jwks",
                f"--from-file={workdir / 'jwks.json'}")  # fmt: skip
        issuer = json.loads(kubectl(cluster, "get", "--raw", "/.well-known/openid-configuration"))
        assert issuer["issuer"] == "https://kubernetes.default.svc.cluster.local", issuer
        proxy_ca, proxy_cert, proxy_key = stack.issue_certificate(
            workdir, "kubelet-proxy", f"IP:{cluster.node_ip}"
        )
        kubectl(cluster, "-n", NAMESPACE, "create", "secret", "tls", "kubelet-proxy-tls",
                f"--cert={proxy_cert}", f"--key={proxy_key}")  # fmt: skip
        d.proxy_ca = proxy_ca
        # 4 and 5: the overlay rendered as the release renders it, applied
        manifest = d.render(images, workdir / "manifests")
        kubectl(cluster, "apply", "--server-side", "-f", manifest)
        # 6. tenants' namespaces are labelled (the workload's); acme's scraper
        scraper_image = f"{registry}/kubelet-scope-test/prometheus@{prometheus}"
        objects = scraper_objects(scraper_image, cluster.node_ip, proxy_ca)
        kubectl(
            cluster,
            "apply",
            "-f",
            "-",
            stdin=json.dumps({"kind": "List", "apiVersion": "v1", "items": objects}),
        )

        try:
            rollout(cluster, "deployment", "kubelet-scope")
            rollout(cluster, "daemonset", "kubelet-proxy")
            kubectl(cluster, "-n", SCRAPER_NAMESPACE, "wait", "--for=condition=Ready",
                    "pod/scraper", "--timeout=120s")  # fmt: skip
            d.scraper_ip = pod_of(cluster, SCRAPER_NAMESPACE, "app=scraper")[0]["status"]["podIP"]
            stack.wait_for("the deployed filter to serve acme", lambda: d.get("/pods").status == 200,
                           timeout=60, interval=0.5)  # fmt: skip
            yield d
        except Exception:
            print(kubectl(cluster, "get", "pods", "-A", "-o", "wide", check=False))
            print(kubectl(cluster, "-n", NAMESPACE, "get", "events", check=False))
            for p in pod_of(cluster, NAMESPACE, "app.kubernetes.io/name=kubelet-scope"):
                for c in p["spec"].get("initContainers", []) + p["spec"]["containers"]:
                    print(kubectl(cluster, "-n", NAMESPACE, "logs", p["metadata"]["name"],
                                  "-c", c["name"], "--tail=30", check=False))  # fmt: skip
            raise
        finally:
            # The installation goes but for its Namespace (the `real` fixture's
            # objects live there), so later tests' Envoys have the node to themselves.
            kubectl(cluster, "delete", "--wait=true", "--ignore-not-found", "-n", SCRAPER_NAMESPACE,
                    "pod/scraper", "configmap/scraper")  # fmt: skip
            installed = [
                doc for doc in yaml.safe_load_all(manifest.read_text())
                if doc and doc["kind"] != "Namespace"
            ]  # fmt: skip
            kubectl(cluster, "delete", "--wait=true", "--ignore-not-found", "-f", "-",
                    stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": installed}))  # fmt: skip
            kubectl(cluster, "-n", NAMESPACE, "delete", "--ignore-not-found",
                    "secret/kubelet-scope-tls", "secret/kubelet-proxy-tls",
                    "configmap/kubelet-scope-ca", "configmap/kubelet-proxy-jwks")  # fmt: skip


def image_digest(status):
    """The manifest digest a container status says it runs (`imageID`)."""
    return status["imageID"].rsplit("@", 1)[-1]


def test_deployed_pods_run_the_released_images(deployed):
    """The control plane's pods (two replicas, its own ServiceAccount, 65532) and the
    DaemonSet's pod (hostNetwork, init container done) run, Ready, the images pulled
    from the registry by the digests `make images` printed."""
    c, images = deployed.cluster, deployed.images
    planes = pod_of(c, NAMESPACE, "app.kubernetes.io/component=control-plane")
    assert len(planes) == 2
    for p in planes:
        assert p["spec"]["serviceAccountName"] == "kubelet-scope"
        assert p["spec"]["securityContext"]["runAsUser"] == 65532
        (status,) = p["status"]["containerStatuses"]
        assert status["ready"], status
        assert image_digest(status) == images["control-plane"]["manifest_digest"]
    (proxy,) = pod_of(c, NAMESPACE, "app.kubernetes.io/component=kubelet-proxy")
    assert proxy["spec"]["hostNetwork"] is True
    assert proxy["status"]["podIP"] == deployed.node_ip
    (init,) = proxy["status"]["initContainerStatuses"]
    assert init["state"]["terminated"]["exitCode"] == 0, init
    assert image_digest(init) == images["filter"]["manifest_digest"]
    (envoy,) = proxy["status"]["containerStatuses"]
    assert envoy["ready"] and image_digest(envoy) == images["envoy"]["manifest_digest"], envoy


def test_deployed_tenant_sees_only_its_namespaces(deployed):
    """acme's scraper token through the deployed Envoy: every read endpoint answers
    200 with acme's namespaces only (all of those with pods), each series of one of
    them carrying that namespace's team; no token is 401, a denied path 404."""
    acme = tenant_namespaces(deployed.cluster, TENANT)
    labels = namespace_labels(deployed.cluster)
    assert acme == {n for n, t in WORKLOAD_NAMESPACES.items() if t == TENANT}
    for path in ("/metrics/cadvisor", "/metrics/resource"):
        r = deployed.get(path)
        assert r.status == 200, (path, r)
        seen = set(stack.series_namespaces(r.body)) - {None}
        assert seen == acme, (path, seen)
        for line in r.text.splitlines():
            ns = stack.line_namespace(line)
            if ns:
                assert f'team="{labels[ns]["team"]}"' in line, (path, line)
    for path in ("/stats/summary", "/pods"):
        r = deployed.get(path)
        assert r.status == 200, (path, r)
        assert set(stack.json_namespaces(path, r.body)) == acme, path
    anonymous = stack.request(10443, "/pods", tls_ca=deployed.proxy_ca, host=deployed.node_ip)
    assert anonymous.status == 401, anonymous
    assert deployed.get("/configz").status == 404


def test_deployed_scraper_pod_prometheus_sees_its_namespaces(deployed):
    """A real Prometheus in acme-web's pod, its projected token as credentials_file:
    both targets up, and what it stored is acme's namespaces with their teams."""
    labels = namespace_labels(deployed.cluster)
    acme = tenant_namespaces(deployed.cluster, TENANT)

    def up():
        result = deployed.query("up")
        return len(result) == 2 and all(s["value"][1] == "1" for s in result) and result

    stack.wait_for("the scraper pod's targets to be up", up, timeout=60, interval=1)
    q = "count by (namespace, team) (container_cpu_usage_seconds_total)"
    stack.wait_for(
        "cadvisor series in the scraper's Prometheus", lambda: deployed.query(q), timeout=30
    )
    got = {(s["metric"]["namespace"], s["metric"].get("team")) for s in deployed.query(q)}
    assert got == {(n, labels[n]["team"]) for n in acme}, got
    assert not deployed.query('count({namespace!~"acme-.*",namespace!=""})')


def test_deployed_label_change_reaches_the_tenant_within_2s(deployed):
    """A namespace's team changed in the apiserver is in the next scrapes through the
    deployed DaemonSet within 2 s (control plane pod's watch → Service → the filter)."""
    c = deployed.cluster
    before = namespace_labels(c)["acme-batch"]["team"]
    new = f"moved-{int(time.time())}"

    def injected():
        r = deployed.get("/metrics/resource")
        return r.status == 200 and 'namespace="acme-batch"' in r.text and f'team="{new}"' in r.text

    try:
        start = time.monotonic()
        label_namespace(c, "acme-batch", {"team": new})
        stack.wait_for("the new team through the DaemonSet", injected, timeout=10, interval=0.05)
        took = time.monotonic() - start
        print(f"label change → deployed filter: {took:.2f} s")
        assert took <= 2.0, took
    finally:
        label_namespace(c, "acme-batch", {"team": before})


def test_deployed_daemonset_rolls_to_a_new_filter_image_without_5xx(deployed):
    """A new filter image (another release of the same .wasm: another digest) applied
    as the release's manifest: the DaemonSet rolls, and a scraper polling through it
    meanwhile sees 200s, one gap while the pod is replaced (refused connections, and
    at most the new Envoy's fail-closed answers before its first snapshot), then 200s
    from the new pod: nothing else."""
    c, d = deployed.cluster, deployed
    args = type("Args", (), {})()
    args.wasm, args.version = WASM, "roll"
    args.busybox = stack.REPO / ".cache" / "busybox-static" / "bin" / "busybox"
    image = build.filter_image(args)
    oci.write_archive(image, "roll", d.dir / "filter-roll.tar")
    assert image.digest != d.images["filter"]["manifest_digest"]
    d.reg.push(d.dir / "filter-roll.tar", "roll", d.images["filter"]["repository"])
    images = json.loads(json.dumps(d.images))
    images["filter"]["manifest_digest"] = image.digest
    manifest = d.render(images, d.dir / "manifests-roll")
    (old,) = pod_of(c, NAMESPACE, "app.kubernetes.io/component=kubelet-proxy")

    results, times, stop = [], [], threading.Event()

    def scrape():
        while not stop.is_set():
            times.append(time.monotonic())
            try:
                results.append(d.get("/metrics/resource", timeout=5).status)
            except (OSError, http.client.HTTPException) as e:
                results.append(type(e).__name__)
            time.sleep(0.05)

    poller = threading.Thread(target=scrape)
    poller.start()
    try:
        time.sleep(1)
        kubectl(c, "apply", "--server-side", "-f", manifest)
        rollout(c, "daemonset", "kubelet-proxy")
        (new,) = pod_of(c, NAMESPACE, "app.kubernetes.io/component=kubelet-proxy")
        assert new["metadata"]["uid"] != old["metadata"]["uid"]
        assert image_digest(new["status"]["initContainerStatuses"][0]) == image.digest
        stack.wait_for("200s from the new pod", lambda: results[-3:] == [200] * 3, timeout=30)
    finally:
        stop.set()
        poller.join()
    failed = [i for i, r in enumerate(results) if r != 200]
    if failed:
        gap = times[failed[-1]] - times[failed[0]]
        kinds = collections.Counter(results[i] for i in failed)
        print(f"roll: {len(results)} scrapes; one gap of {gap:.1f} s: {dict(kinds)}")
    assert results[0] == 200 and results[-1] == 200, results
    if failed:
        gap = results[failed[0] : failed[-1] + 1]
        assert 200 not in gap, f"more than one gap: {results}"
        assert all(r == 503 or isinstance(r, str) for r in gap), gap
        # a 503 only from the new Envoy: after the old one's last answer, nothing but
        # refused connections until the new one answers
        answers = [r for r in gap if not isinstance(r, str)]
        assert answers == gap[len(gap) - len(answers) :], gap
