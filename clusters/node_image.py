"""``blackstart toolchain node-image``: the kind node image, built offline.

``blackstart/kind-node:<kubernetes version>`` holds what kind expects of a
node image (systemd as init, containerd, runc, CNI plugins, kubelet, kubeadm,
kubectl, ``/kind/version`` and ``/kind/manifests``) and, preloaded in its
containerd, every image kubeadm names for the pinned Kubernetes version,
under exactly the names ``kubeadm config images list`` prints. Nothing is
pulled from a registry, at build time or when a cluster starts.

The image carries a label with a digest of everything it is made from (the
pins in ``toolchain.toml``, the node files, this recipe's format); it is
rebuilt only when that digest changes.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

from blackstart.clusters.engine import docker_binary, ensure_engine
from blackstart.clusters.image_archive import ImageSpec, binary_layer, write_archive
from blackstart.clusters.node_rootfs import (
    NodeImageError,
    debian_rootfs,
    install_node_files,
    node_files,
    preload_images,
    run,
    unpack,
)
from blackstart.clusters.toolchain import (
    NODE_IMAGE_GROUP,
    Component,
    Toolchain,
    install,
    load_pins,
    load_toml,
)

Progress = Callable[[str], None]

INPUTS_LABEL = "dev.blackstart.node-image.inputs"
# A Debian shell image preloaded beside kubeadm's (the kube-proxy base, so it
# costs no space): for probes and tests that need bash, getent and iptables.
TOOLBOX_IMAGE = "docker.io/blackstart/toolbox:bookworm"
# Bump when the recipe changes in a way the inputs do not show.
RECIPE_FORMAT = "2"
ENTRYPOINT = '["/usr/local/bin/entrypoint", "/sbin/init"]'
# systemd stops cleanly on SIGRTMIN+3 (docker stop / restart of a node).
STOP_SIGNAL = "SIGRTMIN+3"

__all__ = [
    "TOOLBOX_IMAGE",
    "NodeImageError",
    "NodeImageResult",
    "NodeImageSettings",
    "build_node_image",
    "check_image_names",
    "inputs_digest",
    "load_settings",
    "node_image_tag",
]


@dataclass(frozen=True)
class NodeImageSettings:
    """The ``[node-image]`` table of ``toolchain.toml``."""

    repository: str
    debian_suite: str
    node_packages: tuple[str, ...]
    proxy_packages: tuple[str, ...]
    pause_source: str
    pause_version: str


def load_settings(text: str | None = None) -> NodeImageSettings:
    table = load_toml(text).get("node-image")
    if not isinstance(table, dict):
        raise NodeImageError("toolchain.toml has no [node-image] table")
    try:
        return NodeImageSettings(
            repository=str(table["repository"]),
            debian_suite=str(table["debian_suite"]),
            node_packages=tuple(str(p) for p in table["node_packages"]),  # type: ignore[attr-defined]
            proxy_packages=tuple(str(p) for p in table["proxy_packages"]),  # type: ignore[attr-defined]
            pause_source=str(table["pause_source"]),
            pause_version=str(table["pause_version"]),
        )
    except KeyError as err:
        raise NodeImageError(f"toolchain.toml: [node-image] lacks {err.args[0]!r}") from err


def node_image_tag(settings: NodeImageSettings | None = None, version: str | None = None) -> str:
    """``blackstart/kind-node:v1.33.13``: the node image of the pinned Kubernetes version."""
    settings = settings or load_settings()
    version = version or load_pins()["kubernetes"].version
    return f"{settings.repository}:{version}"


def inputs_digest(
    settings: NodeImageSettings, pins: Mapping[str, Component], files: Mapping[str, str]
) -> str:
    """A digest of everything the image is made from: rebuilt when it changes."""
    document = {
        "format": RECIPE_FORMAT,
        "settings": asdict(settings),
        "pins": {name: asdict(comp) for name, comp in sorted(pins.items())},
        "files": dict(sorted(files.items())),
    }
    return hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()[:24]


def check_image_names(
    names: list[str], etcd_version: str, coredns_version: str, pause_version: str
) -> dict[str, str]:
    """Map each image kubeadm names to the component that makes it; fail on a version mismatch.

    ``names`` is the output of ``kubeadm config images list``. The etcd tag
    must be ``<etcd pin without v>-<n>``, CoreDNS's the CoreDNS pin, pause's
    the pause pin: anything else means toolchain.toml and kubeadm disagree.
    """
    mapping: dict[str, str] = {}
    for name in names:
        repository, _, tag = name.rpartition(":")
        component = repository.rsplit("/", 1)[-1]
        wanted = {
            "etcd": etcd_version.removeprefix("v") + "-",
            "coredns": coredns_version,
            "pause": pause_version,
        }.get(component)
        if wanted is not None and not (
            tag.startswith(wanted) if component == "etcd" else tag == wanted
        ):
            raise NodeImageError(
                f"kubeadm names {name} but toolchain.toml pins {component} {wanted.rstrip('-')}: "
                f"change the {component} pin of the node image in clusters/toolchain.toml"
            )
        mapping[name] = component
    expected = {"kube-apiserver", "kube-controller-manager", "kube-scheduler", "kube-proxy"}
    expected |= {"etcd", "coredns", "pause"}
    if set(mapping.values()) != expected:
        raise NodeImageError(
            f"kubeadm names images {sorted(names)}; blackstart builds {sorted(expected)}"
        )
    return mapping


@dataclass(frozen=True)
class NodeImageResult:
    tag: str
    cached: bool
    seconds: float
    size_bytes: int
    images: tuple[str, ...] = ()


def _image_label(docker: str, tag: str) -> str | None:
    done = subprocess.run(
        [
            docker,
            "image",
            "inspect",
            "--format",
            f'{{{{index .Config.Labels "{INPUTS_LABEL}"}}}}',
            tag,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    return done.stdout.strip() if done.returncode == 0 else None


def _image_size(docker: str, tag: str) -> int:
    out = run([docker, "image", "inspect", "--format", "{{.Size}}", tag], what="reading size")
    return int(out.strip() or 0)


def build_pause(source: Path, out: Path, version: str) -> Path:
    """Compile Kubernetes' pause.c statically with gcc (what registry.k8s.io/pause runs)."""
    if shutil.which("gcc") is None:
        raise NodeImageError("gcc not found: apt-get install gcc libc6-dev (for the pause image)")
    out.parent.mkdir(parents=True, exist_ok=True)
    run(
        ["gcc", "-Os", "-static", "-Wall", f'-DVERSION="{version}"', "-o", str(out), str(source)],
        what=f"compiling {source}",
    )
    run(["strip", str(out)], what="stripping pause")
    return out


