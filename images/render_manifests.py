"""Render Kubernetes manifests with the project's images pinned by digest: the one
step of `make release` that knows manifests. deploy/ will become a kustomize tree;
then this is `kustomize edit set image` (or an `images:` list), and only this file
changes.

Every `image:` naming one of our images (the control plane's placeholder
`kubelet-scope[:tag]`, or a repository of build.py's REPOSITORIES) becomes
REGISTRY/REPOSITORY@sha256:...; `--set OLD=NEW` replaces any other image exactly
(e.g. pin upstream Envoy by digest). An image of ours that was not built is an
error; any image left as a tag is printed as a warning.

    python images/render_manifests.py --images dist/images/images.json \\
        --registry localhost:5000 --out dist/manifests deploy/*.yaml"""

import argparse
import json
import re
import sys
from pathlib import Path

# Image names in deploy/ (without tag) -> the image of build.py they mean.
OURS = {
    "kubelet-scope": "control-plane",
    "kubelet-scope/control-plane": "control-plane",
    "kubelet-scope/filter": "filter",
    "kubelet-scope/envoy": "envoy",
}
IMAGE_LINE = re.compile(r"^(?P<indent>\s*(?:- )?image:\s*)(?P<image>[^\s#]+)(?P<rest>.*)$")


def repository_of(image):
    """`name[:tag][@digest]` -> name (a port in the host is not a tag)."""
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    return name.rsplit(":", 1)[0] if ":" in last else name


def render(text, images, registry, overrides):
    """(rendered text, [warnings]); ValueError for an image of ours not in `images`."""
    out, warnings = [], []
    for line in text.splitlines(keepends=True):
        m = IMAGE_LINE.match(line.rstrip("\n"))
        if m:
            image = m["image"].strip("\"'")
            name = OURS.get(repository_of(image))
            if image in overrides:
                image = overrides[image]
            elif name is not None:
                if name not in images:
                    raise ValueError(f"{image}: image {name!r} was not built")
                image = f"{registry}/{images[name]['repository']}@{images[name]['manifest_digest']}"
            if "@sha256:" not in image:
                warnings.append(f"{image} is not pinned by digest")
            line = f"{m['indent']}{image}{m['rest']}\n"
        out.append(line)
    return "".join(out), warnings


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=Path, required=True, help="images.json of build.py")
    p.add_argument("--registry", required=True, help="where the images are pushed")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--set", action="append", default=[], metavar="OLD=NEW")
    p.add_argument("manifests", type=Path, nargs="+")
    args = p.parse_args()
    images = json.loads(args.images.read_text())
    overrides = dict(s.split("=", 1) for s in args.set)
    args.out.mkdir(parents=True, exist_ok=True)
    for manifest in args.manifests:
        text, warnings = render(manifest.read_text(), images, args.registry.rstrip("/"), overrides)
        (args.out / manifest.name).write_text(text)
        for w in warnings:
            print(f"warning: {manifest.name}: {w}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
