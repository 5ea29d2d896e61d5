"""The control plane's machine, made real with cgroups: a memory and a CPU limit.

A local cluster's kube-apiserver runs in the cgroup
``blackstart/<cluster>/control-plane``, limited to the spec's
``controlPlane`` size, as a static pod's resource limits (or its VM) bound
it on a real fleet: when a storm makes it outgrow the memory, the kernel's
OOM killer ends it, and CPU beyond the quota is throttled.

cgroup v1 (``/sys/fs/cgroup/memory``, ``/sys/fs/cgroup/cpu``,
``/sys/fs/cgroup/cpuacct``) and v2 (one unified hierarchy) are both handled.
Nothing outside ``blackstart/`` is ever written.
"""

import contextlib
import os
import time
from dataclasses import dataclass
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
CPU_PERIOD_US = 100_000
# kube-apiserver is the OOM killer's first choice, in its cgroup and on the machine
APISERVER_OOM_SCORE_ADJ = 900


class CgroupError(RuntimeError):
    """The control plane's cgroup could not be made or changed; the message says why."""


@dataclass(frozen=True)
class CgroupUsage:
    """What the control plane's cgroup has used so far."""

    memory_bytes: int
    memory_peak_bytes: int
    memory_limit_bytes: int
    cpu_seconds: float
    cpu_quota: float  # cores; 0 when unlimited
    oom_kills: int
    throttled_periods: int


def cgroup_version(root: Path = CGROUP_ROOT) -> int:
    """2 on a unified hierarchy, 1 when the v1 memory and cpu controllers are mounted, else 0."""
    if (root / "cgroup.controllers").exists():
        return 2
    if (root / "memory" / "memory.limit_in_bytes").exists() and (root / "cpu").is_dir():
        return 1
    return 0


def _write(path: Path, value: str) -> None:
    try:
        path.write_text(value)
    except OSError as err:
        raise CgroupError(f"cannot write {value!r} to {path}: {err.strerror or err}") from err


def _read_int(path: Path, default: int = 0) -> int:
    try:
        text = path.read_text().strip()
    except OSError:
        return default
    if text == "max":
        return 0
    try:
        return int(text.split()[0])
    except (ValueError, IndexError):
        return default


def _keyed(path: Path) -> dict[str, int]:
    """A ``key value`` per line file (memory.stat, cpu.stat, memory.oom_control, ...)."""
    values: dict[str, int] = {}
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return values
    for line in lines:
        key, _, value = line.partition(" ")
        with contextlib.suppress(ValueError):
            values[key] = int(value.strip())
    return values


def set_oom_score_adj(pid: int, adj: int) -> bool:
    """Set ``pid``'s OOM score adjustment; False when not allowed (a negative one needs
    CAP_SYS_RESOURCE, which a sandboxed root may lack) or the process is gone."""
    try:
        Path(f"/proc/{pid}/oom_score_adj").write_text(str(adj))
    except OSError:
        return False
    return True


def cgroup_of(pid: int, proc: Path = Path("/proc")) -> Path | None:
    """The cgroup ``pid`` is in, relative to the hierarchy's root (the memory controller's
    on a v1 hierarchy): a container's, from its first process. None when it is gone."""
    try:
        lines = (proc / str(pid) / "cgroup").read_text().splitlines()
    except OSError:
        return None
    found = None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(",") or (controllers == "" and found is None):
            found = Path(path.lstrip("/"))
    return found


def container_cgroup(pid: int, container_id: str, proc: Path = Path("/proc")) -> Path | None:
    """The cgroup of the container whose first process is ``pid``: the nearest cgroup of
    that process named after the container (``docker/<id>``, ``docker-<id>.scope``), not
    one the container made inside itself (a kind node moves its init to ``init.scope``)."""
    path = cgroup_of(pid, proc)
    if path is None or not container_id:
        return path
    here = path
    while here.name:
        if container_id[:12] in here.name:
            return here
        here = here.parent
    return path


