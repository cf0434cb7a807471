"""The images of `make images`: reproducible, pushed to a loopback registry with
skopeo and pulled back with the project's Istio-rules client (registry_client.py)
with the same digests, the filter's plugin.wasm byte-identical to the build, and
the control plane serving a snapshot under runc as 65532 with a read-only root."""

import errno
import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
import urllib.request
from pathlib import Path

import pytest

import oci
import registry_client
import runc_container
from conftest import IMAGES, REPO, build_inputs
from local_registry import free_port

NONROOT = 65532


def archive(built, name):
    images = oci.read_archive(IMAGES / built[name]["archive"])
    assert list(images) == [built[name]["tag"]]
    return images[built[name]["tag"]]


def layer_members(layer):
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(layer.data))) as tar:
        return tar.getmembers()


def run_build(out, inputs):
    args = [sys.executable, str(REPO / "images/build.py"), "--out", str(out), "--version", "0.1.0"]
    for flag, path in inputs.items():
        args += [flag, str(path)]
    subprocess.run(args, check=True, capture_output=True)
    return json.loads((out / "images.json").read_text())


@pytest.fixture(scope="session")
def pushed(built, registry):
    """Every image pushed (skopeo, digests preserved); name -> skopeo's digest."""
    return {
        name: registry.push(IMAGES / info["archive"], info["tag"], info["repository"])
        for name, info in built.items()
    }


# --- the archives -------------------------------------------------------------------


@pytest.mark.parametrize("name", ["control-plane", "filter", "envoy"])
def test_archive_holds_the_image_images_json_names(built, name):
    image = archive(built, name)  # every blob checked against its digest
    assert image.digest == built[name]["manifest_digest"]
    manifest = json.loads(image.manifest.data)
    assert manifest["mediaType"] == oci.OCI_MANIFEST
    assert [d["digest"] for d in manifest["layers"]] == built[name]["layers"]
    config = json.loads(image.config.data)
    assert (config["os"], config["architecture"]) == ("linux", "amd64")
    diff_ids = [oci.sha256(gzip.decompress(layer.data)) for layer in image.layers]
    assert config["rootfs"]["diff_ids"] == diff_ids


@pytest.mark.parametrize("name", ["control-plane", "filter", "envoy"])
def test_layers_carry_no_time_owner_or_order_of_the_build_machine(built, name):
    for layer in archive(built, name).layers:
        assert layer.data[4:8] == b"\0\0\0\0", "gzip header carries a time"
        members = layer_members(layer)
        assert [m.name for m in members] == sorted(m.name for m in members)
        for m in members:
            assert (m.mtime, m.uid, m.gid, m.uname, m.gname) == (0, 0, 0, "", ""), m.name


def test_control_plane_is_the_static_binary_alone_run_as_nonroot(built):
    image = archive(built, "control-plane")
    assert len(image.layers) == 1
    members = layer_members(image.layers[0])
    assert [(m.name, m.mode) for m in members] == [("kubelet-scope", 0o755)]
    binary = build_inputs()["--control-plane"].read_bytes()
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(image.layers[0].data))) as tar:
        assert tar.extractfile("kubelet-scope").read() == binary
    config = json.loads(image.config.data)["config"]
    assert config["User"] == f"{NONROOT}:{NONROOT}"
    assert config["Entrypoint"] == ["/kubelet-scope"]


def test_filter_image_is_istio_compat_with_plugin_wasm_last(built):
    image = archive(built, "filter")
    assert image.layers[-1].media_type == oci.OCI_LAYER_GZIP
    [member] = layer_members(image.layers[-1])
    assert member.name == "plugin.wasm"
    # Before it, only what an init container needs to copy it out.
    files = [m.name for layer in image.layers[:-1] for m in layer_members(layer) if m.isfile()]
    assert files == ["bin/busybox"]
    wasm = build_inputs()["--wasm"].read_bytes()
    assert built["filter"]["wasm_sha256"] == hashlib.sha256(wasm).hexdigest()


def test_same_inputs_elsewhere_with_other_mtimes_give_the_same_digests(built, tmp_path):
    """Built again from copies of the inputs (another path, mtimes of now), the
    archives are byte-identical to `make images`' and so are the digests."""
    copies = {}
    for flag, path in build_inputs().items():
        dest = tmp_path / "inputs" / flag.strip("-")
        if path.is_dir():
            shutil.copytree(path, dest, symlinks=True)
        else:
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, dest)
        os.utime(dest, (time.time(), time.time()))
        copies[flag] = dest
    try:
        again = run_build(tmp_path / "again", copies)
        for name, info in built.items():
            assert again[name]["manifest_digest"] == info["manifest_digest"], name
            first = (IMAGES / info["archive"]).read_bytes()
            assert (tmp_path / "again" / info["archive"]).read_bytes() == first, name
    finally:  # 150 MB of copies and archives
        shutil.rmtree(tmp_path)


def test_a_changed_input_changes_the_digest(built, tmp_path):
    """The reproducibility check can fail: one byte of the wasm more, another digest."""
    wasm = tmp_path / "plugin.wasm"
    wasm.write_bytes(build_inputs()["--wasm"].read_bytes() + b"\0")
    args = [sys.executable, str(REPO / "images/build.py"), "--out", str(tmp_path), "--version"]
    args += ["0.1.0", "--wasm", str(wasm), "--only", "filter"]
    args += ["--busybox", str(build_inputs()["--busybox"])]
    subprocess.run(args, check=True, capture_output=True)
    other = json.loads((tmp_path / "images.json").read_text())["filter"]
    assert other["manifest_digest"] != built["filter"]["manifest_digest"]


# --- through the registry -----------------------------------------------------------


