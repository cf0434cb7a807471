"""`make release VERSION=x.y.z`: the release directory, from files already built
(the release wasm and the static control plane). The contract, in dist/:

  kubelet_scope_filter.wasm         the filter (for a ConfigMap, or an http(s):// url)
  kubelet_scope_filter.wasm.sha256  its sha256, as `sha256sum` prints it
  images/control-plane.tar          OCI archives (tag VERSION); skopeo copy
  images/filter.tar                   oci-archive:FILE:VERSION docker://REGISTRY/...
  images/images.json                their manifest digests and references
  manifests/<overlay>.yaml          each overlay of deploy/overlays/ rendered, our
                                    images pinned by digest (render_manifests.py)
  manifests/istio/*.yaml            deploy/istio/, the WasmPlugin's url and sha256
                                    naming the filter image
  release.json                      version, wasm sha256, image references
  SHA256SUMS                        every file above (`sha256sum -c SHA256SUMS`)

and a section for VERSION in CHANGELOG.md: if there is none, the `## Unreleased`
section becomes it (or an empty one is added), with the artifacts' digests."""

import argparse
import datetime
import hashlib
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import render_manifests

REPO = Path(__file__).resolve().parent.parent
SEMVER = re.compile(r"^\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?$")
WASM_NAME = "kubelet_scope_filter.wasm"


def sha256_file(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def changelog_section(path, version, release):
    """Make sure CHANGELOG.md has `## VERSION`; returns True if it added one."""
    text = path.read_text() if path.exists() else "# Changelog\n"
    if re.search(rf"^## \[?{re.escape(version)}\]?(\s|$)", text, re.M):
        return False
    today = datetime.datetime.now(datetime.UTC).date().isoformat()
    artifacts = (
        "\n### Artifacts\n\n"
        f"- `{WASM_NAME}` sha256 `{release['wasm']['sha256']}`\n"
        + "".join(
            f"- `{info['repository']}:{version}` `{info['manifest_digest']}`\n"
            for info in release["images"].values()
        )
    )
    heading = f"## {version} - {today}\n"
    unreleased = re.search(r"^## Unreleased[^\n]*\n(?P<body>.*?)(?=^## |\Z)", text, re.M | re.S)
    if unreleased:
        body = unreleased["body"].rstrip("\n") + "\n"
        section = f"## Unreleased\n\n{heading}{body}{artifacts}\n"
        text = text[: unreleased.start()] + section + text[unreleased.end() :]
    else:
        first = re.search(r"^## ", text, re.M)
        at = first.start() if first else len(text)
        section = f"{heading}\nNo changes recorded.\n{artifacts}\n"
        text = text[:at].rstrip("\n") + "\n\n" + section + text[at:]
    path.write_text(text)
    return True


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--version", required=True)
    p.add_argument("--dist", type=Path, required=True)
    p.add_argument("--registry", required=True, help="the registry the images go to")
    p.add_argument("--control-plane", type=Path, required=True)
    p.add_argument("--wasm", type=Path, required=True)
    p.add_argument("--busybox", type=Path, required=True, help="for the filter image")
    p.add_argument("--changelog", type=Path, default=REPO / "CHANGELOG.md")
    p.add_argument("--set", action="append", default=[], metavar="OLD=NEW")
    args = p.parse_args()
    if not SEMVER.match(args.version):
        p.error(f"VERSION={args.version!r} is not x.y.z")
    cargo = re.search(r'^version = "(.*)"', (REPO / "Cargo.toml").read_text(), re.M)[1]
    if cargo != args.version:
        print(f"warning: Cargo.toml says {cargo}: `kubelet-scope --version` will not say {args.version}", file=sys.stderr)  # fmt: skip
    dist = args.dist
    shutil.rmtree(dist, ignore_errors=True)
    dist.mkdir(parents=True)

    shutil.copyfile(args.wasm, dist / WASM_NAME)
    wasm_sha = sha256_file(dist / WASM_NAME)
    (dist / f"{WASM_NAME}.sha256").write_text(f"{wasm_sha}  {WASM_NAME}\n")

    build = [sys.executable, str(REPO / "images/build.py"), "--out", str(dist / "images")]
    build += ["--version", args.version, "--only", "control-plane", "filter"]
    build += ["--control-plane", str(args.control_plane), "--wasm", str(args.wasm)]
    build += ["--busybox", str(args.busybox)]
    subprocess.run(build, check=True)
    images = json.loads((dist / "images/images.json").read_text())

    registry = args.registry.rstrip("/")
    overrides = dict(s.split("=", 1) for s in args.set)
    for w in render_manifests.render(
        REPO / "deploy", args.wasm, images, registry, overrides, dist / "manifests"
    ):
        print(f"warning: {w}", file=sys.stderr)
    render_manifests.render_istio(
        REPO / "deploy", images, registry, args.version, dist / "manifests"
    )

    release = {
        "version": args.version,
        "wasm": {"file": WASM_NAME, "sha256": wasm_sha},
        "images": {
            name: {
                **info,
                "reference": f"{registry}/{info['repository']}@{info['manifest_digest']}",
            }
            for name, info in images.items()
        },
    }
    (dist / "release.json").write_text(json.dumps(release, indent=2, sort_keys=True) + "\n")
    files = sorted(f for f in dist.rglob("*") if f.is_file())
    sums = "".join(f"{sha256_file(f)}  {f.relative_to(dist)}\n" for f in files)
    (dist / "SHA256SUMS").write_text(sums)
    if changelog_section(args.changelog, args.version, release):
        print(f"{args.changelog.name}: added the section for {args.version}; review it")
    print(f"release {args.version} in {dist}/:")
    print(f"  {WASM_NAME} sha256 {wasm_sha}")
    for info in release["images"].values():
        print(f"  {info['reference']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
