"""Run an image's rootfs under runc (Debian's, unpacked into .cache/; RUNC_BIN) the
way a kubelet with the manifests' securityContext would: the image's user (65532),
a read-only root, no capabilities, no new privileges, its own pid/ipc/uts/mount
namespaces. It shares the host's network namespace, so a server in it listens on
the host's loopback, where the test reaches it.

Owns the bundle (config.json next to rootfs/) and the container's life: runc's state
lives in a temporary folder (not /run/runc), and the container is killed and deleted
by its id on exit, so nothing is left behind."""

import json
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import oci

RUNC_BIN = os.environ.get(
    "RUNC_BIN", str(Path(__file__).resolve().parent.parent / ".cache/runc/usr/sbin/runc")
)


def runtime_spec(image, args, binds):
    """An OCI runtime spec for `args` run as the image's User, with `binds` (host
    path -> container path) mounted read-only."""
    user = json.loads(image.config.data)["config"].get("User", "0:0")
    uid, _, gid = user.partition(":")
    mounts = [
        {"destination": "/proc", "type": "proc", "source": "proc"},
        {
            "destination": "/dev",
            "type": "tmpfs",
            "source": "tmpfs",
            "options": ["nosuid", "strictatime", "mode=755", "size=65536k"],
        },
    ]
    for host, dest in binds.items():
        mounts.append({"destination": dest, "type": "bind", "source": str(host), "options": ["rbind", "ro"]})  # fmt: skip
    no_caps = {"bounding": [], "effective": [], "permitted": [], "ambient": []}
    return {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": False,
            "user": {"uid": int(uid), "gid": int(gid or uid)},
            "args": args,
            "env": ["PATH=/usr/local/bin:/usr/bin:/bin"],
            "cwd": "/",
            "capabilities": no_caps,
            "noNewPrivileges": True,
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 4096, "soft": 4096}],
        },
        "root": {"path": "rootfs", "readonly": True},
        "hostname": "kubelet-scope",
        "mounts": mounts,
        "linux": {
            "namespaces": [{"type": t} for t in ("pid", "ipc", "uts", "mount")],
            "maskedPaths": ["/proc/kcore", "/proc/keys", "/proc/timer_list", "/proc/sched_debug"],
            "readonlyPaths": ["/proc/sys", "/proc/sysrq-trigger", "/proc/irq", "/proc/bus"],
        },
    }


class RuncContainer:
    def __init__(self, image, args, binds=None):
        self.dir = Path(tempfile.mkdtemp(prefix="kubelet-scope-runc-"))
        self.id = f"kubelet-scope-{uuid.uuid4().hex[:12]}"
        oci.unpack(image, self.dir / "rootfs")
        spec = runtime_spec(image, args, binds or {})
        (self.dir / "config.json").write_text(json.dumps(spec, indent=2))
        self.proc = None

    def runc(self, *args, **kw):
        return subprocess.run([RUNC_BIN, "--root", str(self.dir / "state"), *args], **kw)

    def __enter__(self):
        self.log = open(self.dir / "container.log", "wb")
        self.proc = subprocess.Popen(
            [RUNC_BIN, "--root", str(self.dir / "state"), "run", "--bundle", str(self.dir), self.id],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        return self

    def run_to_end(self, timeout=60):
        """Wait for the container's process to exit; (exit code, output)."""
        code = self.proc.wait(timeout)
        return code, self.read_log()

    def pid(self):
        """The container's first process as the host sees it (None if not running)."""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            r = self.runc("state", self.id, capture_output=True, text=True)
            if r.returncode == 0:
                state = json.loads(r.stdout)
                if state["status"] == "running":
                    return state["pid"]
            if self.proc.poll() is not None:
                return None
            time.sleep(0.1)
        return None

    def read_log(self):
        return (self.dir / "container.log").read_text(errors="replace")

    def __exit__(self, *exc):
        if self.proc is not None and self.proc.poll() is None:
            self.runc("kill", self.id, "KILL", capture_output=True)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.runc("delete", "--force", self.id, capture_output=True)
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)
