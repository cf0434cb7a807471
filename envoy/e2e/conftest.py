"""Shared fixtures of the end-to-end tests: the kubelet bodies (stack.fixture_dirs():
third-party captures when present, the project's own captures and synthetic bodies),
the namespace map built from them, and one running stack for the tests that do not
need their own.

What the tests know about the captures and the example configurations lives here;
starting processes, HTTP and reading bodies are stack.py's (the one harness), and
must not be written again here."""

import json
import os
import subprocess
import tempfile
from pathlib import Path

import pytest

import stack
from kubelet_standin import ENDPOINTS
from stack import json_namespaces, series_namespaces

WORK = Path(os.environ.get("KUBELET_SCOPE_E2E_DIR", stack.REPO / "target" / "e2e"))
TENANTS = ("acme", "globex")


def kubelet_path(fixture):
    """The kubelet path a capture was taken from (by its file-name prefix)."""
    for path, (prefix, _) in ENDPOINTS.items():
        if fixture.startswith(prefix) and path != "/runningpods/":
            return path
    return None


FIXTURES = [
    n for d in stack.fixture_dirs() for n in sorted(os.listdir(d)) if kubelet_path(n) is not None
]
THIRD_PARTY = stack.FIXTURES.is_dir()
# For a test that names a third-party capture.
needs_third_party = pytest.mark.skipif(not THIRD_PARTY, reason=stack.THIRD_PARTY_ABSENT)


def pytest_terminal_summary(terminalreporter):
    if not THIRD_PARTY:
        terminalreporter.write_line(stack.THIRD_PARTY_ABSENT, red=True, bold=True)


def read_fixture(name):
    return stack.fixture_path(name).read_bytes()


def namespaces_of(fixture, body=None):
    path = kubelet_path(fixture)
    body = read_fixture(fixture) if body is None else body
    if ENDPOINTS[path][1].startswith("application/json"):
        return json_namespaces(path, body)
    return series_namespaces(body)


def all_namespaces():
    found = set()
    for f in FIXTURES:
        found.update(ns for ns in namespaces_of(f) if ns)
    return sorted(found)


def namespace_map():
    """Every namespace of every capture, owned alternately by the two tenants, each
    with a team, every third one with an `app.kubernetes.io/part-of`."""
    spec = {}
    for i, ns in enumerate(all_namespaces()):
        labels = {"tenant": TENANTS[i % 2], "team": f"team-{ns}"}
        if i % 3 == 0:
            labels["app.kubernetes.io/part-of"] = f"suite-{i}"
        spec[ns] = labels
    return spec


def tenant_namespaces(spec, tenant):
    """What the example tenant configuration gives `tenant`: its labelled namespaces,
    plus kube-system for `platform` (staticNamespaces)."""
    owned = stack.namespaces_of_tenant(spec, tenant)
    if tenant == "platform":
        owned.add("kube-system")
    return owned


def cli_rewrite(config, snapshot, path, body, tenant=None):
    """The `kubelet-scope rewrite` CLI on `body`: (exit code, stdout, stderr)."""
    with tempfile.TemporaryDirectory() as d:
        cfg = Path(d) / "config.json"
        snap = Path(d) / "snapshot.json"
        cfg.write_text(json.dumps(config))
        snap.write_bytes(snapshot)
        argv = [stack.CLI, "rewrite", "--config", cfg, "--snapshot", snap, "--path", path]
        if tenant:
            argv += ["--tenant", tenant]
        r = subprocess.run([str(a) for a in argv], input=body, capture_output=True)
        return r.returncode, r.stdout, r.stderr.decode(errors="replace")


def same_snapshot_source(config, source):
    """`config` with `source` as its snapshot section. Plugins sharing a vm_id share
    one poll, so both listeners of a stack must use the same settings."""
    return {**config, "snapshot": {**config["snapshot"], **source}}


@pytest.fixture(scope="session")
def spec():
    return namespace_map()


@pytest.fixture(scope="session")
def live(spec):
    """One stack for the read-only tests: Envoy with both listeners, the control plane
    on a namespaces file built from the captures, the stand-in."""
    workdir = stack.clean_dir(WORK / "live")
    stack.write_namespaces_file(workdir / "namespaces.json", spec)
    s = stack.Stack(
        workdir,
        namespaces_file=workdir / "namespaces.json",
        upstream_timeout="3s",
        # The default /metrics/cadvisor (what Prometheus scrapes): the project's own.
        standin_args=["--serve", "/metrics/cadvisor=cadvisor-k8s1.20-synthetic.txt"],
    )
    with s:
        s.wait_ready("acme")
        yield s


@pytest.fixture(scope="session")
def daemonset_apiserver():
    """The real apiserver the DaemonSet's control plane watches and reviews tokens
    with (test_daemonset.py, test_attacks.py)."""
    from test_daemonset import start_apiserver

    api = start_apiserver(WORK / "daemonset-apiserver")
    yield api
    api.stop()
