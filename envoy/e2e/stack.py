"""The whole chain on loopback, started from the repository's own build products.

`Stack` runs the real parts the way a node runs them: `kubelet-scope serve` (the
control plane, here on a namespaces file or an apiserver's kubeconfig), the kubelet
stand-in (HTTPS, bearer token), and Envoy from the project's virtualenv loading
`kubelet_scope_filter.wasm` from `envoy/local.yaml`. The end-to-end tests, the demo
and the benchmark all start it through here, so they exercise the same wiring.

Every process gets a free port and a log file in the stack's work directory; `stop()`
terminates them all (also on an exception in a `with` block).

This is the one harness of envoy/: starting processes (`Process`, `Stack`, the real
kube-apiserver as `Apiserver`), the real single-node cluster that hack/cluster.sh
started (`Cluster`: its apiserver, kubelet and ServiceAccount tokens), free ports, waiting for readiness (`wait_for`), HTTP
(`request`), the namespace map (`write_namespaces_file`) and reading namespaces back
out of kubelet bodies. The tests, the demo and the benchmark must not re-implement
any of it; what they assert stays in them.
"""

import base64
import hashlib
import hmac
import http.client
import json
import os
import re
import shutil
import signal
import socket
import ssl
import string
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# The kubelet bodies, found by the rule of every test (testdata/src/lib.rs):
# third-party captures, not carried by the project (may be absent), the captures of
# the project's own cluster (may be absent) and its synthetic bodies (always there).
# A relative folder in a variable is taken from the repository's root.
FIXTURES = REPO / (
    os.environ.get("KUBELET_SCOPE_FIXTURES") or REPO.parent / "shared" / "fixtures" / "kubelet"
)
OWN_CAPTURES = REPO / (
    os.environ.get("KUBELET_SCOPE_OWN_CAPTURES") or REPO / "target" / "cluster" / "captures"
)
SYNTHETIC = REPO / "testdata" / "synthetic"
THIRD_PARTY_ABSENT = (
    f"SKIPPED: third-party kubelet captures not found at {FIXTURES} (set "
    "KUBELET_SCOPE_FIXTURES to their folder); the tests that need them are skipped, "
    "the others run on the project's own bodies only"
)


# The node name the stand-in world's Envoys run as (their `--service-node`).
NODE = "e2e-node"


def fixture_dirs():
    """The folders of kubelet bodies that exist, third-party captures first."""
    return [d for d in (FIXTURES, OWN_CAPTURES, SYNTHETIC) if d.is_dir()]


def fixture_path(name):
    """The body `name` in the first folder of `fixture_dirs()` that has it."""
    for d in fixture_dirs():
        if (d / name).is_file():
            return d / name
    raise FileNotFoundError(f"no kubelet body {name} in {[str(d) for d in fixture_dirs()]}")


VENV = Path(os.environ.get("KUBELET_SCOPE_VENV", REPO / ".venv"))
ENVOY = VENV / "bin" / "envoy"
WASM = REPO / "target" / "wasm32-wasip1" / "release" / "kubelet_scope_filter.wasm"
CLI = Path(os.environ.get("KUBELET_SCOPE_BIN", REPO / "target" / "debug" / "kubelet-scope"))
PROMETHEUS = REPO / ".cache" / "prometheus" / "usr" / "bin" / "prometheus"
EXAMPLES = REPO / "deploy" / "examples"
TEMPLATE = REPO / "envoy" / "local.yaml"
STANDIN = Path(__file__).resolve().parent / "kubelet_standin.py"
APISERVER_SCRIPT = REPO / "control-plane" / "hack" / "kube-apiserver.sh"
CLUSTER_SCRIPT = REPO / "hack" / "cluster.sh"

TENANT_HEADER = "x-kubelet-scope-tenant"
# The demo's JWT issuer: an HMAC key the stack writes into Envoy's local JWKS.
JWT_ISSUER = "kubelet-scope-demo"
JWT_AUDIENCE = "kubelet-scope"
JWT_KEY = b"kubelet-scope-demo-key-not-a-secret"
NODE_TOKEN = "node-token-of-the-demo-kubelet"
# Labels the control plane exports: those the example plugin configurations read.
EXPORTED_LABELS = ("team", "tenant", "app.kubernetes.io/part-of")


