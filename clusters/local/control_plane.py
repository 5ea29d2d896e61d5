"""The control plane's size and supervision on a local cluster: cgroup limits, restarts.

``cluster up`` puts kube-apiserver in a cgroup sized by the spec's
``controlPlane`` (see :mod:`.cgroups`) and starts the cluster's supervisor
(see :mod:`.supervisor`), which restarts an OOM-killed kube-apiserver with
back-off and counts it. What was set is in ``state.extra["control_plane"]``.
"""

import sys
import time
from collections.abc import Callable
from typing import Any

from blackstart.clusters.local.cgroups import CgroupError, ControlPlaneCgroup
from blackstart.clusters.local.prometheus import LocalPrometheus
from blackstart.clusters.local.supervisor import (
    CONFINED,
    NOT_CONTROL_PLANE,
    hold_file,
    read_status,
    request_backoff_reset,
)
from blackstart.clusters.net import free_port
from blackstart.clusters.processes import is_alive, read_pid, start_detached, stop_pid_file
from blackstart.clusters.provider import ClusterError
from blackstart.clusters.spec import ControlPlaneSize, format_memory, host_resources

SUPERVISOR = "supervisor"
SCRAPE_JOB = "control-plane"


class LocalControlPlane(LocalPrometheus):
    def control_plane_info(self, name: str) -> dict[str, Any]:
        """``state.extra["control_plane"]``: cpus, memory, cgroup, supervisor port; {} if none."""
        info = self.state(name).extra.get("control_plane")
        return dict(info) if isinstance(info, dict) else {}

    def prepare_control_plane_cgroup(
        self, name: str, size: ControlPlaneSize
    ) -> Callable[[], None] | None:
        """Create the control plane's cgroup before kwokctl starts anything.

        Returns the ``preexec`` that puts kwokctl (and so every process it
        starts) in it, or None when this machine has no usable cgroups. The
        memory limit holds from the start; the CPU limit waits for
        :meth:`limit_control_plane`: until then the cgroup holds every
        component kwokctl starts (etcd, the controllers, the kwok controller,
        Prometheus), not the API server alone, and they would start on one
        API server's share of the CPU.
        """
        cgroup = ControlPlaneCgroup(name)
        if not cgroup.available:
            return None
        try:
            cgroup.create(max(size.cpus, float(host_resources()[0])), size.memory)
        except CgroupError as err:
            self.progress(f"[{name}] control plane left unlimited: {err}")
            return None
        return cgroup.join_self

    def control_plane_preexec(self, name: str) -> Callable[[], None] | None:
        """The ``preexec`` that starts a process inside the control plane's cgroup, if any."""
        cgroup = ControlPlaneCgroup(name)
        return cgroup.join_self if cgroup.exists() else None

    def limit_control_plane(self, name: str, size: ControlPlaneSize) -> dict[str, Any]:
        """Put kube-apiserver of ``name`` in a cgroup limited to ``size``.

        kwokctl started everything inside it; what is not kube-apiserver
        (etcd, the controllers, the kwok controller, Prometheus) is moved out.
        Where this machine has no writable cgroups the API server runs
        unlimited, and ``limited`` says so (a storm then cannot take it down).
        """
        cgroup = ControlPlaneCgroup(name)
        info: dict[str, Any] = {
            "cpus": size.cpus,
            "memory": size.memory_text,
            "memory_bytes": size.memory,
            "from_advice": size.from_advice,
            "limited": False,
            "cgroup": None,
        }
        if cgroup.available:
            try:
                cgroup.create(size.cpus, size.memory)
                kc = self.kwok_cluster(name)
                for component, adj in CONFINED.items():
                    pid = kc.pid(component)
                    if is_alive(pid) and pid is not None:
                        cgroup.add(pid, adj)
                for component in NOT_CONTROL_PLANE:
                    pid = kc.pid(component)
                    if pid is not None and cgroup.contains(pid):
                        cgroup.release(pid)
                info.update(limited=True, cgroup=str(cgroup.relative), version=cgroup.version)
            except CgroupError as err:
                self.progress(f"[{name}] control plane left unlimited: {err}")
        else:
            self.progress(f"[{name}] no writable cgroups here: the control plane runs unlimited")
        self._save_control_plane(name, info)
        return info

    def _save_control_plane(self, name: str, changes: dict[str, Any]) -> None:
        state = self.state(name)
        current = state.extra.get("control_plane")
        merged = {**(current if isinstance(current, dict) else {}), **changes}
        state.extra["control_plane"] = merged
        state.save()

    def start_supervisor(
        self, name: str, backoff_initial_s: float | None = None, wait: bool = True
    ) -> int:
        """Start the cluster's supervisor (restarts with back-off, restart counts, /metrics).

        ``wait``: return once it has written its first status (else call
        :meth:`wait_supervisor` later: bring-up goes on while it starts).
        """
        pid_file = self.pid_file(name, SUPERVISOR)
        if is_alive(read_pid(pid_file)):
            return read_pid(pid_file) or 0
        port = int(self.control_plane_info(name).get("metrics_port") or free_port())
        argv = [
            sys.executable, "-P", "-m", "blackstart.clusters.local.supervisor",
            "--cluster", name,
            "--state-dir", str(self.state_dir(name)),
            "--kwok-workdir", str(self.kwok_workdir()),
            "--kwokctl", str(self.toolchain.binary("kwokctl")),
            "--metrics-port", str(port),
        ]  # fmt: skip
        if backoff_initial_s is not None:
            argv += ["--backoff-initial", str(backoff_initial_s)]
        pid = start_detached(argv, pid_file, self.log_file(name, SUPERVISOR))
        self._save_control_plane(name, {"metrics_port": port})
        self.add_scrape_target(name, SCRAPE_JOB, f"127.0.0.1:{port}")
        if wait:
            self.wait_supervisor(name)
        return pid

    def wait_supervisor(self, name: str, timeout: float = 10.0) -> None:
        """Wait until the supervisor wrote its first status; raise if it exited."""
        pid = read_pid(self.pid_file(name, SUPERVISOR))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not read_status(self.state_dir(name)):
            if not is_alive(pid):
                raise ClusterError(
                    f"the control-plane supervisor of {name} exited; see "
                    f"{self.log_file(name, SUPERVISOR)}"
                )
            time.sleep(0.05)

    def stop_supervisor(self, name: str) -> bool:
        return stop_pid_file(self.pid_file(name, SUPERVISOR), SUPERVISOR)

    def supervisor_status(self, name: str) -> dict[str, Any]:
        """What the supervisor last wrote: restarts, OOM kills and cgroup usage."""
        return read_status(self.state_dir(name))

    def restarts(self, name: str, component: str) -> int:
        """How many times the supervisor restarted ``component`` (an OOM kill, a crash, a
        failed liveness probe) since the cluster was created."""
        record = (self.supervisor_status(name).get("components") or {}).get(component) or {}
        return int(record.get("restarts", 0))

    def reset_restart_backoff(self, name: str, component: str) -> None:
        """Forget ``component``'s crash-loop history: its next exit waits 10 s again, and a
        back-off it waits out now ends (see :func:`request_backoff_reset`)."""
        request_backoff_reset(self.state_dir(name), component)

    def control_plane_usage(self, name: str) -> dict[str, Any]:
        """The control plane's cgroup now (memory, peak, limit, CPU seconds and quota, OOM
        kills) and each component's restarts and last exit, as the supervisor last wrote
        them: ``{"size", "usage", "components"}``."""
        status = self.supervisor_status(name)
        return {
            "size": self.control_plane_info(name),
            "usage": status.get("usage"),
            "components": status.get("components") or {},
        }

    def hold(self, name: str, component: str) -> None:
        """Mark ``component`` as stopped on purpose: the supervisor does not restart it.

        Any component, supervised or not: the supervisor does not run ``kwokctl start
        cluster`` (which starts every stopped component) while one is held down.
        """
        path = hold_file(self.state_dir(name), component)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()

    def release(self, name: str, component: str) -> None:
        """Let the supervisor restart ``component`` again when it exits."""
        hold_file(self.state_dir(name), component).unlink(missing_ok=True)

    def control_plane_size(self, name: str) -> tuple[float, int]:
        """The control plane's cgroup limits: (cores, bytes); (0, 0) without a cgroup."""
        info = self.control_plane_info(name)
        if not info.get("limited"):
            return 0.0, 0
        return float(info.get("cpus") or 0), int(info.get("memory_bytes") or 0)

    def resize_control_plane(self, name: str, cpus: float, memory: int) -> dict[str, Any]:
        """Set new limits on the control plane's cgroup (a bigger control-plane machine).

        Returns the previous and new size. Raises when the cluster's control
        plane is not limited by a cgroup.
        """
        info = self.control_plane_info(name)
        if not info.get("limited"):
            raise ClusterError(
                f"the control plane of {name} has no cgroup to resize (cgroups unavailable "
                "when it was created)"
            )
        try:
            ControlPlaneCgroup(name).set_limits(cpus, memory)
        except CgroupError as err:
            raise ClusterError(f"could not resize the control plane of {name}: {err}") from err
        before = {"cpus": info.get("cpus"), "memory": info.get("memory")}
        after = {"cpus": cpus, "memory": format_memory(memory), "memory_bytes": memory}
        self._save_control_plane(name, after)
        return {"before": before, "after": {"cpus": cpus, "memory": format_memory(memory)}}

    def remove_control_plane_cgroup(self, name: str) -> None:
        ControlPlaneCgroup(name).remove()
