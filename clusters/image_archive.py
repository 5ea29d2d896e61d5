"""Container images assembled from files, written as one ``docker save`` archive.

The kind node image preloads the images kubeadm names (kube-apiserver, etcd,
CoreDNS, pause, ...) into the node's containerd. No registry is reachable,
so each image is made here from the binaries built by the toolchain: one
uncompressed layer per tarball, an image config with the entrypoint and
environment, and ``manifest.json`` naming each image by the tag kubeadm
expects. ``ctr images import`` reads this format. Nothing is pulled.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from blackstart.clusters.toolchain import go_arch

DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Fixed times make the layers and their digests depend on content only.
EPOCH = 0
CREATED = "1970-01-01T00:00:00Z"

# Files every image made from bare binaries gets: a root user, name lookup
# through files then DNS, and a writable /tmp.
_PASSWD = b"root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/:/sbin/nologin\n"
_GROUP = b"root:x:0:\nnogroup:x:65534:\n"
_NSSWITCH = b"hosts: files dns\n"


@dataclass(frozen=True)
class ImageSpec:
    """One image: its full name (``registry.k8s.io/pause:3.10``), layers and run settings."""

    name: str
    layers: tuple[Path, ...]
    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    env: tuple[str, ...] = (DEFAULT_PATH,)
    labels: Mapping[str, str] = field(default_factory=dict)


def _add_dir(tar: tarfile.TarFile, name: str, mode: int = 0o755) -> None:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = mode
    info.mtime = EPOCH
    tar.addfile(info)


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes, mode: int = 0o644) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = mode
    info.mtime = EPOCH
    tar.addfile(info, io.BytesIO(data))


def binary_layer(out: Path, files: Mapping[str, Path], base_files: bool = True) -> Path:
    """Write a layer tarball holding ``files`` (image path -> host file), executable.

    With ``base_files`` the layer also holds ``/etc/passwd``, ``/etc/group``,
    ``/etc/nsswitch.conf`` and ``/tmp``, enough for a static Go binary.
    """
    dirs: set[str] = set()
    for target in files:
        parts = Path(target.lstrip("/")).parts[:-1]
        for depth in range(1, len(parts) + 1):
            dirs.add("/".join(parts[:depth]))
    if base_files:
        dirs.update({"etc", "tmp"})
    out.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(out, "w", format=tarfile.GNU_FORMAT) as tar:
        for directory in sorted(dirs):
            _add_dir(tar, directory, 0o1777 if directory == "tmp" else 0o755)
        if base_files:
            _add_bytes(tar, "etc/passwd", _PASSWD)
            _add_bytes(tar, "etc/group", _GROUP)
            _add_bytes(tar, "etc/nsswitch.conf", _NSSWITCH)
        for target, source in sorted(files.items()):
            info = tar.gettarinfo(str(source), arcname=target.lstrip("/"))
            info.mode = 0o755
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            info.mtime = EPOCH
            with source.open("rb") as handle:
                tar.addfile(info, handle)
    return out


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def image_config(spec: ImageSpec, diff_ids: Sequence[str]) -> dict[str, object]:
    """The image config (OCI/Docker ``config.json``) of ``spec`` with its layers' digests."""
    config: dict[str, object] = {"Env": list(spec.env), "WorkingDir": "/"}
    if spec.entrypoint:
        config["Entrypoint"] = list(spec.entrypoint)
    if spec.cmd:
        config["Cmd"] = list(spec.cmd)
    if spec.labels:
        config["Labels"] = dict(spec.labels)
    return {
        "architecture": go_arch(),
        "os": "linux",
        "created": CREATED,
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{d}" for d in diff_ids]},
        "history": [{"created": CREATED, "created_by": "blackstart toolchain node-image"}],
    }


def write_archive(out: Path, images: Iterable[ImageSpec]) -> list[str]:
    """Write every image of ``images`` into one ``docker save`` tarball; return their names.

    Layers shared by several images are stored once.
    """
    manifest: list[dict[str, object]] = []
    written: set[str] = set()
    names: list[str] = []
    out.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(out, "w", format=tarfile.GNU_FORMAT) as tar:
        for spec in images:
            digests = []
            for layer in spec.layers:
                digest = _sha256(layer)
                digests.append(digest)
                if digest not in written:
                    tar.add(str(layer), arcname=f"{digest}/layer.tar")
                    written.add(digest)
            config = json.dumps(image_config(spec, digests), sort_keys=True).encode()
            config_name = f"{hashlib.sha256(config).hexdigest()}.json"
            if config_name not in written:
                _add_bytes(tar, config_name, config)
                written.add(config_name)
            manifest.append(
                {
                    "Config": config_name,
                    "RepoTags": [spec.name],
                    "Layers": [f"{d}/layer.tar" for d in digests],
                }
            )
            names.append(spec.name)
        _add_bytes(tar, "manifest.json", json.dumps(manifest, indent=1).encode())
    return names
