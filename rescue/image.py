"""``blackstart rescue image``: the controller and agent images, built offline.

No registry is reachable here and none is needed. The images share their layers
but the last:

1. a Debian root filesystem with Python (``mmdebstrap`` from the machine's apt
   sources, the same step the kind node image uses; cached by package list);
2. blackstart without extras and its Python dependencies, installed by the host's
   ``pip`` with ``--target`` into ``/opt/blackstart/site`` from this source tree, and
   a ``/usr/local/bin/blackstart`` command (the entrypoint): all of the agent's
   image (no Chaos Toolkit, no kopf, no report stack);
3. the controller's alone: what ``[rescue]`` adds to that site (kopf and its
   dependencies), installed with the shared site's versions pinned.

Loading both into a cluster moves the large layers once.

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
import re
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
#: kind's names of nodes that are no workers: control planes and the load balancer before them
KIND_NOT_WORKER = re.compile(r"-(control-plane\d*|external-load-balancer)$")
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


def _pip_install(tree: Path, extras: tuple[str, ...], site: Path, constraints: Path | None) -> None:
    """pip-install blackstart (with ``extras``) into ``site``; ``constraints`` pins versions."""
    requirement = f"{tree}[{','.join(extras)}]" if extras else str(tree)
    pinned = ["--constraint", str(constraints)] if constraints else []
    _run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-compile",
         "--disable-pip-version-check", "--target", str(site), *pinned, requirement],
        f"installing {requirement} with pip",
    )  # fmt: skip
    # the console scripts pip wrote point at the host's Python; the image runs the launcher
    shutil.rmtree(site / "bin", ignore_errors=True)


def _pins(site: Path) -> str:
    """``name==version`` of every distribution in ``site`` but blackstart (a constraints file)."""
    from importlib import metadata

    pins = {
        f"{d.metadata['Name']}=={d.version}"
        for d in metadata.distributions(path=[str(site)])
        if d.metadata["Name"].lower() != "blackstart"
    }
    return "".join(f"{pin}\n" for pin in sorted(pins))


def _owned_by_root(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
    if "__pycache__" in info.name.split("/"):
        return None
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    info.mtime = 0
    info.mode = (info.mode | 0o444) & ~0o022 | (0o111 if info.isdir() else 0)
    return info


def _files(root: Path) -> dict[str, Path]:
    """Every file and folder under ``root`` (no bytecode caches), by path relative to it."""
    return {
        str(path.relative_to(root)): path
        for path in sorted(root.rglob("*"))
        if "__pycache__" not in path.parts
    }


def _site_layer(site: Path, out: Path, work: Path) -> Path:
    """The layer of the shared site: ``site`` as /opt/blackstart/site, and the launcher."""
    launcher = work / "blackstart"
    launcher.write_bytes(LAUNCHER_TEXT)
    launcher.chmod(0o755)
    with tarfile.open(out, "w", format=tarfile.GNU_FORMAT) as tar:
        tar.add(str(site), arcname=SITE.lstrip("/"), filter=_owned_by_root)
        tar.add(str(launcher), arcname=LAUNCHER.lstrip("/"), filter=_owned_by_root)
    return out


def _extra_layer(shared: Path, fuller: Path, out: Path) -> int:
    """The layer of what ``fuller`` (a site with extras) adds to ``shared``; its file count.

    The two images share every layer but this one, so loading both moves the large
    site once. Raises when ``fuller`` lacks a file of ``shared``: a layer can add and
    replace files, not take them away.
    """
    base, more = _files(shared), _files(fuller)
    missing = sorted(name for name, path in base.items() if name not in more and path.is_file())
    if missing:
        raise RescueImageError(
            "the site with extras lacks files of the shared one (pip resolved other versions "
            f"despite the pins): {', '.join(missing[:5])}"
        )
    added = [
        name
        for name, path in more.items()
        if name not in base or (path.is_file() and path.read_bytes() != base[name].read_bytes())
    ]
    with tarfile.open(out, "w", format=tarfile.GNU_FORMAT) as tar:
        for name in added:
            tar.add(
                str(more[name]),
                arcname=f"{SITE.lstrip('/')}/{name}",
                recursive=False,
                filter=_owned_by_root,
            )
    return len(added)


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
            layers = _layers(tree, build, progress)
            specs = [
                ImageSpec(
                    image_tag(name),
                    (base, *layers[name]),
                    entrypoint=ENTRYPOINT,
                    cmd=DEFAULT_CMD[name],
                    env=ENV,
                    labels={INPUTS_LABEL: wanted[name]},
                )
                for name in IMAGES
                if not current[name]
            ]
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
        kind = _kind_binary(cache)
        tags = [i.tag for i in images]
        nodes = _kind_load_nodes(kind, kind_cluster)
        progress(
            f"[rescue-image] kind load docker-image {' '.join(tags)} --name {kind_cluster} "
            f"--nodes {','.join(nodes)}"
        )
        started = time.monotonic()
        _run(
            [
                kind,
                "load",
                "docker-image",
                *tags,
                "--name",
                kind_cluster,
                "--nodes",
                ",".join(nodes),
            ],
            f"loading the images into kind cluster {kind_cluster}",
        )
        progress(
            f"[rescue-image] loaded into {len(nodes)} nodes in {time.monotonic() - started:.0f} s"
        )
    return images


def kind_load_nodes(nodes: list[str]) -> list[str]:
    """Of a kind cluster's ``nodes``, those the pods can run on: its workers (kind taints
    the control plane when there are any, and neither the controller nor the agent
    tolerates that), or else its one node."""
    workers = [n for n in nodes if not KIND_NOT_WORKER.search(n)]
    return sorted(workers or [n for n in nodes if not n.endswith("-external-load-balancer")])


def _kind_load_nodes(kind: str, cluster: str) -> list[str]:
    nodes = kind_load_nodes(_run([kind, "get", "nodes", "--name", cluster], "kind nodes").split())
    if not nodes:
        raise RescueImageError(f"kind cluster {cluster!r} has no nodes (`kind get clusters`)")
    return nodes


def _layers(tree: Path, build: Path, progress: Progress) -> dict[str, tuple[Path, ...]]:
    """The layers above the Debian base of each image: the agent's site (blackstart with
    no extras), shared by the controller, whose own layer adds only what ``[rescue]`` adds
    (pip pinned to the shared site's versions)."""
    shared = build / "site"
    progress("[rescue-image] installing blackstart (no extras) for the agent and controller")
    _pip_install(tree, (), shared, None)
    site_layer = _site_layer(shared, build / "site.tar", build)
    layers: dict[str, tuple[Path, ...]] = {}
    for name, extras in IMAGES.items():
        if not extras:
            layers[name] = (site_layer,)
            continue
        progress(f"[rescue-image] adding blackstart{list(extras)} for the {name}")
        pins = build / "pins.txt"
        pins.write_text(_pins(shared))
        fuller = build / f"site-{name}"
        _pip_install(tree, extras, fuller, pins)
        extra = build / f"{name}.tar"
        count = _extra_layer(shared, fuller, extra)
        size = extra.stat().st_size >> 10
        progress(f"[rescue-image] the {name}'s own layer: {count} files, {size} KiB")
        layers[name] = (site_layer, extra)
    return layers


def _kind_binary(cache: Path) -> str:
    from blackstart.clusters.toolchain import resolve

    toolchain, _missing = resolve(cache)
    if "kind" not in toolchain.paths:
        raise RescueImageError("no kind binary: run `blackstart toolchain install`")
    return str(toolchain.paths["kind"])