def _module_dir(cache: Path, comp: Component) -> Path:
    """The Kubernetes module's source folder, as the Go module cache holds it."""
    done = subprocess.run(
        ["go", "mod", "download", "-json", f"{comp.module}@{comp.version}"],
        cwd=cache,
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "GOFLAGS": "-mod=mod"},
    )
    try:
        return Path(json.loads(done.stdout)["Dir"])
    except (ValueError, KeyError) as err:
        raise NodeImageError(
            f"cannot locate {comp.module}@{comp.version} in the Go module cache: {done.stderr}"
        ) from err


def build_node_image(
    cache: Path, progress: Progress = print, force: bool = False
) -> NodeImageResult:
    """Build (or find cached) ``blackstart/kind-node:<version>``; see the module doc."""
    started = time.monotonic()
    settings = load_settings()
    main_pins = load_pins(group="")
    node_pins = load_pins(group=NODE_IMAGE_GROUP)
    kubernetes = main_pins["kubernetes"]
    tag = node_image_tag(settings, kubernetes.version)
    digest = inputs_digest(settings, {**main_pins, **node_pins}, node_files())
    ensure_engine(cache, progress)
    docker = docker_binary()
    if not force and _image_label(docker, tag) == digest:
        return NodeImageResult(tag, True, time.monotonic() - started, _image_size(docker, tag))
    if os.geteuid() != 0:
        raise NodeImageError(
            f"{tag} must be built (inputs {digest}) and that needs root (mmdebstrap, a private "
            "containerd, file ownership): run `sudo blackstart toolchain node-image`"
        )
    progress(f"[node-image] building {tag} (inputs {digest})")
    main = install(cache, progress=progress)
    node = install(cache, progress=progress, group=NODE_IMAGE_GROUP)
    work = cache / "node-image"
    work.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="build-", dir=work) as tmp:
        build = Path(tmp)
        names = run(
            [
                str(node.binary("kubeadm")),
                "config",
                "images",
                "list",
                "--kubernetes-version",
                kubernetes.version,
            ],
            what="asking kubeadm which images it needs",
        ).split()
        pause_version = settings.pause_version
        mapping = check_image_names(
            names,
            node_pins["etcd-node"].version,
            node_pins["coredns-node"].version,
            pause_version,
        )
        pause = build_pause(
            _module_dir(work, kubernetes) / settings.pause_source, build / "pause", pause_version
        )
        proxy_base = debian_rootfs(
            work, settings.debian_suite, settings.proxy_packages, progress, "kube-proxy"
        )
        images = _component_images(mapping, main, node, pause, proxy_base, build)
        archive = build / "images.tar"
        progress(f"[node-image] writing {len(images)} images: {', '.join(sorted(mapping))}")
        write_archive(archive, images)
        node_base = debian_rootfs(
            work, settings.debian_suite, settings.node_packages, progress, "node"
        )
        root = build / "rootfs"
        unpack(node_base, root)
        pause_image = next(n for n, c in mapping.items() if c == "pause")
        binaries = {name: node.binary(name) for name in ("kubelet", "kubeadm", "crictl")}
        binaries["kubectl"] = main.binary("kubectl")
        install_node_files(root, binaries, kubernetes.version, pause_image)
        imported = preload_images(root, archive, progress)
        missing = [n for n in names if n not in imported.split()]
        if missing:
            raise NodeImageError(f"images missing from the node's containerd: {missing}")
        _docker_image(docker, root, tag, digest, build, progress)
    size = _image_size(docker, tag)
    progress(f"[node-image] {tag} built in {time.monotonic() - started:.0f} s ({size >> 20} MiB)")
    return NodeImageResult(tag, False, time.monotonic() - started, size, tuple(sorted(names)))


