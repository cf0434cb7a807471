"""Fixtures of the image tests: what `make images` built (target/images/images.json
and the inputs it was built from) and one loopback registry for the session."""

import glob
import json
import os
from pathlib import Path

import pytest

import local_registry

REPO = Path(__file__).resolve().parent.parent
IMAGES = Path(os.environ.get("KUBELET_SCOPE_IMAGES", REPO / "target/images"))


def build_inputs():
    """build.py's inputs, as `make images` passes them."""
    envoy = glob.glob(str(REPO / ".venv/lib/python3*/site-packages/envoy/_bin/envoy"))
    return {
        "--control-plane": REPO / "target/x86_64-unknown-linux-musl/release/kubelet-scope",
        "--wasm": REPO / "target/wasm32-wasip1/release/kubelet_scope_filter.wasm",
        "--envoy": Path(envoy[0]),
        "--glibc": REPO / ".cache/libc6",
        "--busybox": REPO / ".cache/busybox-static/bin/busybox",
    }


@pytest.fixture(scope="session")
def built():
    """images.json of `make images`: name -> digests, archive, repository, tag."""
    path = IMAGES / "images.json"
    if not path.exists():
        pytest.fail(f"{path} is missing: run `make images` (make images-test does)")
    summary = json.loads(path.read_text())
    assert set(summary) == {"control-plane", "filter", "envoy"}, summary.keys()
    return summary


@pytest.fixture(scope="session")
def registry():
    with local_registry.LocalRegistry() as r:
        yield r
