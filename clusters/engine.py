"""The Docker engine kind runs on: use one that answers, or start Debian's dockerd.

Where a Docker engine already answers (a laptop, a GitHub runner), blackstart
uses it as it is and never stops it. Where none does, :func:`ensure_engine`
starts ``dockerd`` (Debian's ``docker.io``) as root with:

- its data under ``<cache>/engine/docker`` and its log in
  ``<cache>/engine/dockerd.log``; the API on the usual
  ``/var/run/docker.sock`` so ``docker`` and ``kind`` find it;
- the egress firewall of :mod:`blackstart.clusters.firewall`, installed
  before dockerd starts and checked once it answers;
- when the capability bounding set lacks capabilities (here
  ``CAP_SYS_RESOURCE``), the runtime of :mod:`blackstart.clusters.runc_caps`
  as dockerd's default runtime, so privileged containers (kind nodes) start;
- the inotify limits kind's known issues ask for.

:func:`stop_engine` stops only an engine this module started (found by its
pid file and command line).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from blackstart.clusters import firewall
from blackstart.clusters.runc_caps import bounding_set, missing_capabilities

Progress = Callable[[str], None]

ENGINE_FOLDER = "engine"
SOCKET = "/var/run/docker.sock"
EXEC_ROOT = "/run/blackstart-docker"
RUNTIME_NAME = "blackstart-runc"
DOCKERD = "dockerd"
# kind's known issues: "too many open files" below these.
INOTIFY_LIMITS = {
    "fs/inotify/max_user_instances": 512,
    "fs/inotify/max_user_watches": 524288,
}
_APT_HINT = (
    "install Debian's docker.io (`apt-get install docker.io iptables`, or run .ci/bootstrap)"
)


class EngineError(RuntimeError):
    """No Docker engine answers and none could be started; the message says why and what to do."""


@dataclass(frozen=True)
class EnginePaths:
    """Where an engine started by blackstart keeps its files."""

    root: Path

    @property
    def data_root(self) -> Path:
        return self.root / "docker"

    @property
    def config(self) -> Path:
        return self.root / "daemon.json"

    @property
    def log(self) -> Path:
        return self.root / "dockerd.log"

    @property
    def pidfile(self) -> Path:
        return self.root / "dockerd.pid"

    @property
    def runtime(self) -> Path:
        return self.root / "bin" / RUNTIME_NAME


def engine_paths(cache: Path) -> EnginePaths:
    return EnginePaths(cache / ENGINE_FOLDER)


@dataclass(frozen=True)
class EngineStatus:
    """Whether an engine answers, and whether blackstart started it."""

    answers: bool
    owned: bool
    version: str = ""
    pid: int | None = None
    log: Path | None = None
    runtime: str = ""
    detail: str = ""


def docker_binary() -> str:
    """The ``docker`` client on PATH; raises :class:`EngineError` when there is none."""
    found = shutil.which("docker")
    if found is None:
        raise EngineError(f"no `docker` client on PATH: {_APT_HINT}")
    return found


def server_version(timeout: float = 10.0) -> str | None:
    """The version of the engine the ``docker`` client talks to, or None when none answers."""
    try:
        done = subprocess.run(
            [docker_binary(), "version", "--format", "{{.Server.Version}}"],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return None
    version = done.stdout.strip()
    return version if done.returncode == 0 and version else None


def missing_host_capabilities() -> list[str]:
    """Capabilities the kernel knows that this process's bounding set lacks."""
    status = Path("/proc/self/status").read_text()
    last_cap = int(Path("/proc/sys/kernel/cap_last_cap").read_text())
    return missing_capabilities(bounding_set(status), last_cap)


def daemon_config(paths: EnginePaths, runtime: Path | None) -> dict[str, object]:
    """dockerd's ``daemon.json`` (pure): data, pid, socket, runtime; no registry settings."""
    config: dict[str, object] = {
        "data-root": str(paths.data_root),
        "exec-root": EXEC_ROOT,
        "pidfile": str(paths.pidfile),
        "hosts": [f"unix://{SOCKET}"],
        "storage-driver": "overlay2",
        "iptables": True,
        "ip-forward": True,
        "ipv6": False,
        "log-driver": "json-file",
        "log-opts": {"max-size": "10m", "max-file": "2"},
        "features": {"buildkit": False},
    }
    if runtime is not None:
        config["runtimes"] = {RUNTIME_NAME: {"path": str(runtime)}}
        config["default-runtime"] = RUNTIME_NAME
    return config


def install_runtime(paths: EnginePaths) -> Path:
    """Write the capability-dropping runtime under the engine folder; return its path."""
    source = resources.files("blackstart.clusters").joinpath("runc_caps.py").read_text()
    runc = shutil.which("runc") or "/usr/sbin/runc"
    source = source.replace('DEFAULT_RUNC = "/usr/sbin/runc"', f"DEFAULT_RUNC = {runc!r}")
    python = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable
    paths.runtime.parent.mkdir(parents=True, exist_ok=True)
    tmp = paths.runtime.with_suffix(".tmp")
    if source.startswith("#!"):
        source = source.split("\n", 1)[1]
    # The kernel passes everything after the interpreter as one argument.
    tmp.write_text(f"#!{python} -IS\n" + source)
    tmp.chmod(0o755)
    os.replace(tmp, paths.runtime)
    return paths.runtime