def example_config(name):
    with open(EXAMPLES / f"plugin-{name}.json") as f:
        return json.load(f)


# Ports free_port handed out in this process: the kernel may offer a port again once
# its probe socket is closed, and two listeners of one stack on the same port make
# Envoy exit ("Address already in use": seen once, admin and tenant listener).
_GIVEN_PORTS = set()


def free_port():
    """A loopback port nobody listens on, never one this process was given before."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _GIVEN_PORTS:
            _GIVEN_PORTS.add(port)
            return port


def jwt(tenant, issuer=JWT_ISSUER, key=JWT_KEY, lifetime=3600):
    """An HS256 token with a `tenant` claim, as the tenant's identity provider would mint."""
    return sign_jwt({"iss": issuer, "aud": JWT_AUDIENCE, "tenant": tenant}, key, lifetime)


def sign_jwt(claims, key=JWT_KEY, lifetime=3600):
    """`claims` (plus `exp`) as an HS256 JWT signed with `key` (the stack's JWKS key)."""

    def b64(data):
        return base64.urlsafe_b64encode(data).rstrip(b"=")

    header = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "demo"}).encode())
    payload = b64(json.dumps({**claims, "exp": int(time.time()) + lifetime}).encode())
    signature = b64(hmac.new(key, header + b"." + payload, hashlib.sha256).digest())
    return (header + b"." + payload + b"." + signature).decode()


def write_namespaces_file(path, spec):
    """`kubectl get namespaces -o json` for `spec` (name -> labels), written atomically."""
    doc = {
        "apiVersion": "v1",
        "kind": "List",
        "items": [
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n, "labels": labels}}
            for n, labels in spec.items()
        ],
    }
    tmp = Path(str(path) + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1))
    os.replace(tmp, path)


def namespaces_of_tenant(spec, tenant):
    """The namespaces of `spec` (name -> labels) whose `tenant` label is `tenant`."""
    return {n for n, labels in spec.items() if labels.get("tenant") == tenant}


# `namespace="..."` as a label of a series line (not `exported_namespace`, not a value).
NAMESPACE_LABEL = re.compile(r'[{,]\s*namespace="((?:[^"\\]|\\.)*)"')


def line_namespace(line):
    """The `namespace` label of a series line; None for a comment, a blank line or a
    series without one."""
    if not line or line.startswith("#"):
        return None
    m = NAMESPACE_LABEL.search(line[: line.rfind("}") + 1])
    return m.group(1) if m else None


def series_namespaces(body):
    """Namespace of each series line (None: no namespace label)."""
    lines = body.decode("utf-8", "replace").splitlines()
    return [line_namespace(line) for line in lines if line and not line.startswith("#")]


def json_namespaces(path, body):
    """Namespace of each filtered element of a /pods or /stats/summary body."""
    doc = json.loads(body)
    if path == "/stats/summary":
        return [p["podRef"]["namespace"] for p in doc.get("pods") or []]
    return [i["metadata"]["namespace"] for i in doc.get("items") or []]


def render_envoy_config(values, template=TEMPLATE):
    """An Envoy template (envoy/local.yaml by default) with its placeholders filled
    (every one it uses must be given; extra values are ignored)."""
    return string.Template(Path(template).read_text()).substitute(values)


def wait_for(what, check, timeout=20.0, interval=0.05):
    """Polls `check()` until it returns a true value, which is returned."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except (OSError, http.client.HTTPException) as e:
            last = e
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what} (last error: {last})")


class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body

    def header(self, name):
        return self.headers.get(name.lower())

    @property
    def text(self):
        return self.body.decode("utf-8", "replace")

    def __repr__(self):
        return f"<Response {self.status} {len(self.body)} bytes: {self.body[:200]!r}>"


def request(
    port, path, headers=None, tls_ca=None, timeout=30.0, method="GET", body=None, host="127.0.0.1"
):
    """One request (a GET unless `method` says otherwise) on a fresh connection (so
    that successive calls may land on different Envoy workers). Raises on a truncated
    or reset response. With `tls_ca`, the server's certificate must name `host`."""
    if tls_ca:
        ctx = ssl.create_default_context(cafile=str(tls_ca))
        conn = http.client.HTTPSConnection(host, port, context=ctx, timeout=timeout)
    else:
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request(method, path, body, headers=headers or {})
        r = conn.getresponse()
        body = r.read()
        return Response(r.status, {k.lower(): v for k, v in r.getheaders()}, body)
    finally:
        conn.close()


