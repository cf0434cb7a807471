"""The Kubernetes manifests of deploy/ as a user applies them: every overlay rendered
with kubectl's kustomize, checked against the Kubernetes API schema strictly (an
unknown or misspelt field fails; the PyPI package kubernetes-validate) and accepted by
a real kube-apiserver in a server-side dry run, the way the README applies it.

World: a real apiserver, no kubelet."""

import os
import shutil
import subprocess

import pytest

import stack
from conftest import WORK

DEPLOY = stack.REPO / "deploy"
OVERLAYS = sorted(p.parent.name for p in (DEPLOY / "overlays").glob("*/kustomization.yaml"))


def rendered(overlay):
    """`kubectl kustomize` of the overlay, in a copy of deploy/ holding the release
    .wasm where the README copies it; the rendered file's path."""
    tree = stack.clean_dir(WORK / "manifests" / overlay)
    shutil.copytree(DEPLOY, tree / "deploy")
    shutil.copy(stack.WASM, tree / "deploy" / "overlays" / "configmap")
    r = subprocess.run(
        ["kubectl", "kustomize", tree / "deploy" / "overlays" / overlay],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    out = tree / "rendered.yaml"
    out.write_text(r.stdout)
    return out


def kubectl(api, *args):
    env = {**os.environ, "KUBECONFIG": str(api.kubeconfig())}
    return subprocess.run(["kubectl", *args], capture_output=True, text=True, env=env)


def test_there_are_a_base_and_the_overlays_the_readme_names():
    assert (DEPLOY / "base" / "kustomization.yaml").exists()
    assert {"configmap", "image"} <= set(OVERLAYS)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_passes_strict_schema_validation(overlay):
    r = subprocess.run(
        [stack.VENV / "bin" / "kubernetes-validate", "--strict", "--quiet", rendered(overlay)],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_is_accepted_by_the_apiserver_server_side(overlay, daemonset_apiserver):
    manifest = rendered(overlay)
    text = manifest.read_text()
    for kind in ("Deployment", "DaemonSet", "NetworkPolicy", "ClusterRoleBinding", "Service"):
        assert f"kind: {kind}\n" in text, kind
    r = kubectl(daemonset_apiserver, "apply", "--server-side", "--dry-run=server", "-f", manifest)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "daemonset.apps/kubelet-proxy serverside-applied (server dry run)" in r.stdout, r.stdout


def test_the_filter_configmap_needs_server_side_apply(daemonset_apiserver):
    """Why the README applies with --server-side: client-side apply stores the whole
    object in an annotation, limited to 256 KiB, and the .wasm is larger."""
    assert stack.WASM.stat().st_size > 256 * 1024
    r = kubectl(daemonset_apiserver, "apply", "--dry-run=server", "-f", rendered("configmap"))
    assert r.returncode != 0
    assert "Too long" in r.stderr and "kubelet-scope-filter" in r.stderr, r.stderr
