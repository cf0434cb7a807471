"""A small, reproducible OCI image writer and reader (no daemon, no registry).

Owns the byte format of the project's images: layer tars, image config, manifest,
and the OCI layout packed as an archive (`.tar`, what `skopeo copy oci-archive:`
and `ctr images import` read). The same inputs give the same bytes, so the same
digests: tar entries sorted, owned by 0:0 with no user or group names, every mtime
SOURCE_DATE_EPOCH (default 0), gzip without a name or time, JSON with sorted keys.
(The gzip bytes are zlib's: the same zlib gives the same digest.)

It does not know which images the project ships (build.py) nor how registries
serve them (registry_client.py)."""

import datetime
import gzip
import hashlib
import io
import json
import os
import tarfile
from dataclasses import dataclass, field

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
REF_NAME = "org.opencontainers.image.ref.name"


def epoch():
    return int(os.environ.get("SOURCE_DATE_EPOCH", "0"))


def sha256(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def canonical_json(obj):
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


@dataclass(frozen=True)
class Entry:
    """One file, directory or symlink of a layer; `path` is relative to the root."""

    path: str
    mode: int = 0o755
    data: bytes | None = None  # None: a directory (or a symlink, with `link`)
    link: str | None = None


def with_parents(entries):
    """The entries plus a directory entry for every parent they need, sorted."""
    by_path = {e.path: e for e in entries}
    for e in entries:
        parts = e.path.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            by_path.setdefault("/".join(parts[:i]), Entry("/".join(parts[:i])))
    return [by_path[p] for p in sorted(by_path)]


def layer_tar(entries):
    """An uncompressed layer: the entries (with their parents) in path order."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for e in with_parents(entries):
            info = tarfile.TarInfo(e.path)
            info.mtime, info.uid, info.gid, info.uname, info.gname = epoch(), 0, 0, "", ""
            info.mode = e.mode
            if e.link is not None:
                info.type, info.linkname, info.mode = tarfile.SYMTYPE, e.link, 0o777
                tar.addfile(info)
            elif e.data is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(e.data)
                tar.addfile(info, io.BytesIO(e.data))
    return buf.getvalue()


@dataclass
class Blob:
    media_type: str
    data: bytes
    annotations: dict = field(default_factory=dict)

    @property
    def digest(self):
        return sha256(self.data)

    def descriptor(self):
        d = {"mediaType": self.media_type, "digest": self.digest, "size": len(self.data)}
        if self.annotations:
            d["annotations"] = self.annotations
        return d


@dataclass
class Image:
    manifest: Blob
    config: Blob
    layers: list

    @property
    def digest(self):
        return self.manifest.digest

    def blobs(self):
        return [self.manifest, self.config, *self.layers]


def build_image(layers, config, history):
    """An image from layer entry lists; `config` is the OCI config's `config` part
    (User, Entrypoint, Env, Labels...), `history` one line per layer."""
    tars = [layer_tar(entries) for entries in layers]
    gz = [Blob(OCI_LAYER_GZIP, gzip.compress(t, compresslevel=6, mtime=0)) for t in tars]
    created = "1970-01-01T00:00:00Z" if epoch() == 0 else _rfc3339(epoch())
    cfg = {
        "architecture": "amd64",
        "os": "linux",
        "created": created,
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": [sha256(t) for t in tars]},
        "history": [{"created": created, "created_by": h} for h in history],
    }
    config_blob = Blob(OCI_CONFIG, canonical_json(cfg))
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config_blob.descriptor(),
        "layers": [b.descriptor() for b in gz],
    }
    return Image(Blob(OCI_MANIFEST, canonical_json(manifest)), config_blob, gz)


def _rfc3339(t):
    return datetime.datetime.fromtimestamp(t, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def write_archive(image, tag, path):
    """The image as an OCI layout packed in a tar (`oci-archive:PATH:TAG`)."""
    index = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [{**image.manifest.descriptor(), "annotations": {REF_NAME: tag}}],
    }
    files = [
        Entry("oci-layout", 0o644, canonical_json({"imageLayoutVersion": "1.0.0"})),
        Entry("index.json", 0o644, canonical_json(index)),
    ]
    files += [Entry(f"blobs/sha256/{b.digest[7:]}", 0o644, b.data) for b in image.blobs()]
    tmp = f"{path}.tmp"
    with open(tmp, "wb") as f:
        f.write(layer_tar(files))
    os.replace(tmp, path)


def read_archive(path):
    """An OCI archive back: {tag: Image}, every blob checked against its digest."""
    with tarfile.open(path) as tar:
        files = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}

    def blob(desc):
        data = files[f"blobs/sha256/{desc['digest'][7:]}"]
        assert sha256(data) == desc["digest"] and len(data) == desc["size"], desc
        return Blob(desc["mediaType"], data, desc.get("annotations", {}))

    images = {}
    for desc in json.loads(files["index.json"])["manifests"]:
        m = blob(desc)
        manifest = json.loads(m.data)
        layers = [blob(d) for d in manifest["layers"]]
        images[desc["annotations"][REF_NAME]] = Image(m, blob(manifest["config"]), layers)
    return images


def unpack(image, rootfs):
    """Extract the layers in order into `rootfs` (a container's root for runc). The
    project's images have no whiteouts; one here would be a bug, so it fails."""
    for layer in image.layers:
        with tarfile.open(fileobj=io.BytesIO(gzip.decompress(layer.data))) as tar:
            members = tar.getmembers()
            assert not any(os.path.basename(m.name).startswith(".wh.") for m in members)
            tar.extractall(rootfs, members, filter="fully_trusted")