class ControlPlaneCgroup:
    """The cgroup of one cluster's control plane."""

    def __init__(
        self, cluster: str, root: Path = CGROUP_ROOT, relative: Path | None = None
    ) -> None:
        self.cluster = cluster
        self.root = root
        self.version = cgroup_version(root)
        self.relative = relative or Path("blackstart") / cluster / "control-plane"

    # ------------------------------------------------------------------ paths
    def _dirs(self) -> dict[str, Path]:
        if self.version == 2:
            return {"unified": self.root / self.relative}
        return {c: self.root / c / self.relative for c in ("memory", "cpu", "cpuacct")}

    @property
    def available(self) -> bool:
        """True when this machine has the controllers and they are writable."""
        if self.version == 0:
            return False
        base = self.root if self.version == 2 else self.root / "memory"
        return os.access(base, os.W_OK)

    def exists(self) -> bool:
        return all(d.is_dir() for d in self._dirs().values())

    # ---------------------------------------------------------------- changes
    def create(self, cpus: float, memory: int) -> None:
        """Create the cgroup (idempotent) and set its limits."""
        if not self.available:
            raise CgroupError(
                f"no writable cgroup memory and cpu controllers under {self.root}: the control "
                "plane cannot be limited on this machine (run as root on Linux with cgroups)"
            )
        if self.version == 2:
            parent = self.root
            for part in self.relative.parts:
                subtree = parent / "cgroup.subtree_control"
                with contextlib.suppress(CgroupError):
                    _write(subtree, "+memory +cpu")
                parent = parent / part
                parent.mkdir(exist_ok=True)
        else:
            for directory in self._dirs().values():
                directory.mkdir(parents=True, exist_ok=True)
            # a process moved in brings the memory it already holds (v1 charges it otherwise
            # to the cgroup it came from); deprecated in newer kernels, harmless where ignored
            with contextlib.suppress(CgroupError):
                _write(self._dirs()["memory"] / "memory.move_charge_at_immigrate", "3")
        self.set_limits(cpus, memory)

    def set_limits(self, cpus: float, memory: int) -> None:
        """Change the limits of the existing cgroup (a grown control plane)."""
        if cpus <= 0 or memory <= 0:
            raise CgroupError(f"cpus ({cpus}) and memory ({memory}) must both be above 0")
        quota = int(cpus * CPU_PERIOD_US)
        dirs = self._dirs()
        if self.version == 2:
            _write(dirs["unified"] / "memory.max", str(memory))
            with contextlib.suppress(CgroupError):  # no swap: an OOM must be an OOM
                _write(dirs["unified"] / "memory.swap.max", "0")
            _write(dirs["unified"] / "cpu.max", f"{quota} {CPU_PERIOD_US}")
            return
        # v1 keeps limit <= memsw.limit (memory + swap) at every step: raise memsw first when
        # growing, lower it last when shrinking
        limit, memsw = (
            dirs["memory"] / "memory.limit_in_bytes",
            dirs["memory"] / "memory.memsw.limit_in_bytes",
        )
        order = [memsw, limit] if memory > _read_int(limit) else [limit, memsw]
        for path in order:
            if path == memsw:
                with contextlib.suppress(CgroupError):  # no swap accounting on this kernel
                    _write(path, str(memory))
            else:
                _write(path, str(memory))
        _write(dirs["cpu"] / "cpu.cfs_period_us", str(CPU_PERIOD_US))
        _write(dirs["cpu"] / "cpu.cfs_quota_us", str(quota))

    def add(self, pid: int, oom_score_adj: int | None = None) -> None:
        """Move process ``pid`` (all its threads) into the cgroup."""
        for directory in self._dirs().values():
            _write(directory / "cgroup.procs", str(pid))
        if oom_score_adj is not None:
            set_oom_score_adj(pid, oom_score_adj)

    def join_self(self) -> None:
        """Move the calling process into the cgroup: a ``preexec_fn``, so that what it starts
        (kwokctl, and the control plane kwokctl starts) is born there, its memory charged
        from the first page (cgroup v1 no longer moves charges with a process)."""
        self.add(os.getpid())

    def release(self, pid: int) -> None:
        """Move ``pid`` out, to the root of each hierarchy (a process that is not control plane)."""
        for controller, directory in self._dirs().items():
            top = self.root if self.version == 2 else self.root / controller
            if directory.is_dir():
                with contextlib.suppress(OSError):
                    (top / "cgroup.procs").write_text(str(pid))

    def contains(self, pid: int) -> bool:
        """True when ``pid`` is in the cgroup (its memory controller's, on v1)."""
        try:
            lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
        except OSError:
            return False
        want = "/" + str(self.relative)
        for line in lines:
            _, controllers, path = line.split(":", 2)
            if self.version == 2 and controllers == "" and path == want:
                return True
            if self.version == 1 and "memory" in controllers.split(",") and path == want:
                return True
        return False

    def pids(self) -> list[int]:
        directory = next(iter(self._dirs().values()))
        try:
            return [int(p) for p in (directory / "cgroup.procs").read_text().split()]
        except OSError:
            return []

    def remove(self) -> None:
        """Remove the cgroup and the cluster's folder above it; processes left are moved out."""
        dirs = self._dirs()
        for controller, directory in dirs.items():
            if not directory.is_dir():
                continue
            top = self.root if self.version == 2 else self.root / controller
            for pid in self.pids() if controller in ("memory", "unified") else []:
                with contextlib.suppress(OSError):
                    (top / "cgroup.procs").write_text(str(pid))
            for folder in (directory, directory.parent):
                for _ in range(20):  # the kernel lets go of a cgroup a moment after its last exit
                    try:
                        folder.rmdir()
                        break
                    except FileNotFoundError:
                        break
                    except OSError:
                        time.sleep(0.05)

    # ----------------------------------------------------------------- usage
    def usage(self) -> CgroupUsage:
        dirs = self._dirs()
        if self.version == 2:
            d = dirs["unified"]
            cpu_max = (d / "cpu.max").read_text().split() if (d / "cpu.max").exists() else []
            quota = 0.0
            if len(cpu_max) == 2 and cpu_max[0] != "max":
                quota = int(cpu_max[0]) / int(cpu_max[1])
            cpu_stat = _keyed(d / "cpu.stat")
            return CgroupUsage(
                memory_bytes=_read_int(d / "memory.current"),
                memory_peak_bytes=_read_int(d / "memory.peak"),
                memory_limit_bytes=_read_int(d / "memory.max"),
                cpu_seconds=cpu_stat.get("usage_usec", 0) / 1e6,
                cpu_quota=quota,
                oom_kills=_keyed(d / "memory.events").get("oom_kill", 0),
                throttled_periods=cpu_stat.get("nr_throttled", 0),
            )
        quota_us = _read_int(dirs["cpu"] / "cpu.cfs_quota_us", -1)
        period_us = _read_int(dirs["cpu"] / "cpu.cfs_period_us", CPU_PERIOD_US) or CPU_PERIOD_US
        return CgroupUsage(
            memory_bytes=_read_int(dirs["memory"] / "memory.usage_in_bytes"),
            memory_peak_bytes=_read_int(dirs["memory"] / "memory.max_usage_in_bytes"),
            memory_limit_bytes=_read_int(dirs["memory"] / "memory.limit_in_bytes"),
            cpu_seconds=_read_int(dirs["cpuacct"] / "cpuacct.usage") / 1e9,
            cpu_quota=quota_us / period_us if quota_us > 0 else 0.0,
            oom_kills=_keyed(dirs["memory"] / "memory.oom_control").get("oom_kill", 0),
            throttled_periods=_keyed(dirs["cpu"] / "cpu.stat").get("nr_throttled", 0),
        )
