"""``blackstart rescue image``: the controller and agent images, built offline.

No registry is reachable here and none is needed. Each image is two layers:

1. a Debian root filesystem with Python (``mmdebstrap`` from the machine's apt
   sources, the same step the kind node image uses; cached by package list);
2. blackstart and its Python dependencies, installed by the host's ``pip``
   with ``--target`` into ``/opt/blackstart/site`` from this source tree, and a
   ``/usr/local/bin/blackstart`` command (the entrypoint): the
   agent's image without extras (no Chaos Toolkit, no kopf, no report stack),
   the controller's with ``[rescue]``.

The host's Python must be the minor version Debian's ``python3`` is (3.11 on
bookworm), since compiled wheels are chosen by the Python that installs them;
the build checks this. Both images are written as one ``docker save`` archive
and loaded into the local engine (``docker load``); ``--kind-cluster`` also
loads them into a kind cluster's nodes (``kind load docker-image``). An image
whose inputs (the source files, pyproject, the Debian package list) did not
change is not rebuilt: its inputs digest is a label on the image.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from blackstart import __version__

__all__ = [
    "IMAGES",
    "RescueImage",
    "RescueImageError",
    "build_images",
    "image_tag",
    "inputs_digest",
    "source_tree",
    "sources_digest",
]

Progress = Callable[[str], None]

REPOSITORY_PREFIX = "blackstart/rescue-"
SITE = "/opt/blackstart/site"
INPUTS_LABEL = "dev.blackstart.rescue-image.inputs"
DEBIAN_SUITE = "bookworm"
DEBIAN_PYTHON = (3, 11)  # bookworm's python3
#: the Debian packages of the base layer: Python and the CA certificates the
#: Kubernetes client verifies the API server with (the cluster CA is mounted)
BASE_PACKAGES = ("python3", "ca-certificates")
#: image -> the extras its blackstart is installed with
IMAGES: dict[str, tuple[str, ...]] = {"agent": (), "controller": ("rescue",)}
ENV = (
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    f"PYTHONPATH={SITE}",
    "PYTHONDONTWRITEBYTECODE=1",
    "PYTHONUNBUFFERED=1",
)
#: the `blackstart` command the Deployment and DaemonSet run (pip's own console script
#: would name the host's Python)
LAUNCHER = "/usr/local/bin/blackstart"
LAUNCHER_TEXT = b"#!/usr/bin/python3\nfrom blackstart.cli import main\n\nmain()\n"
ENTRYPOINT = (LAUNCHER,)
DEFAULT_CMD = {
    "agent": ("rescue", "agent", "--help"),
    "controller": ("rescue", "controller", "--metrics-host=0.0.0.0", "--metrics-port=9470"),
}
# what a source tree holds that the package ships: code and its data files
SOURCE_SUFFIXES = frozenset({".py", ".yaml", ".toml", ".json", ".typed", ".j2", ".html", ".css"})


class RescueImageError(RuntimeError):
    """An image could not be built; the message names the step and what to do."""


@dataclass(frozen=True)
class RescueImage:
    """One built (or cached) image."""

    name: str
    tag: str
    cached: bool
    size_bytes: int


def image_tag(name: str, version: str = __version__) -> str:
    """``blackstart/rescue-agent:0.1.0``."""
    return f"{REPOSITORY_PREFIX}{name}:{version}"


def source_tree() -> Path:
    """The source checkout blackstart runs from (the folder holding ``pyproject.toml``)."""
    package = Path(__file__).resolve().parent.parent  # rescue/ is reached through a symlink
    for candidate in (package, *package.parents):
        if (candidate / "pyproject.toml").is_file() and (candidate / "blackstart").is_dir():
            return candidate
    raise RescueImageError(
        "the images are built from a source checkout of blackstart (a folder with "
        f"pyproject.toml and blackstart/); none holds {Path(__file__).resolve()}"
    )


def _source_files(tree: Path) -> Iterator[tuple[str, Path]]:
    """Every file the package is built from, as (path in the tree, file), in a stable order."""
    yield "pyproject.toml", tree / "pyproject.toml"
    yield "README.md", tree / "README.md"
    for dirpath, dirnames, filenames in os.walk(tree / "blackstart", followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        for name in sorted(filenames):
            path = Path(dirpath) / name
            if path.suffix in SOURCE_SUFFIXES or path.parent.name == "templates":
                yield str(path.relative_to(tree)), path


def sources_digest(tree: Path) -> str:
    """The digest of every source file the package is built from (read once per build)."""
    digest = hashlib.sha256()
    for name, path in _source_files(tree):
        digest.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def inputs_digest(sources: str, extras: tuple[str, ...]) -> str:
    """What an image is made of: the sources' digest, its extras and the base packages."""
    text = f"{DEBIAN_SUITE} {sorted(BASE_PACKAGES)} {sorted(extras)}\n{sources}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _run(argv: list[str], what: str, timeout: float = 900.0) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except FileNotFoundError as err:
        raise RescueImageError(f"{what}: {argv[0]} not found") from err
    except subprocess.TimeoutExpired as err:
        raise RescueImageError(f"{what}: did not finish in {timeout:.0f} s") from err
    if done.returncode != 0:
        output = (done.stderr.strip() or done.stdout.strip())[-3000:]
        raise RescueImageError(f"{what}: `{' '.join(argv)}` exited {done.returncode}:\n{output}")
    return done.stdout