def _component_images(
    mapping: Mapping[str, str],
    main: Toolchain,
    node: Toolchain,
    pause: Path,
    proxy_base: Path,
    build: Path,
) -> list[ImageSpec]:
    layers = build / "layers"
    images: list[ImageSpec] = []
    for name, component in sorted(mapping.items()):
        if component == "pause":
            layer = binary_layer(layers / "pause.tar", {"/pause": pause})
            images.append(ImageSpec(name, (layer,), entrypoint=("/pause",)))
        elif component == "coredns":
            layer = binary_layer(layers / "coredns.tar", {"/coredns": node.binary("coredns")})
            images.append(ImageSpec(name, (layer,), entrypoint=("/coredns",)))
        elif component == "kube-proxy":
            target = "/usr/local/bin/kube-proxy"
            layer = binary_layer(
                layers / "kube-proxy.tar", {target: node.binary("kube-proxy")}, base_files=False
            )
            images.append(ImageSpec(name, (proxy_base, layer), entrypoint=(target,)))
        else:
            source = node.binary("etcd") if component == "etcd" else main.binary(component)
            target = f"/usr/local/bin/{component}"
            layer = binary_layer(layers / f"{component}.tar", {target: source})
            images.append(ImageSpec(name, (layer,), entrypoint=(target,)))
    images.append(ImageSpec(TOOLBOX_IMAGE, (proxy_base,), cmd=("/bin/bash",)))
    return images


def _docker_image(
    docker: str, root: Path, tag: str, digest: str, build: Path, progress: Progress
) -> None:
    progress(f"[node-image] importing the node root filesystem into Docker as {tag}")
    staging = f"{tag}-import"
    tar = subprocess.Popen(
        ["tar", "--numeric-owner", "--xattrs", "-C", str(root), "-cf", "-", "."],
        stdout=subprocess.PIPE,
    )
    try:
        run(
            [
                docker,
                "import",
                "--change",
                "ENV container=docker",
                "--change",
                f"ENTRYPOINT {ENTRYPOINT}",
                "-",
                staging,
            ],
            what="importing the node root filesystem",
            stdin=tar.stdout,
        )
    finally:
        if tar.stdout is not None:
            tar.stdout.close()
        tar.wait()
    if tar.returncode != 0:
        raise NodeImageError(f"tar of {root} exited with {tar.returncode}")
    context = build / "context"
    context.mkdir()
    (context / "Dockerfile").write_text(
        f"FROM {staging}\nSTOPSIGNAL {STOP_SIGNAL}\nLABEL {INPUTS_LABEL}={digest}\n"
    )
    env = {**os.environ, "DOCKER_BUILDKIT": "0"}
    run(
        [docker, "build", "--quiet", "-t", tag, str(context)],
        what="tagging the node image",
        env=env,
    )
    run([docker, "rmi", staging], what="removing the staging tag")
    # Earlier builds of the node image, untagged by this one: only ours (by label).
    run(
        [docker, "image", "prune", "--force", "--filter", f"label={INPUTS_LABEL}"],
        what="removing earlier node images",
    )
