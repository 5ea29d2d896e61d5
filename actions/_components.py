"""Stop, hang, resume and start one control-plane process of a local cluster.

The actions in ``blackstart.actions`` (API server, etcd, CoreDNS, the kwok
controller) share these steps: find the process by its pid file, act on it
through :class:`~blackstart.clusters.local.provider.LocalProvider`, and say clearly when
the process was not in the state the fault needs. Every failure raises
:class:`chaoslib.exceptions.ActivityFailed`.
"""

from __future__ import annotations

import time
from typing import Any

from chaoslib.exceptions import ActivityFailed

from blackstart.clusters.local import kwokctl
from blackstart.clusters.local.base import OWN_COMPONENTS
from blackstart.clusters.local.provider import LocalProvider
from blackstart.clusters.processes import ProcessError, is_alive, is_stopped, read_pid
from blackstart.clusters.provider import ClusterError
from blackstart.health import utc_now_iso

KWOKCTL_START_TIMEOUT_S = 60
PORT_RETRIES = 4


def component_pid(provider: LocalProvider, cluster: str, component: str) -> int | None:
    """The pid of ``component`` from its pid file (None when there is none)."""
    if component in OWN_COMPONENTS:
        return read_pid(provider.pid_file(cluster, component))
    try:
        return provider.kwok_cluster(cluster).pid(component)
    except Exception as err:  # unknown component name
        raise ActivityFailed(str(err)) from err


def component_state(provider: LocalProvider, cluster: str, component: str) -> str:
    """``running``, ``hung`` (SIGSTOP) or ``stopped``."""
    pid = component_pid(provider, cluster, component)
    if not is_alive(pid):
        return "stopped"
    return "hung" if is_stopped(pid) else "running"


def stop(provider: LocalProvider, cluster: str, component: str, grace: float) -> dict[str, Any]:
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


def hang(provider: LocalProvider, cluster: str, component: str) -> dict[str, Any]:
    """Freeze ``component`` with SIGSTOP; raise when it is not running or already hung."""
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


def ensure_running(provider: LocalProvider, cluster: str, component: str) -> str:
    """Resume ``component`` if hung, start it if stopped. Returns what was done."""
    state = component_state(provider, cluster, component)
    try:
        if state == "hung":
            provider.resume_component(cluster, component)
            return "resumed"
        if state == "stopped":
            for _attempt in range(PORT_RETRIES):
                _start(provider, cluster, component)
                if is_alive(component_pid(provider, cluster, component)):
                    break
                if "address already in use" not in _log_tail(provider, cluster, component):
                    break
                time.sleep(5.0)  # its port is held by another process: it may let go
            if not is_alive(component_pid(provider, cluster, component)):
                why = _log_tail(provider, cluster, component)
                raise ActivityFailed(f"{component} of cluster {cluster} did not start: {why}")
            return "started"
    except (ProcessError, ClusterError) as err:
        raise ActivityFailed(f"could not start {component} of cluster {cluster}: {err}") from err
    return "already running"


def _start(provider: LocalProvider, cluster: str, component: str) -> None:
    """Start a stopped component; kwokctl's own wait is bounded (its default is 2 minutes)."""
    provider.release(cluster, component)  # its supervisor may restart it again from now on
    if component in OWN_COMPONENTS:
        provider.start_component(cluster, component)
        return
    try:
        kwokctl.run_kwokctl(
            provider.toolchain,
            provider.kwok_workdir(),
            ["start", "cluster", "--name", cluster, "--timeout", f"{KWOKCTL_START_TIMEOUT_S}s"],
            timeout=KWOKCTL_START_TIMEOUT_S + 30,
            preexec=provider.control_plane_preexec(cluster),
        )
    except kwokctl.KwokctlError as err:
        raise ActivityFailed(f"kwokctl could not start {component} of {cluster}: {err}") from err


def _log_tail(provider: LocalProvider, cluster: str, component: str) -> str:
    """Why a component did not start, from the end of its log."""
    if component in OWN_COMPONENTS:
        path = provider.log_file(cluster, component)
    else:
        path = provider.kwok_cluster(cluster).log_file(component)
    try:
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return f"no log at {path}"
    last = lines[-1][-400:] if lines else "(empty log)"
    hint = ""
    if "address already in use" in last:
        hint = (
            "; another process took its port while it was stopped (another cluster on this "
            "machine?): free the port or recreate the cluster"
        )
    return f"{last}{hint} (log {path})"


# Control-plane processes that exit when they lose their leader lease (an API server
# outage longer than their renew deadline); a real node's kubelet restarts them.
LEADER_ELECTED = ("kube-controller-manager", "kube-scheduler")


def restart_exited_controllers(provider: LocalProvider, cluster: str) -> list[str]:
    """Start kube-controller-manager and kube-scheduler if they exited; names what was started."""
    started = []
    for component in LEADER_ELECTED:
        if component_state(provider, cluster, component) != "running":
            ensure_running(provider, cluster, component)
            started.append(component)
    return started