def _label(docker: str, tag: str) -> str | None:
    done = subprocess.run(
        [docker, "image", "inspect", "--format", f'{{{{index .Config.Labels "{INPUTS_LABEL}"}}}}',
         tag],
        capture_output=True,
        text=True,
        check=False,
    )  # fmt: skip
    return done.stdout.strip() if done.returncode == 0 else None


def _size(docker: str, tag: str) -> int:
    return int(_run([docker, "image", "inspect", "--format", "{{.Size}}", tag], "size") or 0)


def _site_layer(tree: Path, extras: tuple[str, ...], out: Path, work: Path) -> Path:
    """pip-install blackstart (with ``extras``) into a folder and write it as a layer tarball."""
    site = work / "site"
    requirement = f"{tree}[{','.join(extras)}]" if extras else str(tree)
    _run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-compile",
         "--disable-pip-version-check", "--target", str(site), requirement],
        f"installing {requirement} with pip",
    )  # fmt: skip
    # the console scripts pip wrote point at the host's Python; the image runs `python3 -m`
    shutil.rmtree(site / "bin", ignore_errors=True)

    def owned_by_root(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
        if "__pycache__" in info.name.split("/"):
            return None
        info.uid = info.gid = 0
        info.uname = info.gname = "root"
        info.mtime = 0
        info.mode = (info.mode | 0o444) & ~0o022 | (0o111 if info.isdir() else 0)
        return info

    launcher = work / "blackstart"
    launcher.write_bytes(LAUNCHER_TEXT)
    launcher.chmod(0o755)
    with tarfile.open(out, "w", format=tarfile.GNU_FORMAT) as tar:
        tar.add(str(site), arcname=SITE.lstrip("/"), filter=owned_by_root)
        tar.add(str(launcher), arcname=LAUNCHER.lstrip("/"), filter=owned_by_root)
    return out


def build_images(
    cache: Path,
    progress: Progress = print,
    force: bool = False,
    kind_cluster: str | None = None,
) -> list[RescueImage]:
    """Build (or find current) the agent and controller images; see the module doc."""
    from blackstart.clusters.engine import docker_binary, ensure_engine
    from blackstart.clusters.image_archive import ImageSpec, write_archive
    from blackstart.clusters.node_rootfs import NodeImageError, debian_rootfs

    if sys.version_info[:2] != DEBIAN_PYTHON:
        have = ".".join(map(str, sys.version_info[:2]))
        want = ".".join(map(str, DEBIAN_PYTHON))
        raise RescueImageError(
            f"the images carry Debian {DEBIAN_SUITE}'s Python {want} and their compiled "
            f"wheels are chosen by the Python that installs them: run this with Python {want} "
            f"(this is {have})"
        )
    tree = source_tree()
    ensure_engine(cache, progress)
    docker = docker_binary()
    sources = sources_digest(tree)
    wanted = {name: inputs_digest(sources, extras) for name, extras in IMAGES.items()}
    current = {n: (not force and _label(docker, image_tag(n)) == d) for n, d in wanted.items()}
    if not all(current.values()):
        if os.geteuid() != 0:
            raise RescueImageError(
                "the base layer is made by mmdebstrap, which needs root: run "
                "`sudo blackstart rescue image`"
            )
        work = cache / "rescue-image"
        work.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        try:
            base = debian_rootfs(work, DEBIAN_SUITE, BASE_PACKAGES, progress, "rescue-python")
        except NodeImageError as err:
            raise RescueImageError(str(err)) from err
        with tempfile.TemporaryDirectory(prefix="build-", dir=work) as tmp:
            build = Path(tmp)
            specs = []
            for name, extras in IMAGES.items():
                if current[name]:
                    continue
                progress(f"[rescue-image] installing blackstart{list(extras) or ''} for {name}")
                folder = build / name
                folder.mkdir()
                layer = _site_layer(tree, extras, folder / "layer.tar", folder)
                specs.append(
                    ImageSpec(
                        image_tag(name),
                        (base, layer),
                        entrypoint=ENTRYPOINT,
                        cmd=DEFAULT_CMD[name],
                        env=ENV,
                        labels={INPUTS_LABEL: wanted[name]},
                    )
                )
            archive = build / "images.tar"
            write_archive(archive, specs)
            _run([docker, "load", "-i", str(archive)], "loading the images into Docker")
        # the images these replaced lost their tag: remove them, not only their name
        _run(
            [docker, "image", "prune", "--force", "--filter", f"label={INPUTS_LABEL}"],
            "removing the images these replaced",
        )
        progress(f"[rescue-image] built in {time.monotonic() - started:.0f} s")
    images = [
        RescueImage(name, image_tag(name), current[name], _size(docker, image_tag(name)))
        for name in IMAGES
    ]
    if kind_cluster:
        tags = [i.tag for i in images]
        progress(f"[rescue-image] kind load docker-image {' '.join(tags)} --name {kind_cluster}")
        _run(
            [_kind_binary(cache), "load", "docker-image", *tags, "--name", kind_cluster],
            f"loading the images into kind cluster {kind_cluster}",
        )
    return images


def _kind_binary(cache: Path) -> str:
    from blackstart.clusters.toolchain import resolve

    toolchain, _missing = resolve(cache)
    if "kind" not in toolchain.paths:
        raise RescueImageError("no kind binary: run `blackstart toolchain install`")
    return str(toolchain.paths["kind"])