class Process:
    def __init__(self, name, argv, log_dir, env=None):
        self.name = name
        self.argv = [str(a) for a in argv]
        self.log_path = Path(log_dir) / f"{name}.log"
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            self.argv,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )

    def running(self):
        return self.proc.poll() is None

    def check(self):
        if not self.running():
            raise RuntimeError(
                f"{self.name} exited with {self.proc.returncode}; last lines of {self.log_path}:\n"
                + self.tail()
            )

    def wait_ready(self, what, ready, timeout=20.0):
        """Waits until `ready()` holds (see `wait_for`); fails at once if the process
        exits meanwhile."""

        def check():
            self.check()
            return ready()

        return wait_for(what, check, timeout)

    def tail(self, lines=30):
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout=10.0):
        if self.running():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


class Stack:
    """Control plane + kubelet stand-in + Envoy with the filter, on free loopback ports.

    tenant_config / inject_config: the plugin configurations of the two listeners
    (dicts; the examples in deploy/examples/ by default). namespaces_file: what the
    control plane serves; kubeconfig instead watches that apiserver; control_plane=False
    starts none (the filter then never gets a snapshot). template: another Envoy
    template with the same placeholders (the benchmark's envoy/bench.yaml); render:
    a function of the prepared stack returning the whole Envoy configuration instead.
    control_plane_args: more `kubelet-scope serve` arguments; control_plane_ca: the CA
    of the certificate they make it serve HTTPS with (its readiness is checked so).
    standin=False starts no kubelet stand-in: `render` points Envoy at a real kubelet
    (the real-cluster tests, envoy/cluster/).
    """

    def __init__(
        self,
        workdir,
        tenant_config=None,
        inject_config=None,
        namespaces_file=EXAMPLES / "namespaces.yaml",
        kubeconfig=None,
        control_plane=True,
        upstream_timeout="5s",
        concurrency=2,
        standin_args=(),
        template=TEMPLATE,
        render=None,
        control_plane_args=(),
        control_plane_ca=None,
        standin=True,
        node=NODE,
    ):
        self.dir = Path(workdir)
        self.tenant_config = tenant_config or example_config("tenant")
        self.inject_config = inject_config or example_config("inject")
        self.namespaces_file = Path(namespaces_file) if namespaces_file else None
        self.kubeconfig = kubeconfig
        self.with_control_plane = control_plane
        self.upstream_timeout = upstream_timeout
        self.concurrency = concurrency
        self.standin_args = list(standin_args)
        self.template = Path(template)
        self.render = render
        self.control_plane_args = list(control_plane_args)
        self.control_plane_ca = control_plane_ca
        self.with_standin = standin
        # Envoy's node id (`--service-node`), as the DaemonSet sets it to the node's
        # name: a `perNode` filter asks for that node's snapshot.
        self.node = node
        self.processes = {}
        self.ports = {}

    # -- set-up ----------------------------------------------------------------

    def __enter__(self):
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc):
        self.stop()

    def prepare(self):
        """Ports, credentials and the rendered Envoy configuration; starts nothing."""
        for path, hint in (
            (ENVOY, "make venv"),
            (WASM, "make wasm"),
            (CLI, "cargo build -p kubelet-scope"),
        ):
            if not path.exists():
                raise FileNotFoundError(f"{path} is missing: run `{hint}` first")
        self.dir.mkdir(parents=True, exist_ok=True)
        for name in ("admin", "tenant", "inject", "kubelet", "control_plane"):
            self.ports[name] = free_port()
        self.write_credentials()
        self.envoy_config = self.dir / "envoy.yaml"
        if self.render:
            text = self.render(self)
        else:
            text = render_envoy_config(self.envoy_values(), self.template)
        self.envoy_config.write_text(text)

    def start(self):
        self.prepare()
        if self.with_control_plane:
            self.start_control_plane()
        if self.with_standin:
            self.start_standin()
        self.start_envoy()

    def write_credentials(self):
        d = self.dir
        self.kubelet_cert = d / "kubelet.crt"
        subprocess.run(
            [
                "openssl",
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                d / "kubelet.key",
                "-out",
                self.kubelet_cert,
                "-days",
                "2",
                "-subj",
                "/CN=kubelet-standin",
                "-addext",
                "subjectAltName=IP:127.0.0.1",
            ],
            check=True,
            capture_output=True,
        )
        (d / "node-token").write_text(NODE_TOKEN)
        # The node's token reaches Envoy as an SDS generic secret read from a file, the
        # way a DaemonSet mounts its service account token.
        (d / "token-sds.yaml").write_text(
            "resources:\n"
            '- "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret\n'
            "  name: kubelet-token\n"
            "  generic_secret:\n"
            f"    secret: {{ filename: {d / 'node-token'} }}\n"
        )
        k = base64.urlsafe_b64encode(JWT_KEY).rstrip(b"=").decode()
        (d / "jwks.json").write_text(
            json.dumps({"keys": [{"kty": "oct", "alg": "HS256", "kid": "demo", "k": k}]})
        )

    def start_control_plane(self):
        argv = [CLI, "serve", "--listen", f"127.0.0.1:{self.ports['control_plane']}"]
        for label in EXPORTED_LABELS:
            argv += ["--label", label]
        env = {"RUST_LOG": "info"}
        if self.kubeconfig:
            env["KUBECONFIG"] = str(self.kubeconfig)
        else:
            argv += ["--namespaces-file", self.namespaces_file]
        argv += self.control_plane_args
        self.processes["control-plane"] = Process("control-plane", argv, self.dir, env)
        self.processes["control-plane"].wait_ready(
            "the control plane to be ready",
            lambda: (
                request(
                    self.ports["control_plane"], "/readyz", tls_ca=self.control_plane_ca, timeout=2
                ).status
                == 200
            ),
        )

    def start_standin(self):
        argv = [
            sys.executable,
            STANDIN,
            "--port",
            self.ports["kubelet"],
            "--cert",
            self.kubelet_cert,
            "--key",
            self.dir / "kubelet.key",
            "--token-file",
            self.dir / "node-token",
            *[a for d in fixture_dirs() for a in ("--fixtures", d)],
            *self.standin_args,
        ]
        self.processes["kubelet"] = Process("kubelet", argv, self.dir)
        self.processes["kubelet"].wait_ready(
            "the kubelet stand-in",
            lambda: (
                request(
                    self.ports["kubelet"], "/_standin/requests", tls_ca=self.kubelet_cert, timeout=2
                ).status
                == 200
            ),
        )

    def envoy_values(self):
        return {
            "ADMIN_PORT": self.ports["admin"],
            "TENANT_PORT": self.ports["tenant"],
            "INJECT_PORT": self.ports["inject"],
            "KUBELET_PORT": self.ports["kubelet"],
            # Nothing listens there when the stack runs without a control plane.
            "CONTROL_PLANE_PORT": self.ports["control_plane"],
            "UPSTREAM_TIMEOUT": self.upstream_timeout,
            "WASM_FILE": WASM,
            "KUBELET_CA_FILE": self.kubelet_cert,
            "TOKEN_SDS_FILE": self.dir / "token-sds.yaml",
            "JWKS_FILE": self.dir / "jwks.json",
            # A JSON string is a valid YAML scalar.
            "TENANT_PLUGIN_CONFIG": json.dumps(json.dumps(self.tenant_config)),
            "INJECT_PLUGIN_CONFIG": json.dumps(json.dumps(self.inject_config)),
        }

    def start_envoy(self):
        argv = [
            ENVOY,
            "-c",
            self.envoy_config,
            "--concurrency",
            self.concurrency,
            "--log-level",
            "info",
            "--disable-hot-restart",
            "--service-node",
            self.node,
        ]
        self.processes["envoy"] = Process("envoy", argv, self.dir)
        self.processes["envoy"].wait_ready(
            "Envoy to be live",
            lambda: request(self.ports["admin"], "/ready", timeout=2).status == 200,
        )

    # -- use ---------------------------------------------------------------------

    def get(self, listener, path, tenant=None, headers=None, timeout=30.0):
        """GET through Envoy's `tenant` or `inject` listener (as `tenant`, with a JWT)."""
        h = dict(headers or {})
        if tenant is not None:
            h["authorization"] = "Bearer " + jwt(tenant)
        return request(self.ports[listener], path, h, timeout=timeout)

    def kubelet(self, path, headers=None):
        """GET on the stand-in directly, with the node's token: the unfiltered body."""
        h = {"authorization": "Bearer " + NODE_TOKEN, **(headers or {})}
        return request(self.ports["kubelet"], path, h, tls_ca=self.kubelet_cert)

    def kubelet_requests(self):
        """What the stand-in received (method-less: path and lower-cased headers)."""
        r = request(self.ports["kubelet"], "/_standin/requests", tls_ca=self.kubelet_cert)
        return json.loads(r.body)

    def snapshot(self):
        """The control plane's current snapshot (JSON bytes)."""
        return request(self.ports["control_plane"], "/v1/snapshot").body

    def envoy_stats(self):
        text = request(self.ports["admin"], "/stats?format=json").text
        return {s["name"]: s.get("value", 0) for s in json.loads(text)["stats"] if "name" in s}

    def wait_ready(self, tenant, timeout=20.0):
        """Waits until the filter serves `tenant` on several fresh connections (every
        Envoy worker has the snapshot)."""
        streak = [0]

        def ok():
            status = self.get("tenant", "/metrics/probes", tenant=tenant).status
            streak[0] = streak[0] + 1 if status == 200 else 0
            return streak[0] >= 3 * self.concurrency

        wait_for("the filter to have a snapshot", ok, timeout)

    def stop_process(self, name):
        p = self.processes.pop(name, None)
        if p:
            p.stop()

    def stop(self):
        for name in ("envoy", "kubelet", "control-plane"):
            self.stop_process(name)

    def logs(self):
        return "\n".join(f"--- {n}\n{p.tail()}" for n, p in self.processes.items())


