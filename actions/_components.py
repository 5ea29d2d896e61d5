"""Stop, hang, resume and start one component of a cluster, through its provider.

The actions in ``blackstart.actions`` (API server, etcd, CoreDNS, the kwok
controller) share these steps: ask the provider (:class:`~blackstart.clusters.
provider.ClusterProvider`) what state the component is in, act on it, and say
clearly when it was not in the state the fault needs. Every failure raises
:class:`chaoslib.exceptions.ActivityFailed`.
"""

import logging
from typing import Any

from chaoslib.exceptions import ActivityFailed

from blackstart.clusters.processes import ProcessError
from blackstart.clusters.provider import LEADER_ELECTED, ClusterError, ClusterProvider
from blackstart.health import utc_now_iso

logger = logging.getLogger(__name__)


def component_pid(provider: ClusterProvider, cluster: str, component: str) -> int | None:
    """The pid of ``component`` (None when it does not run)."""
    try:
        return provider.component_pid(cluster, component)
    except ClusterError as err:
        raise ActivityFailed(str(err)) from err


def component_state(provider: ClusterProvider, cluster: str, component: str) -> str:
    """``running``, ``hung`` or ``stopped``."""
    try:
        return provider.component_state(cluster, component)
    except ClusterError as err:
        raise ActivityFailed(str(err)) from err


def stop(provider: ClusterProvider, cluster: str, component: str, grace: float) -> dict[str, Any]:
    """Stop ``component`` (SIGTERM, SIGKILL after ``grace`` s); raise when it was not running."""
    pid = component_pid(provider, cluster, component)
    try:
        stopped = provider.stop_component(cluster, component, grace=grace)
    except (ProcessError, ClusterError) as err:
        raise ActivityFailed(f"could not stop {component} of cluster {cluster}: {err}") from err
    if not stopped:
        raise ActivityFailed(
            f"{component} of cluster {cluster} was not running, so there was nothing to stop; "
            "check `blackstart cluster status` and restore it before injecting this fault"
        )
    return {"cluster": cluster, "component": component, "pid": pid, "stopped_at": utc_now_iso()}


def hang(provider: ClusterProvider, cluster: str, component: str) -> dict[str, Any]:
    """Freeze ``component``; raise when it is not running or already hung."""
    state = component_state(provider, cluster, component)
    if state != "running":
        raise ActivityFailed(
            f"{component} of cluster {cluster} is {state}, not running: cannot hang it"
        )
    try:
        pid = provider.hang_component(cluster, component)
    except (ProcessError, ClusterError) as err:
        raise ActivityFailed(f"could not hang {component} of cluster {cluster}: {err}") from err
    return {"cluster": cluster, "component": component, "pid": pid, "hung_at": utc_now_iso()}


def ensure_running(provider: ClusterProvider, cluster: str, component: str) -> str:
    """Resume ``component`` if hung, start it if stopped. Returns what was done."""
    state = component_state(provider, cluster, component)
    try:
        if state == "hung":
            provider.resume_component(cluster, component)
            return "resumed"
        if state == "stopped":
            provider.start_component(cluster, component)
            return "started"
    except (ProcessError, ClusterError) as err:
        raise ActivityFailed(f"could not start {component} of cluster {cluster}: {err}") from err
    return "already running"


def restart_exited_controllers(provider: ClusterProvider, cluster: str) -> list[str]:
    """Start kube-controller-manager and kube-scheduler if they exited; names what was started.

    A courtesy of the API server's rollback, never its failure: one started while the
    API server is still slow can lose its new Lease at once and exit ("Leaderelection
    lost"), and the cluster restarts it anyway (the local supervisor, a node's kubelet)
    after its back-off. Such a start is logged and left out of the list.
    """
    started = []
    for component in LEADER_ELECTED:
        if component_state(provider, cluster, component) != "running":
            try:
                ensure_running(provider, cluster, component)
            except ActivityFailed as err:
                logger.warning("%s; the cluster starts it again after its back-off", err)
                continue
            started.append(component)
    return started