@pytest.mark.parametrize("name", ["control-plane", "filter", "envoy"])
def test_pushed_and_pulled_back_with_the_same_digests(built, registry, pushed, name):
    info = built[name]
    assert pushed[name] == info["manifest_digest"], "skopeo pushed another manifest"
    r = registry_client.Registry(registry.host)
    for ident in (info["tag"], info["manifest_digest"]):
        _, manifest, digest = r.image(info["repository"], ident)
        assert digest == info["manifest_digest"]
    image = archive(built, name)
    ref = f"docker://{registry.host}/{info['repository']}:{info['tag']}"
    raw = registry.skopeo("inspect", "--raw", "--tls-verify=false", ref)
    assert raw.encode() == image.manifest.data, "skopeo reads another manifest back"
    for desc in [manifest["config"], *manifest["layers"]]:
        local = next(b for b in image.blobs() if b.digest == desc["digest"])
        assert r.blob(info["repository"], desc) == local.data


def test_filter_pulled_by_istio_rules_is_the_built_wasm(built, registry, pushed):
    info = built["filter"]
    wasm = build_inputs()["--wasm"].read_bytes()
    by_tag = f"{registry.host}/{info['repository']}:{info['tag']}"
    pulled = registry_client.pull(by_tag, expected_sha256=info["manifest_digest"][7:])
    assert (pulled.variant, pulled.manifest_digest) == ("compat", info["manifest_digest"])
    assert pulled.wasm == wasm
    by_digest = f"oci://{registry.host}/{info['repository']}@{info['manifest_digest']}"
    assert registry_client.pull(by_digest).wasm == wasm


def test_a_wrong_sha256_is_refused_as_istio_refuses_it(built, registry, pushed):
    info = built["filter"]
    ref = f"{registry.host}/{info['repository']}:{info['tag']}"
    with pytest.raises(registry_client.FetchError, match="not the expected sha256"):
        registry_client.pull(ref, expected_sha256=info["wasm_sha256"])  # the http(s) one


def test_filter_as_docker_schema2_is_read_by_the_docker_rule(built, registry, pushed):
    """skopeo converts the image to a Docker manifest (docker media types): the
    client takes Istio's Docker branch and finds the same plugin.wasm."""
    info = built["filter"]
    src = f"docker://{registry.host}/{info['repository']}:{info['tag']}"
    dest = f"docker://{registry.host}/{info['repository']}:{info['tag']}-docker"
    registry.skopeo("copy", "--quiet", "--format", "v2s2", "--src-tls-verify=false",
                    "--dest-tls-verify=false", src, dest)  # fmt: skip
    pulled = registry_client.pull(dest.removeprefix("docker://"))
    assert pulled.manifest["mediaType"] == registry_client.DOCKER_MANIFEST
    assert pulled.manifest_digest != info["manifest_digest"]
    assert pulled.wasm == build_inputs()["--wasm"].read_bytes()


def test_an_image_without_plugin_wasm_is_refused(built, registry, pushed):
    info = built["control-plane"]
    with pytest.raises(registry_client.FetchError, match="plugin.wasm not found"):
        registry_client.pull(f"{registry.host}/{info['repository']}:{info['tag']}")


# --- run ------------------------------------------------------------------------------


def pulled_image(registry, info):
    """The image as the registry serves it (config and layers checked by digest)."""
    r = registry_client.Registry(registry.host)
    _, manifest, _ = r.image(info["repository"], info["manifest_digest"])
    blob = lambda d: oci.Blob(d["mediaType"], r.blob(info["repository"], d))  # noqa: E731
    layers = [blob(d) for d in manifest["layers"]]
    return oci.Image(oci.Blob(oci.OCI_MANIFEST, b""), blob(manifest["config"]), layers)


def get(url):
    with urllib.request.urlopen(url, timeout=5) as r:
        return r.status, r.read()


def test_control_plane_under_runc_serves_the_snapshot(built, registry, pushed, tmp_path):
    config = tmp_path / "config"
    config.mkdir()
    shutil.copyfile(REPO / "deploy/examples/namespaces.yaml", config / "namespaces.yaml")
    port = free_port()
    args = ["/kubelet-scope", "serve", f"--listen=127.0.0.1:{port}", "--label=tenant"]
    args += ["--namespaces-file=/etc/kubelet-scope/namespaces.yaml"]
    image = pulled_image(registry, built["control-plane"])
    with runc_container.RuncContainer(image, args, {config: "/etc/kubelet-scope"}) as c:
        pid = c.pid()
        assert pid, c.read_log()
        status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())  # fmt: skip
        assert status["Uid"].split() == [str(NONROOT)] * 4
        assert status["Gid"].split() == [str(NONROOT)] * 4
        assert int(status["CapEff"], 16) == 0
        with pytest.raises(OSError) as e:
            Path(f"/proc/{pid}/root/written").write_text("x")
        assert e.value.errno == errno.EROFS
        deadline = time.monotonic() + 30
        while True:
            try:
                code, body = get(f"http://127.0.0.1:{port}/v1/snapshot")
                if code == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, c.read_log()
            assert c.proc.poll() is None, c.read_log()
            time.sleep(0.2)
        snapshot = json.loads(body)
        assert snapshot["namespaces"]["workload-dogstatsd"]["labels"] == {"tenant": "acme"}
        assert snapshot["namespaces"]["kube-system"]["labels"] == {"tenant": "platform"}
        assert get(f"http://127.0.0.1:{port}/readyz")[0] == 200


def test_envoy_image_runs_with_its_glibc_alone(built, registry, pushed):
    image = pulled_image(registry, built["envoy"])
    with runc_container.RuncContainer(image, ["/usr/local/bin/envoy", "--version"]) as c:
        code, out = c.run_to_end()
    assert code == 0, out
    assert "/1.40.0/" in out, out