def raise_inotify_limits() -> list[str]:
    """Raise the inotify sysctls to what kind needs when they are lower; return what changed."""
    changed = []
    for key, wanted in INOTIFY_LIMITS.items():
        path = Path("/proc/sys") / key
        current = int(path.read_text())
        if current < wanted:
            path.write_text(str(wanted))
            changed.append(f"{key.replace('/', '.')} {current} -> {wanted}")
    return changed


def _owned_pid(paths: EnginePaths) -> int | None:
    try:
        pid = int(paths.pidfile.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError):
        return None
    return pid if str(paths.config).encode() in cmdline else None


def engine_status(cache: Path) -> EngineStatus:
    """What answers on the Docker socket, and whether it is an engine blackstart started."""
    paths = engine_paths(cache)
    pid = _owned_pid(paths)
    version = server_version()
    runtime = ""
    if pid is not None and paths.config.exists():
        runtime = str(json.loads(paths.config.read_text()).get("default-runtime", "runc"))
    return EngineStatus(
        answers=version is not None,
        owned=pid is not None,
        version=version or "",
        pid=pid,
        log=paths.log if pid is not None else None,
        runtime=runtime,
    )


def ensure_engine(
    cache: Path, progress: Progress = print, timeout: float = 60.0, confine: bool = False
) -> EngineStatus:
    """An engine that answers: the one already there, or dockerd started now (see module doc).

    An engine blackstart starts always gets the egress firewall; one already
    there gets it only with ``confine`` (a CI runner: its containers then
    cannot reach the internet either). Raises :class:`EngineError` naming
    what is missing (root, dockerd, iptables) or pointing at dockerd's log
    when it does not come up.
    """
    version = server_version()
    if version is not None:
        status = engine_status(cache)
        if confine and not status.owned:
            if os.geteuid() != 0:
                raise EngineError("confining an engine's containers needs root: use sudo")
            firewall.install_rules()
            progress("[engine] egress firewall installed on the engine that was running")
        if status.owned or confine:
            firewall.check_rules(engine_running=True)
        return status
    if os.geteuid() != 0:
        raise EngineError(
            "no Docker engine answers and starting one needs root: run `sudo blackstart engine "
            "up`, or start Docker yourself"
        )
    dockerd = shutil.which(DOCKERD) or shutil.which(DOCKERD, path="/usr/sbin:/usr/local/sbin")
    if dockerd is None:
        raise EngineError(f"no Docker engine answers and dockerd is not installed: {_APT_HINT}")
    paths = engine_paths(cache)
    paths.data_root.mkdir(parents=True, exist_ok=True)
    missing = missing_host_capabilities()
    runtime = install_runtime(paths) if missing else None
    if missing:
        progress(f"[engine] bounding set lacks {', '.join(missing)}: default runtime {runtime}")
    paths.config.write_text(json.dumps(daemon_config(paths, runtime), indent=2) + "\n")
    for change in raise_inotify_limits():
        progress(f"[engine] {change}")
    try:
        firewall.install_rules()
    except firewall.FirewallError as err:
        raise EngineError(f"not starting dockerd: {err}") from err
    progress(f"[engine] starting {dockerd} (data {paths.data_root}, log {paths.log})")
    env = dict(os.environ)
    env["PATH"] = f"{env.get('PATH', '')}:/usr/local/sbin:/usr/sbin:/sbin"
    with paths.log.open("ab") as log:
        process = subprocess.Popen(
            [dockerd, "--config-file", str(paths.config)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            env=env,
            start_new_session=True,
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise EngineError(
                f"dockerd exited with {process.returncode}; see {paths.log}: {_tail(paths.log)}"
            )
        version = server_version(timeout=5.0)
        if version is not None:
            break
        time.sleep(0.5)
    else:
        raise EngineError(f"dockerd did not answer within {timeout:.0f} s; see {paths.log}")
    try:
        firewall.check_rules(engine_running=True)
    except firewall.FirewallError as err:
        _terminate(process.pid, 30.0)
        raise EngineError(f"dockerd stopped again: {err}") from err
    progress(f"[engine] dockerd {version} answers on {SOCKET} (pid {process.pid})")
    return EngineStatus(
        answers=True,
        owned=True,
        version=version,
        pid=process.pid,
        log=paths.log,
        runtime=RUNTIME_NAME if runtime else "runc",
    )


def running_containers() -> list[str]:
    """Names of the containers that run on the engine the client talks to."""
    done = subprocess.run(
        [docker_binary(), "ps", "--format", "{{.Names}}"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return done.stdout.split() if done.returncode == 0 else []


def stop_engine(cache: Path, progress: Progress = print, force: bool = False) -> bool:
    """Stop the dockerd blackstart started; False when none of ours runs.

    An engine blackstart did not start is never stopped. With containers
    still running it refuses unless ``force`` (dockerd then kills them).
    """
    paths = engine_paths(cache)
    pid = _owned_pid(paths)
    if pid is None:
        return False
    running = running_containers()
    if running and not force:
        raise EngineError(
            f"containers still run on the engine: {', '.join(running)}; delete their clusters "
            "(`blackstart cluster down --name NAME`) or pass --force"
        )
    progress(f"[engine] stopping dockerd (pid {pid})")
    _terminate(pid, 60.0)
    firewall.remove_rules()
    return True


def _terminate(pid: int, timeout: float) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not Path(f"/proc/{pid}").exists():
            return
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def _tail(path: Path, lines: int = 5) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return "(no log)"
