"""Attack regression suite: raw requests that no client library normalises, through
every listener of both shipped configurations (envoy/local.yaml; the DaemonSet's
envoy.yaml of deploy/base/kubelet-proxy.yaml, run as in test_daemonset.py, its ext_authz
listener with a real token), over HTTP/1.1
(a socket, TLS where the listener has it) and HTTP/2 (curl with prior knowledge and
--path-as-is, on the plain listeners). Whatever Envoy or the filter answers, a request
for a path that is not a read endpoint never reaches the kubelet, and a tenant never
gets a series of another tenant's namespace.

World: the kubelet stand-in, which logs every request it gets (/_standin/requests).
"""

import socket
import ssl
import subprocess

import pytest
from test_daemonset import PROBES, daemonset_stack, daemonset_token, get, service_account_token

import stack
from conftest import WORK

# Request targets that must not reach the kubelet, whatever their spelling.
FORBIDDEN_TARGETS = [
    "/configz",
    "/metrics/../configz",
    "/metrics/%2e%2e/configz",
    "/metrics/%2E%2E/configz",
    "/metrics/..%2fconfigz",
    "/%63onfigz",
    "//configz",
    "/./configz",
    "/metrics/./../configz",
    "/configz;/metrics",
    "/configz#/metrics",
    "/metrics\\..\\configz",
    "/exec/kube-system/etcd/etcd?command=sh",
    "/run/kube-system/etcd/etcd?cmd=id",
    "/containerLogs/kube-system/etcd/etcd",
    "/logs/../configz",
    "/debug/pprof/",
    "/pods/../exec/a/b/c",
    "http://127.0.0.1/configz",
    "*",
]

FORBIDDEN_SEEN = ("configz", "exec", "/run/", "containerLogs", "logs", "debug")


@pytest.fixture(scope="module")
def daemonset(daemonset_apiserver):
    """The DaemonSet's Envoy as it ships, its control plane on the real apiserver
    (test_daemonset.py's world)."""
    workdir = stack.clean_dir(WORK / "attacks-daemonset")
    token = daemonset_token(daemonset_apiserver)
    with daemonset_stack(daemonset_apiserver, workdir, token) as s:
        stack.wait_for(
            "the filter to have a snapshot",
            lambda: get(s, "tenant", "/metrics/probes", "acme-mon", PROBES).status == 200,
        )
        yield s


class Listener:
    """One listener to attack: where it is, how to authenticate to it."""

    def __init__(self, s, name, token, tls):
        self.stack, self.port, self.token, self.tls = s, s.ports[name], token, tls

    def auth(self):
        return f"Authorization: Bearer {self.token}\r\n" if self.token else ""


@pytest.fixture(
    params=[
        "local-tenant",
        "local-inject",
        "daemonset-tenant",
        "daemonset-platform",
        "daemonset-virtual",
    ]
)
def listener(request, live):
    if request.param == "local-tenant":
        return Listener(live, "tenant", stack.jwt("acme"), None)
    if request.param == "local-inject":
        return Listener(live, "inject", None, None)
    ds = request.getfixturevalue("daemonset")
    if request.param == "daemonset-tenant":
        return Listener(ds, "tenant", service_account_token("acme-mon"), ds.kubelet_cert)
    if request.param == "daemonset-virtual":
        # ext_authz reviews it with the real apiserver: a real token.
        api = request.getfixturevalue("daemonset_apiserver")
        api.service_account("acme-mon", "prometheus")
        token = api.token("acme-mon", "prometheus", "kubelet-scope")
        return Listener(ds, "virtual", token, ds.kubelet_cert)
    return Listener(ds, "inject", service_account_token("monitoring"), ds.kubelet_cert)


