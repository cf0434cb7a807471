#!/usr/bin/env python3
"""The real cluster's two images, as OCI archives for `ctr images import`
(hack/cluster.sh builds them into .cache/kube/images; images/oci.py owns the bytes,
so they are reproducible like the project's own images):

  pause.tar    the pod sandbox: hack/cluster/pause.c built with `gcc -static`
  busybox.tar  the workload: Debian's static busybox, /bin/<applet> links, /tmp

Both are tagged `kscope`; hack/cluster.sh imports them as localhost/pause:kscope and
localhost/busybox:kscope.

    images.py --pause BINARY --busybox BINARY --out DIR
"""

import argparse
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "images"))

import oci  # noqa: E402
from oci import Entry  # noqa: E402

TAG = "kscope"


def pause(binary):
    entries = [Entry("pause", 0o755, binary.read_bytes())]
    return oci.build_image([entries], {"Entrypoint": ["/pause"]}, ["pause (gcc -static)"])


def busybox(binary):
    applets = subprocess.run([binary, "--list"], check=True, capture_output=True, text=True)
    entries = [Entry("bin/busybox", 0o755, binary.read_bytes()), Entry("tmp", 0o1777)]
    entries += [Entry(f"bin/{a}", link="busybox") for a in applets.stdout.split() if a != "busybox"]
    config = {"Env": ["PATH=/bin"], "Cmd": ["sh"]}
    return oci.build_image([entries], config, ["busybox (Debian busybox-static)"])


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pause", type=Path, required=True)
    p.add_argument("--busybox", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    for name, image in (("pause", pause(a.pause)), ("busybox", busybox(a.busybox))):
        oci.write_archive(image, TAG, a.out / f"{name}.tar")
        print(f"{a.out / name}.tar: {image.digest}", file=sys.stderr)


if __name__ == "__main__":
    main()
