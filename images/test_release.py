"""`make release`'s contract (images/release.py) into a temporary dist/, with a copy
of CHANGELOG.md, and the manifest rendering on its own (render_manifests.py)."""

import base64
import hashlib
import json
import subprocess
import sys

import pytest
import yaml

import render_manifests
from conftest import REPO, build_inputs

VERSION = "0.1.0"  # the version `make images` tags with, so the digests are the same


@pytest.fixture(scope="module")
def release(tmp_path_factory, built):
    tmp = tmp_path_factory.mktemp("release")
    changelog = tmp / "CHANGELOG.md"
    changelog.write_text("# Changelog\n\n## Unreleased\n\n- A change.\n\n## 0.0.1\n\n- Old.\n")
    inputs = build_inputs()
    args = [sys.executable, str(REPO / "images/release.py"), "--version", VERSION]
    args += ["--dist", str(tmp / "dist"), "--registry", "registry.test:5000/"]
    args += ["--control-plane", str(inputs["--control-plane"]), "--wasm", str(inputs["--wasm"])]
    args += ["--busybox", str(inputs["--busybox"]), "--changelog", str(changelog)]
    subprocess.run(args, check=True, capture_output=True)
    return tmp / "dist", changelog, args


def test_dist_holds_the_wasm_and_its_sha256(release):
    dist, _, _ = release
    wasm = build_inputs()["--wasm"].read_bytes()
    assert (dist / "kubelet_scope_filter.wasm").read_bytes() == wasm
    digest = hashlib.sha256(wasm).hexdigest()
    assert (dist / "kubelet_scope_filter.wasm.sha256").read_text() == (
        f"{digest}  kubelet_scope_filter.wasm\n"
    )
    r = subprocess.run(["sha256sum", "-c", "--quiet", "SHA256SUMS"], cwd=dist)
    assert r.returncode == 0


def test_dist_images_are_those_of_make_images(release, built):
    dist, _, _ = release
    images = json.loads((dist / "images/images.json").read_text())
    assert set(images) == {"control-plane", "filter"}
    for name, info in images.items():
        assert info["manifest_digest"] == built[name]["manifest_digest"], name
        assert (dist / "images" / info["archive"]).is_file()
    meta = json.loads((dist / "release.json").read_text())
    assert meta["version"] == VERSION
    assert meta["wasm"]["sha256"] == built["filter"]["wasm_sha256"]
    reference = meta["images"]["filter"]["reference"]
    assert (
        reference == f"registry.test:5000/kubelet-scope/filter@{built['filter']['manifest_digest']}"
    )


def pod_images(docs, kind):
    spec = next(d for d in docs if d["kind"] == kind)["spec"]["template"]["spec"]
    return [c["image"] for c in spec.get("initContainers", []) + spec["containers"]]


def test_each_overlay_is_rendered_with_our_images_pinned_by_digest(release, built):
    dist, _, _ = release
    pinned = {
        name: f"registry.test:5000/kubelet-scope/{name}@{built[name]['manifest_digest']}"
        for name in ("control-plane", "filter")
    }
    overlays = sorted(p.parent.name for p in (REPO / "deploy/overlays").glob("*/kustomization.yaml"))  # fmt: skip
    assert sorted(p.stem for p in (dist / "manifests").glob("*.yaml")) == overlays
    for overlay in overlays:
        docs = [d for d in yaml.safe_load_all((dist / "manifests" / f"{overlay}.yaml").read_text())]
        assert pod_images(docs, "Deployment") == [pinned["control-plane"]], overlay
        # Envoy is upstream's, left as shipped unless --set pins it.
        envoy = "envoyproxy/envoy:v1.40.0"
        expected = [pinned["filter"], envoy] if overlay == "image" else [envoy]
        assert pod_images(docs, "DaemonSet") == expected, overlay
    # The ConfigMap overlay carries the release .wasm itself.
    docs = list(yaml.safe_load_all((dist / "manifests" / "configmap.yaml").read_text()))
    [filter_map] = [d for d in docs if d["metadata"]["name"].startswith("kubelet-scope-filter")]
    wasm = base64.b64decode(filter_map["binaryData"]["kubelet_scope_filter.wasm"])
    assert wasm == build_inputs()["--wasm"].read_bytes()


def test_the_wasmplugin_names_the_pushed_filter_by_its_manifest_digest(release, built):
    dist, _, _ = release
    [plugin] = [
        d
        for f in sorted((dist / "manifests" / "istio").glob("*.yaml"))
        for d in yaml.safe_load_all(f.read_text())
        if d and d["kind"] == "WasmPlugin"
    ]
    assert plugin["spec"]["url"] == f"oci://registry.test:5000/kubelet-scope/filter:{VERSION}"
    assert plugin["spec"]["sha256"] == built["filter"]["manifest_digest"].removeprefix("sha256:")
    sources = {p.name for p in (REPO / "deploy" / "istio").glob("*.yaml")}
    assert {p.name for p in (dist / "manifests" / "istio").glob("*.yaml")} == sources


def test_changelog_unreleased_becomes_the_release_with_digests(release, built):
    _, changelog, args = release
    text = changelog.read_text()
    assert text.startswith("# Changelog\n\n## Unreleased\n\n## 0.1.0 - ")
    section = text.split("## 0.1.0 - ", 1)[1].split("## 0.0.1", 1)[0]
    assert "- A change." in section
    assert built["filter"]["manifest_digest"] in section
    assert built["filter"]["wasm_sha256"] in section
    # Released again: the section is there, nothing is added.
    subprocess.run(args, check=True, capture_output=True)
    assert changelog.read_text() == text


def test_release_refuses_a_version_that_is_not_semver(release):
    _, _, args = release
    bad = [a if a != VERSION else "v1" for a in args]
    assert subprocess.run(bad, capture_output=True).returncode != 0


IMAGES = {
    "control-plane": {"repository": "kubelet-scope/control-plane", "manifest_digest": "sha256:aa"},
    "filter": {"repository": "kubelet-scope/filter", "manifest_digest": "sha256:bb"},
}


def test_image_entries_pin_ours_and_the_overrides():
    entries = render_manifests.image_entries(
        IMAGES, "r:1", {"up/envoy:v1": "up/envoy@sha256:cc", "x:1": "y:2"}
    )
    assert entries == [
        {"name": "kubelet-scope", "newName": "r:1/kubelet-scope/control-plane", "digest": "sha256:aa"},
        {"name": "kubelet-scope-filter", "newName": "r:1/kubelet-scope/filter", "digest": "sha256:bb"},
        {"name": "up/envoy", "newName": "up/envoy", "digest": "sha256:cc"},
        {"name": "x", "newName": "y", "newTag": "2"},
    ]  # fmt: skip
    with pytest.raises(ValueError, match="not built"):
        render_manifests.image_entries({"filter": IMAGES["filter"]}, "r", {})


def test_render_warns_of_what_is_left_as_a_tag(tmp_path):
    warnings = render_manifests.render(
        REPO / "deploy", build_inputs()["--wasm"], IMAGES, "r", {}, tmp_path
    )
    assert warnings == [f"{o}: envoyproxy/envoy:v1.40.0 is not pinned by digest" for o in ("configmap", "image")]  # fmt: skip
    pinned = {"envoyproxy/envoy:v1.40.0": "envoyproxy/envoy@sha256:" + "d" * 64}
    assert render_manifests.render(REPO / "deploy", build_inputs()["--wasm"], IMAGES, "r", pinned, tmp_path) == []  # fmt: skip
