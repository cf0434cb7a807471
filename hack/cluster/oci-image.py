#!/usr/bin/env python3
"""Writes a single-layer OCI image archive (`oci-layout`, `index.json`, `blobs/`) that
`ctr images import` reads, with no registry and no image tool.

    oci-image.py OUT.tar NAME:TAG [--file DEST=SRC]... [--symlink DEST=TARGET]...
                 [--dir DEST]... [--entrypoint ARG]... [--cmd ARG]... [--env K=V]...

The layer is an uncompressed tar of the given files (mode from the source, owner
root, mtime 0, sorted), so the same inputs give the same digests. The image name is
carried in the `io.containerd.image.name` annotation, which `ctr` uses as is.
"""

import argparse
import hashlib
import io
import json
import os
import sys
import tarfile

OCI = "application/vnd.oci.image"


def layer_tar(files, symlinks, dirs):
    """The layer: directories (parents included), files and symlinks, sorted."""
    entries = {}

    def add_parents(path):
        parts = path.strip("/").split("/")[:-1]
        for i in range(1, len(parts) + 1):
            entries.setdefault("/".join(parts[:i]), ("dir", 0o755))

    for dest, mode in dirs:
        add_parents(dest)
        entries[dest.strip("/")] = ("dir", mode)
    for dest, src in files:
        add_parents(dest)
        entries[dest.strip("/")] = ("file", src)
    for dest, target in symlinks:
        add_parents(dest)
        entries[dest.strip("/")] = ("symlink", target)

    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(entries):
            kind, arg = entries[name]
            info = tarfile.TarInfo(name)
            info.mtime = 0
            if kind == "dir":
                info.type, info.mode = tarfile.DIRTYPE, arg
                tar.addfile(info)
            elif kind == "symlink":
                info.type, info.linkname, info.mode = tarfile.SYMTYPE, arg, 0o777
                tar.addfile(info)
            else:
                with open(arg, "rb") as f:
                    data = f.read()
                info.size, info.mode = len(data), os.stat(arg).st_mode & 0o7777
                tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def pair(text):
    key, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected DEST=VALUE, got {text!r}")
    return key, value


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out")
    p.add_argument("name", help="full image name, e.g. localhost/pause:kscope")
    p.add_argument("--file", type=pair, action="append", default=[], metavar="DEST=SRC")
    p.add_argument("--symlink", type=pair, action="append", default=[], metavar="DEST=TARGET")
    p.add_argument("--dir", action="append", default=[], metavar="DEST", help="mode 1777")
    p.add_argument("--entrypoint", action="append", default=None)
    p.add_argument("--cmd", action="append", default=None)
    p.add_argument("--env", action="append", default=["PATH=/bin:/usr/bin"])
    a = p.parse_args()

    blobs = {}

    def blob(data, media_type):
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        blobs[digest] = data
        return {"mediaType": media_type, "digest": digest, "size": len(data)}

    def dumps(obj):
        return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()

    layer = layer_tar(a.file, a.symlink, [(d, 0o1777) for d in a.dir])
    layer_desc = blob(layer, f"{OCI}.layer.v1.tar")
    config = {"Env": a.env, "WorkingDir": "/"}
    if a.entrypoint:
        config["Entrypoint"] = a.entrypoint
    if a.cmd:
        config["Cmd"] = a.cmd
    image_config = {
        "architecture": "amd64",
        "os": "linux",
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": [layer_desc["digest"]]},
    }
    manifest = {
        "schemaVersion": 2,
        "mediaType": f"{OCI}.manifest.v1+json",
        "config": blob(dumps(image_config), f"{OCI}.config.v1+json"),
        "layers": [layer_desc],
    }
    manifest_desc = blob(dumps(manifest), f"{OCI}.manifest.v1+json")
    manifest_desc["platform"] = {"architecture": "amd64", "os": "linux"}
    manifest_desc["annotations"] = {
        "io.containerd.image.name": a.name,
        "org.opencontainers.image.ref.name": a.name.rpartition(":")[2],
    }
    index = {"schemaVersion": 2, "manifests": [manifest_desc]}

    members = [("oci-layout", dumps({"imageLayoutVersion": "1.0.0"})), ("index.json", dumps(index))]
    members += [(f"blobs/sha256/{d.split(':')[1]}", data) for d, data in sorted(blobs.items())]
    tmp = a.out + ".tmp"
    with tarfile.open(tmp, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in ("blobs", "blobs/sha256"):
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 0
            tar.addfile(info)
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))
    os.replace(tmp, a.out)
    print(f"{a.out}: {a.name} {manifest_desc['digest']}", file=sys.stderr)


if __name__ == "__main__":
    main()