def raw(port, request_bytes, timeout=5.0, tls=None):
    """Sends raw bytes, returns the status line (or '' when Envoy closed)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as plain:
        sock = plain
        if tls:
            sock = ssl.create_default_context(cafile=str(tls)).wrap_socket(
                plain, server_hostname="127.0.0.1"
            )
        sock.sendall(request_bytes)
        data = b""
        try:
            while b"\r\n" not in data:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                data += chunk
        except TimeoutError:
            pass
    return data.split(b"\r\n", 1)[0].decode("latin-1")


def status_of(line):
    parts = line.split(" ")
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None


def assert_never_reached_the_kubelet(s, before):
    seen = [r["path"] for r in s.kubelet_requests()[before:]]
    leaked = [p for p in seen if any(f in p for f in FORBIDDEN_SEEN)]
    assert not leaked, leaked


@pytest.mark.parametrize("target", FORBIDDEN_TARGETS)
def test_path_confusion_over_http1(listener, target):
    before = len(listener.stack.kubelet_requests())
    req = f"GET {target} HTTP/1.1\r\nHost: kubelet\r\n{listener.auth()}Connection: close\r\n\r\n"
    line = raw(listener.port, req.encode(), tls=listener.tls)
    assert status_of(line) in (None, 400, 404), (target, line)
    assert_never_reached_the_kubelet(listener.stack, before)


@pytest.mark.parametrize("listener", ["tenant", "inject"])
@pytest.mark.parametrize("target", FORBIDDEN_TARGETS[:13])
def test_path_confusion_over_http2_cleartext(live, listener, target):
    before = len(live.kubelet_requests())
    argv = ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--http2-prior-knowledge"]
    argv += ["--path-as-is", "--max-time", "5"]
    if listener == "tenant":
        argv += ["-H", "authorization: Bearer " + stack.jwt("acme")]
    argv.append(f"http://127.0.0.1:{live.ports[listener]}{target}")
    code = subprocess.run(argv, capture_output=True, text=True).stdout.strip()
    assert code in ("000", "400", "404"), (target, code)
    assert_never_reached_the_kubelet(live, before)


@pytest.mark.parametrize(
    "method", ["POST", "PUT", "DELETE", "PATCH", "TRACE", "CONNECT", "get", "PROPFIND"]
)
def test_other_methods_on_read_endpoints(listener, method):
    before = len(listener.stack.kubelet_requests())
    target = "127.0.0.1:10250" if method == "CONNECT" else "/metrics/cadvisor"
    req = f"{method} {target} HTTP/1.1\r\nHost: kubelet\r\n{listener.auth()}Content-Length: 0\r\nConnection: close\r\n\r\n"
    line = raw(listener.port, req.encode(), tls=listener.tls)
    assert status_of(line) in (None, 400, 403, 404, 405), (method, line)
    seen = listener.stack.kubelet_requests()[before:]
    assert not seen, seen


def test_an_upgrade_to_exec_is_refused(listener):
    before = len(listener.stack.kubelet_requests())
    req = (
        "GET /exec/kube-system/etcd/etcd?command=sh&input=1&output=1&tty=1 HTTP/1.1\r\n"
        f"Host: kubelet\r\n{listener.auth()}Connection: Upgrade\r\nUpgrade: SPDY/3.1\r\n"
        "X-Stream-Protocol-Version: v4.channel.k8s.io\r\n\r\n"
    )
    line = raw(listener.port, req.encode(), tls=listener.tls)
    assert status_of(line) in (None, 400, 403, 404), line
    assert_never_reached_the_kubelet(listener.stack, before)


def test_spoofed_tenant_headers_change_nothing(live):
    fixture = {"x-standin-fixture": "cadvisor-k8s1.20-synthetic.txt"}
    as_acme = live.get("tenant", "/metrics/cadvisor", tenant="acme", headers=fixture)
    for spoof in (
        {"x-kubelet-scope-tenant": "globex"},
        {"X-Kubelet-Scope-Tenant": "globex"},
        {"x-kubelet-scope-tenant": "globex, acme"},
    ):
        r = live.get("tenant", "/metrics/cadvisor", tenant="acme", headers={**spoof, **fixture})
        assert r.body == as_acme.body, spoof
    # Two tenant headers on the wire (one a client copy): refused or acme's view.
    req = (
        "GET /metrics/cadvisor HTTP/1.1\r\nHost: kubelet\r\n"
        f"Authorization: Bearer {stack.jwt('acme')}\r\n"
        "x-kubelet-scope-tenant: globex\r\nx-kubelet-scope-tenant: globex\r\n"
        "x-standin-fixture: cadvisor-k8s1.20-synthetic.txt\r\nConnection: close\r\n\r\n"
    )
    assert status_of(raw(live.ports["tenant"], req.encode())) == 200


@pytest.mark.parametrize(
    "token",
    [
        "",
        "not-a-jwt",
        "e30.e30.",  # {} {} unsigned
        "eyJhbGciOiJub25lIn0.eyJ0ZW5hbnQiOiJnbG9iZXgifQ.",  # alg none, tenant globex
    ],
)
def test_forged_tokens_are_refused(live, token):
    before = len(live.kubelet_requests())
    r = stack.request(
        live.ports["tenant"], "/metrics/cadvisor", {"authorization": "Bearer " + token}
    )
    assert r.status == 401, r
    assert not live.kubelet_requests()[before:]
    expired = stack.jwt("acme", lifetime=-600)  # beyond the 60 s clock skew
    r = stack.request(
        live.ports["tenant"], "/metrics/cadvisor", {"authorization": "Bearer " + expired}
    )
    assert r.status == 401, r
