"""A throw-away registry on loopback and skopeo to push to it, for the image tests
(and by hand: `python images/local_registry.py` serves one until Ctrl-C).

The registry is Debian's `docker-registry` (the CNCF distribution server), storage
in a temporary folder, on 127.0.0.1 at a free port, plain HTTP. skopeo runs with a
policy file of its own (accept anything: these are our images on loopback) and its
temporary files in the same folder. Both binaries come unpacked from Debian
packages into .cache/ (the Makefile's `image-tools`); their paths are given by
REGISTRY_BIN and SKOPEO_BIN (with SKOPEO_LD_LIBRARY_PATH for its libgpgme).
Everything started here is stopped by its PID; the folder is removed."""

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CACHE = REPO / ".cache"
REGISTRY_BIN = os.environ.get(
    "REGISTRY_BIN", str(CACHE / "docker-registry/usr/bin/docker-registry")
)
SKOPEO_BIN = os.environ.get("SKOPEO_BIN", str(CACHE / "skopeo/usr/bin/skopeo"))
SKOPEO_LIBS = os.environ.get(
    "SKOPEO_LD_LIBRARY_PATH", str(CACHE / "skopeo/usr/lib/x86_64-linux-gnu")
)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalRegistry:
    def __init__(self):
        self.dir = Path(tempfile.mkdtemp(prefix="kubelet-scope-registry-"))
        self.host = f"127.0.0.1:{free_port()}"
        self.proc = None

    def __enter__(self):
        config = self.dir / "config.yml"
        config.write_text(
            "version: 0.1\n"
            "log: {level: warn, accesslog: {disabled: true}}\n"
            f"storage: {{filesystem: {{rootdirectory: {self.dir / 'storage'}}}}}\n"
            f"http: {{addr: {self.host}}}\n"
        )
        (self.dir / "policy.json").write_text('{"default": [{"type": "insecureAcceptAnything"}]}')
        (self.dir / "tmp").mkdir()
        self.log = open(self.dir / "registry.log", "wb")
        self.proc = subprocess.Popen(
            [REGISTRY_BIN, "serve", str(config)], stdout=self.log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"http://{self.host}/v2/", timeout=2) as r:
                    if r.status == 200:
                        return self
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.__exit__()
                raise RuntimeError(f"registry did not start: {self.read_log()}")
            time.sleep(0.1)

    def read_log(self):
        return (self.dir / "registry.log").read_text(errors="replace")

    def __exit__(self, *exc):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def skopeo(self, *args):
        """Run skopeo against this registry; returns its stdout, raises with stderr."""
        env = {**os.environ, "LD_LIBRARY_PATH": SKOPEO_LIBS, "TMPDIR": str(self.dir / "tmp")}
        # As root, skopeo keeps a blob-info cache in /var/lib/containers/cache and no
        # flag moves it: it runs in a mount namespace of its own where /var/lib is a
        # folder of the registry's, so nothing is left on the host.
        varlib = self.dir / "var-lib"
        varlib.mkdir(exist_ok=True)
        cmd = ["unshare", "--mount", "sh", "-c", 'mount --bind "$0" /var/lib && exec "$@"']
        cmd += [str(varlib), SKOPEO_BIN, "--policy", str(self.dir / "policy.json"), *args]
        r = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"skopeo {' '.join(args)}: {r.stderr}")
        return r.stdout

    def push(self, archive, tag, repository):
        """Copy an OCI archive's image to REPOSITORY:TAG unchanged; returns the digest
        skopeo reports for what it pushed."""
        digestfile = self.dir / "tmp" / "digest"
        self.skopeo(
            "copy", "--quiet", "--preserve-digests", "--dest-tls-verify=false",
            "--digestfile", str(digestfile),
            f"oci-archive:{archive}:{tag}", f"docker://{self.host}/{repository}:{tag}",
        )  # fmt: skip
        return digestfile.read_text().strip()


def main():
    with LocalRegistry() as registry:
        print(f"registry on {registry.host} (storage {registry.dir}); Ctrl-C stops it", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            registry.proc.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
