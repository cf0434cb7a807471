"""The Kubernetes manifests in deploy/ against the Kubernetes API schema, strictly
(an unknown or misspelt field fails), with the PyPI package kubernetes-validate."""

import subprocess

import pytest

import stack

MANIFESTS = sorted((stack.REPO / "deploy").glob("*.yaml"))


@pytest.mark.parametrize("manifest", MANIFESTS, ids=lambda p: p.name)
def test_manifest_passes_strict_schema_validation(manifest):
    r = subprocess.run(
        [stack.VENV / "bin" / "kubernetes-validate", "--strict", "--quiet", manifest],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stdout + r.stderr


def test_there_are_manifests():
    names = {m.name for m in MANIFESTS}
    assert {"control-plane.yaml", "kubelet-proxy.yaml"} <= names