class Prometheus:
    """Debian's Prometheus scraping `scrape_configs` every second (a real scraper of
    a tenant's view), its data and log in `workdir`; `query` is the HTTP API's."""

    def __init__(self, workdir, scrape_configs):
        self.dir = Path(workdir)
        self.port = free_port()
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
            "scrape_configs": scrape_configs,
        }
        (self.dir / "prometheus.yml").write_text(json.dumps(config))
        argv = [PROMETHEUS, "--config.file", self.dir / "prometheus.yml"]
        argv += ["--storage.tsdb.path", self.dir / "data"]
        argv += ["--web.listen-address", f"127.0.0.1:{self.port}"]
        self.process = Process("prometheus", argv, self.dir)

    def query(self, q):
        """The instant query's result, or None while Prometheus cannot answer it."""
        self.process.check()
        r = request(self.port, "/api/v1/query?query=" + urllib.parse.quote(q), timeout=5)
        return json.loads(r.body)["data"]["result"] if r.status == 200 else None

    def targets(self):
        return json.loads(request(self.port, "/api/v1/targets").body)["data"]["activeTargets"]

    def stop(self):
        self.process.stop()
        print(self.process.tail(5))


class Apiserver:
    """The real kube-apiserver + etcd of the control plane's integration tests
    (control-plane/hack/kube-apiserver.sh), for a stack's `kubeconfig`."""

    def __init__(self, directory, issuer=None, advertise=None):
        """`issuer`: its tokens' `iss` (another cluster's, a virtual cluster's);
        `advertise`: its --advertise-address (needed where there is no default
        route, as in the real cluster's network namespace)."""
        self.dir = directory
        env = dict(os.environ)
        if issuer:
            env["KUBE_APISERVER_ISSUER"] = issuer
        if advertise:
            env["KUBE_ADVERTISE_ADDRESS"] = advertise
        subprocess.run([APISERVER_SCRIPT, "start", directory], check=True, env=env)
        self.port = int((directory / "main.port").read_text())

    def kubeconfig(self):
        path = self.dir / "admin.kubeconfig"
        path.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "current-context": "e2e",
                    "clusters": [
                        {
                            "name": "e2e",
                            "cluster": {
                                "server": f"https://127.0.0.1:{self.port}",
                                "certificate-authority": str(self.dir / "ca.crt"),
                            },
                        }
                    ],
                    "users": [{"name": "admin", "user": {"token": "admin-token"}}],
                    "contexts": [{"name": "e2e", "context": {"cluster": "e2e", "user": "admin"}}],
                }
            )
        )
        return path

    def call(self, method, path, body, content_type):
        headers = {"Authorization": "Bearer admin-token", "Content-Type": content_type}
        r = request(
            self.port,
            path,
            headers,
            tls_ca=self.dir / "ca.crt",
            timeout=10,
            method=method,
            body=json.dumps(body),
        )
        return r.status, r.body

    def label_namespace(self, name, labels):
        """Merges `labels` into the namespace's, creating it if the apiserver's
        bootstrap has not yet (a fresh apiserver creates `default` a moment after
        it reports ready)."""
        for _ in range(20):
            status, body = self.call(
                "PATCH",
                f"/api/v1/namespaces/{name}",
                {"metadata": {"labels": labels}},
                "application/merge-patch+json",
            )
            if status == 200:
                return
            assert status == 404, (status, body)
            status, body = self.call(
                "POST",
                "/api/v1/namespaces",
                {"metadata": {"name": name, "labels": labels}},
                "application/json",
            )
            if status == 201:
                return
            assert status == 409, (status, body)  # created meanwhile: patch it
        raise AssertionError(f"could not label namespace {name}")

    def create(self, path, obj):
        """POSTs `obj` to the collection `path`; one that exists already is fine."""
        status, body = self.call("POST", path, obj, "application/json")
        assert status in (201, 409), (status, body)
        return body

    def service_account(self, namespace, name):
        self.label_namespace(namespace, {})
        self.create(f"/api/v1/namespaces/{namespace}/serviceaccounts", {"metadata": {"name": name}})

    def token(self, namespace, name, audience, seconds=3600):
        """A ServiceAccount token from the TokenRequest API (as a projected volume
        holds it)."""
        status, body = self.call(
            "POST",
            f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token",
            {"spec": {"audiences": [audience], "expirationSeconds": seconds}},
            "application/json",
        )
        assert status == 201, (status, body)
        return json.loads(body)["status"]["token"]

    def stop(self):
        subprocess.run([APISERVER_SCRIPT, "stop", self.dir], check=False)


