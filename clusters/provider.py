"""The one interface every cluster provider implements (local/KWOK, kind).

Actions, probes, controls and the game-day runner talk to a cluster through
these operations only, so none of them special-cases a provider class. A
provider is found from a cluster's saved state with :func:`provider_for`.

Every operation takes the cluster's name first; components are named as the
kubelet names the static pods (``kube-apiserver``, ``etcd``,
``kube-controller-manager``, ``kube-scheduler``) plus ``coredns``.
"""

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from blackstart.clusters.spec import ClusterSpec
from blackstart.clusters.state import ClusterState

Progress = Callable[[str], None]

CONTROL_PLANE_COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")
# Control-plane processes that exit when they lose their leader lease or find the API
# server unhealthy when they start; a real node's kubelet restarts them.
LEADER_ELECTED = ("kube-controller-manager", "kube-scheduler")


class ClusterError(RuntimeError):
    """The cluster could not be created, found or changed; the message says why."""


@dataclass(frozen=True)
class ComponentStatus:
    """One part of a cluster as ``cluster status`` shows it."""

    name: str
    pid: int | None
    endpoint: str
    state: str  # running | hung | stopped
    healthy: bool
    detail: str = ""
    restarts: int = 0


@runtime_checkable
class ClusterProvider(Protocol):
    """What blackstart needs from a cluster provider."""

    #: ``local`` or ``kind``: what ``ClusterState.provider`` records.
    name: str

    def up(self, spec: ClusterSpec, name: str) -> ClusterState:
        """Create cluster ``name`` from ``spec``, wait until it is usable, save its state."""
        ...

    def down(self, name: str) -> list[str]:
        """Remove cluster ``name`` and everything it started; return what was stopped."""
        ...

    def status(self, name: str) -> list[ComponentStatus]:
        """Each component of cluster ``name`` with its state and health."""
        ...

    def kubeconfig(self, name: str) -> Path:
        """The admin kubeconfig of cluster ``name``."""
        ...

    def component_state(self, name: str, component: str) -> str:
        """``running``, ``hung`` (frozen) or ``stopped``."""
        ...

    def component_pid(self, name: str, component: str) -> int | None:
        """The host pid of ``component``'s main process, None when it does not run."""
        ...

    def stop_component(self, name: str, component: str, grace: float = 5.0) -> bool:
        """Stop one control-plane component or CoreDNS; False when it was not running."""
        ...

    def start_component(self, name: str, component: str) -> None:
        """Start a stopped component again (nothing happens when it runs); raise when it won't."""
        ...

    def hang_component(self, name: str, component: str) -> int:
        """Freeze one component so its port stays open and nothing answers; returns its pid."""
        ...

    def resume_component(self, name: str, component: str) -> int:
        """Resume a component frozen by :meth:`hang_component`; returns its pid."""
        ...

    def restart_coredns(self, name: str) -> None:
        """Restart the cluster's CoreDNS (its process, or its pods' containers), as a crash or
        an OOM kill would; works while the API server is down (the incident's restart)."""
        ...

    def reboot_node(self, name: str, node: str) -> str:
        """Reboot ``node``: it goes NotReady and comes back with a new boot id, returned."""
        ...

    def kernel_log(self, name: str, node: str) -> Path:
        """The host file that stands for ``node``'s kernel log (``/dev/kmsg`` on a real node)."""
        ...

    def restarts(self, name: str, component: str) -> int:
        """How many times ``component`` was restarted after it exited (an OOM kill, a crash,
        a failed liveness probe), as the local supervisor or a node's kubelet counts them."""
        ...

    def reset_restart_backoff(self, name: str, component: str) -> None:
        """Forget ``component``'s crash-loop back-off, as deleting a crash-looping pod does:
        a fault's rollback leaves the next experiment a control plane with no such history."""
        ...

    def control_plane_usage(self, name: str) -> dict[str, Any]:
        """What the control plane uses now, within what bounds it: ``{"size": {cpus,
        memory, ...} or {}, "usage": {memory_bytes, memory_peak_bytes, memory_limit_bytes,
        cpu_seconds, cpu_quota, oom_kills, throttled_periods} or None, "components":
        {component: {"restarts", ...}}}``."""
        ...

    def control_plane_size(self, name: str) -> tuple[float, int]:
        """The control plane's machine: (cores, bytes) it may use; (0, 0) when unlimited."""
        ...

    def resize_control_plane(self, name: str, cpus: float, memory: int) -> dict[str, Any]:
        """Give the control plane ``cpus`` cores and ``memory`` bytes, live, without a
        restart; ``{"before": {"cpus", "memory"}, "after": {...}}``. Raises
        :class:`ClusterError` when it cannot (no cgroup; the kernel cannot reclaim what
        the running components hold below the new limit)."""
        ...

    def read_node_files(self, name: str, path: str) -> dict[str, str]:
        """``path`` as each node that has it holds it, by node, read without the API server
        (what pods wrote to a hostPath); simulated nodes have no files."""
        ...
