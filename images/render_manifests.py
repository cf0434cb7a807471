"""Render deploy/'s overlays with the project's images pinned by digest: the one
step of `make release` that knows manifests.

Each overlay of deploy/overlays/ is rendered by kubectl's kustomize through a
kustomization of its own that names the overlay and lists the images (`images:`
with `newName` and `digest`): our images by what `make images` built, pushed to
REGISTRY (the control plane's `kubelet-scope`, the filter's `kubelet-scope-filter`),
and any other by `--set OLD=NEW` (e.g. pin upstream Envoy by digest). The ConfigMap
overlay gets the release .wasm where its README step copies it. An image of ours
that was not built is an error; any image left as a tag is returned as a warning.
deploy/istio/ is copied with the WasmPlugin's `url` naming the pushed filter image
and its `sha256` that image's manifest digest (Istio's rule for oci:// urls).

    python images/render_manifests.py --images dist/images/images.json \\
        --registry localhost:5000 --wasm kubelet_scope_filter.wasm --out dist/manifests"""

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# Image names in deploy/ (without tag) -> the image of build.py they mean.
OURS = {"kubelet-scope": "control-plane", "kubelet-scope-filter": "filter"}
IMAGE_LINE = re.compile(r"^\s*(?:- )?image:\s*(?P<image>[^\s#]+)", re.M)


def split_reference(image):
    """`name[:tag][@digest]` -> (name, tag or None, digest or None); a port in the
    host is not a tag."""
    name, _, digest = image.partition("@")
    last = name.rsplit("/", 1)[-1]
    tag = None
    if ":" in last:
        name, tag = name.rsplit(":", 1)
    return name, tag, digest or None


def image_entries(images, registry, overrides):
    """kustomize `images:` for ours (pinned by digest in `registry`) and `overrides`."""
    entries = []
    for name, built in sorted(OURS.items()):
        if built not in images:
            raise ValueError(f"{name}: image {built!r} was not built")
        info = images[built]
        entries.append(
            {
                "name": name,
                "newName": f"{registry}/{info['repository']}",
                "digest": info["manifest_digest"],
            }
        )
    for old, new in sorted(overrides.items()):
        name, tag, digest = split_reference(new)
        entry = {"name": split_reference(old)[0], "newName": name}
        entry.update({"digest": digest} if digest else {"newTag": tag} if tag else {})
        entries.append(entry)
    return entries


def render(deploy, wasm, images, registry, overrides, out):
    """Every overlay of `deploy` rendered into `out`/<overlay>.yaml; [warnings]."""
    entries = image_entries(images, registry.rstrip("/"), overrides)
    out.mkdir(parents=True, exist_ok=True)
    warnings = []
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp) / "deploy"
        shutil.copytree(deploy, tree)
        shutil.copy(wasm, tree / "overlays" / "configmap" / "kubelet_scope_filter.wasm")
        for overlay in sorted(p.parent.name for p in tree.glob("overlays/*/kustomization.yaml")):
            release = Path(tmp) / f"release-{overlay}"
            release.mkdir()
            kustomization = {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "resources": [f"../deploy/overlays/{overlay}"],
                "images": entries,
            }
            (release / "kustomization.yaml").write_text(json.dumps(kustomization, indent=2))
            r = subprocess.run(["kubectl", "kustomize", release], capture_output=True, text=True)
            if r.returncode != 0:
                raise RuntimeError(f"kubectl kustomize {overlay}: {r.stderr}")
            (out / f"{overlay}.yaml").write_text(r.stdout)
            for image in sorted(set(IMAGE_LINE.findall(r.stdout))):
                if "@sha256:" not in image:
                    warnings.append(f"{overlay}: {image} is not pinned by digest")
    return warnings


WASMPLUGIN_URL = re.compile(r"^(\s*url: )oci://\S+$", re.M)
WASMPLUGIN_SHA = re.compile(r'^(\s*sha256: )"0{64}"$', re.M)


def render_istio(deploy, images, registry, version, out):
    """deploy/istio/*.yaml into `out`/istio/, the WasmPlugin pointing at our filter."""
    info = images["filter"]
    url = f"oci://{registry.rstrip('/')}/{info['repository']}:{version}"
    (out / "istio").mkdir(parents=True, exist_ok=True)
    for source in sorted((deploy / "istio").glob("*.yaml")):
        text = source.read_text()
        if "kind: WasmPlugin" in text:
            text, urls = WASMPLUGIN_URL.subn(lambda m: m[1] + url, text)
            text, shas = WASMPLUGIN_SHA.subn(
                lambda m: f'{m[1]}"{info["manifest_digest"].removeprefix("sha256:")}"', text
            )
            if (urls, shas) != (1, 1):
                raise ValueError(f"{source.name}: no url/sha256 placeholder to render")
        (out / "istio" / source.name).write_text(text)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=Path, required=True, help="images.json of build.py")
    p.add_argument("--registry", required=True, help="where the images are pushed")
    p.add_argument("--wasm", type=Path, required=True, help="the release .wasm")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--deploy", type=Path, default=REPO / "deploy")
    p.add_argument("--set", action="append", default=[], metavar="OLD=NEW")
    args = p.parse_args()
    images = json.loads(args.images.read_text())
    overrides = dict(s.split("=", 1) for s in args.set)
    for w in render(args.deploy, args.wasm, images, args.registry, overrides, args.out):
        print(f"warning: {w}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