def issue_certificate(directory, name, sans):
    """A CA (`name`-ca.crt) and a certificate it signed (`name`.crt, `name`.key) for
    the subjectAltNames `sans` (e.g. "DNS:x.svc,IP:127.0.0.1"); returns the three paths."""
    d = Path(directory)
    ca, ca_key = d / f"{name}-ca.crt", d / f"{name}-ca.key"
    cert, key, csr, ext = (d / f"{name}.{s}" for s in ("crt", "key", "csr", "ext"))
    ext.write_text(f"subjectAltName={sans}\n")
    new_key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    days = ["-days", "2"]
    for argv in (
        ["req", "-x509", *new_key, *days, "-keyout", ca_key, "-out", ca, "-subj", f"/CN={name}-ca"],
        ["req", *new_key, "-keyout", key, "-out", csr, "-subj", f"/CN={name}"],
        ["x509", "-req", *days, "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial"]
        + ["-out", cert, "-extfile", ext],
    ):
        subprocess.run(["openssl", *argv], check=True, capture_output=True)
    return ca, cert, key


def synced_pod(host_namespace, cluster, name, namespace, uid, node, image="busybox"):
    """A host pod as vcluster's syncer makes it for the virtual pod `namespace`/`name`
    (UID `uid`) of virtual cluster `cluster`: its host name, namespace, labels and
    annotations, scheduled on `node`; its container sleeps."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"{name}-x-{namespace}-x-{cluster}",
            "namespace": host_namespace,
            "labels": {
                "vcluster.loft.sh/managed-by": cluster,
                "vcluster.loft.sh/namespace": namespace,
            },
            "annotations": {
                "vcluster.loft.sh/object-name": name,
                "vcluster.loft.sh/object-namespace": namespace,
                "vcluster.loft.sh/object-uid": uid,
            },
        },
        "spec": {
            "nodeName": node,
            "containers": [{"name": name, "image": image, "command": ["sleep", "3600"]}],
        },
    }


class Cluster:
    """The real single-node cluster of hack/cluster.sh (`start DIR`), read from
    DIR/env. Its addresses are in the cluster's network namespace: the caller runs
    there (`hack/cluster.sh exec DIR ...`, as `make cluster-test` does)."""

    def __init__(self, directory):
        self.dir = Path(directory)
        self.env = dict(
            line.split("=", 1) for line in (self.dir / "env").read_text().splitlines() if line
        )
        self.node_ip = self.env["NODE_IP"]
        self.node_name = self.env["NODE_NAME"]
        self.ca = Path(self.env["CA_CERT"])
        self.api_port = int(self.env["APISERVER_PORT"])
        self.kubelet_port = int(self.env["KUBELET_PORT"])
        self.admin_token = self.env["ADMIN_TOKEN"]

    def api(self, method, path, body=None, content_type="application/json", token=None):
        """The apiserver (as admin unless `token`): the status and the decoded JSON."""
        headers = {"Authorization": f"Bearer {token or self.admin_token}"}
        if body is not None:
            headers["Content-Type"] = content_type
            body = json.dumps(body)
        r = request(
            self.api_port,
            path,
            headers,
            tls_ca=self.ca,
            timeout=15,
            method=method,
            body=body,
            host=self.node_ip,
        )
        return r.status, (json.loads(r.body) if r.body else None)

    def get(self, path):
        status, doc = self.api("GET", path)
        assert status == 200, (path, status, doc)
        return doc

    def ensure(self, collection, obj):
        """Creates `obj` under the API `collection` path unless it exists."""
        status, doc = self.api("POST", collection, obj)
        assert status in (201, 409), (collection, status, doc)

    def service_account_token(self, namespace, name, audiences=None, seconds=3600):
        """A real token of ServiceAccount `name` (created if absent) from the
        TokenRequest API; without `audiences`, the apiserver's own (what the kubelet's
        webhook authentication accepts)."""
        self.ensure(
            f"/api/v1/namespaces/{namespace}/serviceaccounts",
            {"metadata": {"name": name, "namespace": namespace}},
        )
        spec = {"expirationSeconds": seconds}
        if audiences:
            spec["audiences"] = list(audiences)
        status, doc = self.api(
            "POST",
            f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token",
            {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec},
        )
        assert status == 201, (status, doc)
        return doc["status"]["token"]

    def kubelet(self, path, token=None, headers=None, timeout=30.0):
        """The kubelet at the node IP, TLS verified against the test CA."""
        h = dict(headers or {})
        if token:
            h["Authorization"] = f"Bearer {token}"
        return request(
            self.kubelet_port, path, h, tls_ca=self.ca, timeout=timeout, host=self.node_ip
        )

    def pods(self, namespace=None):
        path = f"/api/v1/namespaces/{namespace}/pods" if namespace else "/api/v1/pods"
        return self.get(path)["items"]

    def restart(self, component):
        """Stops and starts one component (kubelet, containerd, kube-apiserver,
        kube-scheduler, kube-controller-manager) with its command line of `start`."""
        subprocess.run([CLUSTER_SCRIPT, "restart", self.dir, component], check=True)


def clean_dir(path):
    shutil.rmtree(path, ignore_errors=True)
    Path(path).mkdir(parents=True)
    return Path(path)
