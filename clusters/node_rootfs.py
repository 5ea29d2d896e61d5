"""The root filesystems of the kind node image: Debian from apt, our node files, preloaded images.

Three steps, each offline once the Debian packages are fetched:

1. :func:`debian_rootfs`: a Debian root filesystem made by ``mmdebstrap`` from
   the machine's own apt sources, cached as a tarball keyed by its package
   list;
2. :func:`install_node_files`: kubelet, kubeadm, kubectl, our systemd units,
   entrypoint, containerd config, pod-network service and ``/kind`` files
   (what kind reads from a node), written into an unpacked copy;
3. :func:`preload_images`: the component images imported into the node's
   containerd store (namespace ``k8s.io``) by a private, short-lived
   containerd on the host, the same Debian containerd the node runs.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import IO

Progress = Callable[[str], None]

DEFAULT_MIRROR = "http://deb.debian.org/debian"
FILES_PACKAGE = "kind_image"
K8S_NAMESPACE = "k8s.io"


class NodeImageError(RuntimeError):
    """The node image could not be built; the message names the step and what to do."""


def run(
    argv: Sequence[str],
    what: str,
    timeout: float = 1800.0,
    stdin: int | IO[bytes] | None = None,
    env: Mapping[str, str] | None = None,
) -> str:
    """Run a build step; raise :class:`NodeImageError` naming it and its output on failure."""
    try:
        done = subprocess.run(
            list(argv),
            stdin=stdin,
            env=env,
            capture_output=True,
            timeout=timeout,
            check=False,
        )
    except FileNotFoundError as err:
        raise NodeImageError(f"{what}: {argv[0]} not found ({_hint(argv[0])})") from err
    except subprocess.TimeoutExpired as err:
        raise NodeImageError(f"{what}: `{argv[0]}` did not finish in {timeout:.0f} s") from err
    stdout = done.stdout.decode(errors="replace")
    if done.returncode != 0:
        stderr = done.stderr.decode(errors="replace")
        output = (stderr.strip() or stdout.strip())[-3000:]
        raise NodeImageError(f"{what}: `{' '.join(argv)}` exited with {done.returncode}:\n{output}")
    return stdout


def _hint(binary: str) -> str:
    hints = {
        "mmdebstrap": "apt-get install mmdebstrap",
        "containerd": "apt-get install containerd (docker.io brings it)",
        "ctr": "apt-get install containerd",
        "gcc": "apt-get install gcc libc6-dev",
        "docker": "apt-get install docker.io",
    }
    return hints.get(Path(binary).name, "install it")


def apt_sources() -> str:
    """What mmdebstrap gets as its mirror: the host's deb822 sources file, else Debian's."""
    folder = Path("/etc/apt/sources.list.d")
    for path in sorted(folder.glob("*.sources")) if folder.is_dir() else []:
        text = path.read_text(errors="replace")
        if "debian" in text and "Types: deb" in text:
            return str(path)
    legacy = Path("/etc/apt/sources.list")
    if legacy.exists() and "debian" in legacy.read_text(errors="replace"):
        return str(legacy)
    return DEFAULT_MIRROR


def debian_rootfs(
    cache: Path, suite: str, packages: Sequence[str], progress: Progress, name: str
) -> Path:
    """A cached tarball of a minimal Debian ``suite`` with ``packages`` (mmdebstrap)."""
    sources = apt_sources()
    key = hashlib.sha256(f"{suite} {sorted(packages)} {sources}".encode()).hexdigest()[:16]
    out = cache / f"{name}-{suite}-{key}.tar"
    if out.exists():
        return out
    if shutil.which("mmdebstrap") is None:
        raise NodeImageError(f"mmdebstrap not found: {_hint('mmdebstrap')} (or run .ci/bootstrap)")
    cache.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    progress(
        f"[node-image] mmdebstrap {suite} for {name} from {sources} ({len(packages)} packages)"
    )
    partial = out.with_suffix(".partial.tar")
    run(
        [
            "mmdebstrap",
            "--mode=root",
            "--variant=minbase",
            "--format=tar",
            "--aptopt=APT::Install-Recommends false",
            "--dpkgopt=path-exclude=/usr/share/{doc,man,locale,info}/*",
            "--dpkgopt=path-include=/usr/share/locale/locale.alias",
            f"--include={','.join(packages)}",
            suite,
            str(partial),
            sources,
        ],
        what=f"building the Debian {suite} root filesystem for {name}",
        stdin=subprocess.DEVNULL,
    )
    os.replace(partial, out)
    progress(f"[node-image] {name} root filesystem in {time.monotonic() - started:.0f} s")
    return out


def unpack(tarball: Path, into: Path) -> None:
    """Unpack a root filesystem tarball into ``into`` (emptied first), keeping owners and modes."""
    if into.exists():
        shutil.rmtree(into)
    into.mkdir(parents=True)
    run(
        ["tar", "--numeric-owner", "--xattrs", "-xpf", str(tarball), "-C", str(into)],
        what=f"unpacking {tarball}",
    )


def node_file(name: str) -> str:
    """The text of a packaged node file (``clusters/kind_image/<name>``)."""
    return resources.files("blackstart.clusters").joinpath(FILES_PACKAGE, name).read_text()


def node_files() -> dict[str, str]:
    """Every packaged node file by name (part of the image's input digest)."""
    folder = resources.files("blackstart.clusters").joinpath(FILES_PACKAGE)
    return {entry.name: entry.read_text() for entry in folder.iterdir() if entry.is_file()}


# image path -> (packaged file, mode); "@PAUSE_IMAGE@" is replaced in the containerd config.
NODE_FILE_LAYOUT: Mapping[str, tuple[str, int]] = {
    "usr/local/bin/entrypoint": ("entrypoint", 0o755),
    "usr/local/bin/blackstart-node-network": ("node-network", 0o755),
    "usr/local/bin/blackstart-kubelet-cgroups": ("kubelet-cgroups", 0o755),
    "etc/systemd/system/containerd.service": ("containerd.service", 0o644),
    "etc/systemd/system/kubelet.service": ("kubelet.service", 0o644),
    "etc/systemd/system/kubelet.slice": ("kubelet.slice", 0o644),
    "etc/systemd/system/kubelet.service.d/10-kubeadm.conf": ("10-kubeadm.conf", 0o644),
    "etc/systemd/system/blackstart-node-network.service": (
        "blackstart-node-network.service",
        0o644,
    ),
    "etc/containerd/config.toml": ("containerd-config.toml", 0o644),
    "etc/default/kubelet": ("default-kubelet", 0o644),
    "etc/crictl.yaml": ("crictl.yaml", 0o644),
    "etc/sysctl.d/10-blackstart.conf": ("sysctl.conf", 0o644),
    "kind/manifests/default-cni.yaml": ("default-cni.yaml", 0o644),
    "kind/manifests/default-storage.yaml": ("default-storage.yaml", 0o644),
}
ENABLED_UNITS = ("containerd.service", "kubelet.service", "blackstart-node-network.service")
# Units that make no sense in a node container (kind drops the same kind of thing).
_WANTS_TO_EMPTY = (
    "etc/systemd/system/multi-user.target.wants",
    "etc/systemd/system/timers.target.wants",
    "lib/systemd/system/multi-user.target.wants",
    "lib/systemd/system/local-fs.target.wants",
    "lib/systemd/system/basic.target.wants",
)
_MASKED = ("systemd-binfmt.service", "systemd-udevd.service", "getty.target")


def install_node_files(
    root: Path, binaries: Mapping[str, Path], kubernetes_version: str, pause_image: str
) -> None:
    """Write the node's binaries, units, configs and ``/kind`` files into ``root``."""
    for name, source in binaries.items():
        target = root / "usr/bin" / name
        shutil.copyfile(source, target)
        target.chmod(0o755)
    for target_name, (source_name, mode) in NODE_FILE_LAYOUT.items():
        target = root / target_name
        target.parent.mkdir(parents=True, exist_ok=True)
        text = node_file(source_name).replace("@PAUSE_IMAGE@", pause_image)
        target.write_text(text)
        target.chmod(mode)
    (root / "kind/version").write_text(kubernetes_version)
    (root / "etc/kubernetes/manifests").mkdir(parents=True, exist_ok=True)
    # kind and most CNI documentation expect plugins in /opt/cni/bin.
    (root / "opt/cni").mkdir(parents=True, exist_ok=True)
    cni_bin = root / "opt/cni/bin"
    if not cni_bin.is_symlink():
        cni_bin.symlink_to("/usr/lib/cni")
    for folder in _WANTS_TO_EMPTY:
        path = root / folder
        if path.is_dir():
            for link in path.iterdir():
                link.unlink()
    tmpfiles = root / "lib/systemd/system/sysinit.target.wants/systemd-tmpfiles-setup.service"
    tmpfiles.unlink(missing_ok=True)
    wants = root / "etc/systemd/system/multi-user.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    for unit in ENABLED_UNITS:
        (wants / unit).symlink_to(f"/etc/systemd/system/{unit}")
    for unit in _MASKED:
        masked = root / "etc/systemd/system" / unit
        masked.unlink(missing_ok=True)
        masked.symlink_to("/dev/null")
    journald = root / "etc/systemd/journald.conf"
    with journald.open("a") as handle:
        handle.write(
            "\n# The kernel log is the host's: do not copy it into every node.\nReadKMsg=no\n"
        )
    init = root / "sbin/init"
    if not init.exists():
        raise NodeImageError(f"{init} is missing: the node root filesystem lacks systemd-sysv")


_CONTAINERD_CONFIG = """version = 2
root = "{root}"
state = "{state}"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "{socket}"
[ttrpc]
  address = "{socket}.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "{state}/opt"
"""


def preload_images(root: Path, archive: Path, progress: Progress, timeout: float = 300.0) -> str:
    """Import ``archive`` into ``root``'s containerd store, namespace ``k8s.io``; return the list.

    A private containerd (the host's, Debian's, same as the node's) runs on a
    socket of its own with its store under ``<root>/var/lib/containerd``;
    images are imported without unpacking (the node unpacks on first use).
    """
    for binary in ("containerd", "ctr"):
        if shutil.which(binary) is None:
            raise NodeImageError(f"{binary} not found: {_hint(binary)}")
    store = root / "var/lib/containerd"
    store.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bs-ctrd-", dir="/tmp") as tmp:
        socket = f"{tmp}/containerd.sock"
        config = Path(tmp) / "config.toml"
        config.write_text(
            _CONTAINERD_CONFIG.format(root=store, state=f"{tmp}/state", socket=socket)
        )
        with (Path(tmp) / "containerd.log").open("wb") as log:
            daemon = subprocess.Popen(
                ["containerd", "--config", str(config)], stdout=log, stderr=log
            )
        try:
            ctr = ["ctr", "--address", socket, "--namespace", K8S_NAMESPACE]
            deadline = time.monotonic() + 30
            while subprocess.run([*ctr, "version"], capture_output=True).returncode != 0:
                if daemon.poll() is not None or time.monotonic() > deadline:
                    log_text = (Path(tmp) / "containerd.log").read_text(errors="replace")
                    raise NodeImageError(
                        f"the private containerd did not start:\n{log_text[-2000:]}"
                    )
                time.sleep(0.3)
            progress(f"[node-image] importing {archive.name} into the node's containerd")
            run(
                [*ctr, "images", "import", "--no-unpack", "--all-platforms", str(archive)],
                what="importing the component images",
                timeout=timeout,
            )
            return run([*ctr, "images", "list", "--quiet"], what="listing the imported images")
        finally:
            daemon.terminate()
            try:
                daemon.wait(timeout=30)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait()
