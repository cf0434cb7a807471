"""`make release`'s contract (images/release.py) into a temporary dist/, with a copy
of CHANGELOG.md, and the manifest rendering on its own (render_manifests.py)."""

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
    args += ["--changelog", str(changelog)]
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


def test_manifests_pin_the_control_plane_by_digest_and_change_nothing_else(release, built):
    dist, _, _ = release
    pinned = f"registry.test:5000/kubelet-scope/control-plane@{built['control-plane']['manifest_digest']}"  # fmt: skip
    for source in sorted((REPO / "deploy").glob("*.yaml")):
        rendered = (dist / "manifests" / source.name).read_text()
        before, after = source.read_text().splitlines(), rendered.splitlines()
        changed = [(a, b) for a, b in zip(before, after, strict=True) if a != b]
        docs = [d for d in yaml.safe_load_all(rendered) if d]
        images = [
            c["image"]
            for d in docs
            if d["kind"] in ("Deployment", "DaemonSet")
            for c in d["spec"]["template"]["spec"]["containers"]
        ]
        if source.name == "control-plane.yaml":
            assert images == [pinned]
            assert [b.strip() for _, b in changed] == [f"image: {pinned}"]
        else:
            assert "kubelet-scope:" not in rendered
            assert all(a.strip().startswith("image:") for a, _ in changed)


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


@pytest.mark.parametrize(
    "line, expected",
    [
        ("  image: kubelet-scope:0.1.0\n", "  image: r:1/kubelet-scope/control-plane@sha256:aa\n"),
        ("- image: kubelet-scope/filter\n", "- image: r:1/kubelet-scope/filter@sha256:bb\n"),
        (
            '  image: "kubelet-scope:9"  # c\n',
            "  image: r:1/kubelet-scope/control-plane@sha256:aa  # c\n",
        ),  # fmt: skip
        ("  image: other/kubelet-scope:1\n", "  image: other/kubelet-scope:1\n"),
        ("  image: up/envoy:v1\n", "  image: up/envoy@sha256:cc\n"),
        ("  # image: kubelet-scope:0.1.0\n", "  # image: kubelet-scope:0.1.0\n"),
    ],
)
def test_render_replaces_our_images_and_overrides_only(line, expected):
    text, _ = render_manifests.render(line, IMAGES, "r:1", {"up/envoy:v1": "up/envoy@sha256:cc"})
    assert text == expected


def test_render_warns_of_a_tag_and_fails_on_an_image_not_built():
    _, warnings = render_manifests.render("image: up/envoy:v1\n", IMAGES, "r", {})
    assert warnings == ["up/envoy:v1 is not pinned by digest"]
    with pytest.raises(ValueError, match="not built"):
        render_manifests.render("image: kubelet-scope/envoy:1\n", IMAGES, "r", {})
