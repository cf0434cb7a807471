"""Pull a wasm module from a registry the way Istio's agent does (WasmPlugin
`url: oci://...`), with nothing but the standard library: the second client of the
image tests (skopeo pushes; this pulls), and a way to check a pushed filter image.

The rules it follows are those of Istio's image fetcher (pkg/wasm/imagefetcher.go
and cache.go in istio/istio), not its code:
  - GET the manifest by tag or digest; an index is resolved to its linux/amd64
    image. The image's manifest digest is what a WasmPlugin's `sha256` must equal.
  - Docker schema 2 manifest: the *last* layer must be a Docker gzip layer, and the
    wasm is the first tar entry whose base name is `plugin.wasm` ("compat").
  - OCI manifest: the same with an OCI `tar+gzip` last layer ("compat"); failing
    that, exactly two layers, one of media type
    application/vnd.module.wasm.content.layer.v1+wasm holding the raw module ("oci").
  - The module must start with the wasm magic and be at least 8 bytes.
Beyond Istio, every blob is checked against its digest and size. No auth, no
HTTPS fallback: the tests' registry is plain HTTP on loopback.

    python images/registry_client.py 127.0.0.1:5000/kubelet-scope/filter:0.1.0 \\
        [--sha256 MANIFEST_HEX] [--out plugin.wasm]"""

import argparse
import gzip
import hashlib
import io
import json
import posixpath
import sys
import tarfile
import urllib.request
from dataclasses import dataclass

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
WASM_LAYER = "application/vnd.module.wasm.content.layer.v1+wasm"
WASM_MAGIC = b"\0asm"


class FetchError(Exception):
    pass


def sha256(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def parse_reference(ref):
    """`host[:port]/repo/path(:tag|@sha256:hex)` -> (host, repo, tag or digest)."""
    ref = ref.removeprefix("oci://")
    host, _, rest = ref.partition("/")
    if "@" in rest:
        repo, _, ident = rest.partition("@")
    elif ":" in rest.rsplit("/", 1)[-1]:
        repo, _, ident = rest.rpartition(":")
    else:
        repo, ident = rest, "latest"
    if not host or not repo:
        raise FetchError(f"not a registry reference: {ref!r}")
    return host, repo, ident


@dataclass
class Pulled:
    manifest_digest: str  # what a WasmPlugin's `sha256` (oci://) is compared with
    manifest: dict
    variant: str  # "compat" (plugin.wasm in the last layer) or "oci" (wasm layer)
    wasm: bytes


class Registry:
    def __init__(self, host, scheme="http"):
        self.base = f"{scheme}://{host}/v2"

    def _get(self, path, accept=None):
        req = urllib.request.Request(self.base + path)
        if accept:
            req.add_header("Accept", accept)
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                return resp.headers, resp.read()
        except urllib.error.HTTPError as e:
            raise FetchError(f"GET {path}: {e.code} {e.read()[:200]!r}") from e

    def manifest(self, repo, ident):
        """(media type, parsed manifest, digest), the digest checked three ways: the
        bytes, the registry's Docker-Content-Digest, and the reference if a digest."""
        accept = ", ".join([OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST])
        headers, body = self._get(f"/{repo}/manifests/{ident}", accept)
        digest = sha256(body)
        served = headers.get("Docker-Content-Digest")
        if served and served != digest:
            raise FetchError(f"manifest is {digest}, registry says {served}")
        if ident.startswith("sha256:") and ident != digest:
            raise FetchError(f"asked for {ident}, got manifest {digest}")
        manifest = json.loads(body)
        media_type = manifest.get("mediaType") or headers.get("Content-Type", "")
        return media_type, manifest, digest

    def blob(self, repo, desc):
        _, data = self._get(f"/{repo}/blobs/{desc['digest']}")
        if sha256(data) != desc["digest"] or len(data) != desc["size"]:
            raise FetchError(f"blob {desc['digest']}: content does not match its descriptor")
        return data

    def image(self, repo, ident):
        """The image manifest of a reference (an index resolved to linux/amd64)."""
        media_type, manifest, digest = self.manifest(repo, ident)
        if media_type in (OCI_INDEX, DOCKER_LIST):
            for d in manifest["manifests"]:
                platform = d.get("platform", {})
                if (platform.get("os"), platform.get("architecture")) == ("linux", "amd64"):
                    return self.manifest(repo, d["digest"])
            raise FetchError("the index has no linux/amd64 image")
        return media_type, manifest, digest


def plugin_wasm(layer_gzip):
    """The first entry of a gzip tar layer whose base name is plugin.wasm."""
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(layer_gzip))) as tar:
        for member in tar:
            if posixpath.basename(member.name) == "plugin.wasm":
                return tar.extractfile(member).read()
    raise FetchError("plugin.wasm not found in the last layer")


def pull(reference, expected_sha256=None, scheme="http"):
    host, repo, ident = parse_reference(reference)
    registry = Registry(host, scheme)
    media_type, manifest, digest = registry.image(repo, ident)
    if expected_sha256 is not None and digest != f"sha256:{expected_sha256}":
        raise FetchError(f"manifest digest {digest} is not the expected sha256 {expected_sha256}")
    layers = manifest.get("layers", [])
    if not layers:
        raise FetchError("the image has no layers")
    last = layers[-1]
    if media_type == DOCKER_MANIFEST:
        if last["mediaType"] != DOCKER_LAYER:
            raise FetchError(f"last layer is {last['mediaType']}, not {DOCKER_LAYER}")
        variant, wasm = "compat", plugin_wasm(registry.blob(repo, last))
    elif last["mediaType"] == OCI_LAYER:
        variant, wasm = "compat", plugin_wasm(registry.blob(repo, last))
    elif len(layers) == 2 and any(d["mediaType"] == WASM_LAYER for d in layers):
        desc = next(d for d in layers if d["mediaType"] == WASM_LAYER)
        variant, wasm = "oci", registry.blob(repo, desc)
    else:
        raise FetchError("neither a compat image nor a two-layer wasm artifact")
    if len(wasm) < 8 or not wasm.startswith(WASM_MAGIC):
        raise FetchError("the module is not a wasm binary")
    return Pulled(digest, manifest, variant, wasm)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("reference")
    p.add_argument("--sha256", help="the manifest digest's hex the WasmPlugin pins")
    p.add_argument("--out", help="write the module here")
    args = p.parse_args()
    try:
        pulled = pull(args.reference, args.sha256)
    except FetchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if args.out:
        with open(args.out, "wb") as f:
            f.write(pulled.wasm)
    print(f"manifest {pulled.manifest_digest} ({pulled.variant})")
    print(f"wasm     {sha256(pulled.wasm)} ({len(pulled.wasm)} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
