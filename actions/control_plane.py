"""Control-plane size: the machine the API server runs on, and growing it as the incident's
responders did.

On a local cluster kube-apiserver and etcd run in a cgroup sized by the
spec's ``controlPlane`` (see ``blackstart cluster status``); on kind the
control-plane node container is that machine (unlimited unless the spec sizes
it). :func:`limit_control_plane` sizes it for an experiment, on either
provider, live. :func:`grow_control_plane` (local) raises its memory and CPU
limits and restarts kube-apiserver on the bigger machine (a restart also ends
a crash-loop back-off). :func:`restore_control_plane_size` puts the size back
(the rollback of both) without a restart.
"""

import time
from typing import Any, Protocol

from chaoslib.exceptions import ActivityFailed
from chaoslib.types import Configuration, Secrets

from blackstart.actions import _components as components
from blackstart.actions._checks import flag, number
from blackstart.clusters.provider import ClusterError, ClusterProvider
from blackstart.clusters.spec import memory_bytes
from blackstart.health import apiserver_readyz, utc_now_iso, wait_until
from blackstart.target import Target, cluster_provider, local_provider, resolve_target

__all__ = ["grow_control_plane", "limit_control_plane", "restore_control_plane_size"]

APISERVER = "kube-apiserver"
MIN_MEMORY = 256 << 20  # less and kube-apiserver and etcd cannot start


class _Resizable(Protocol):
    def resize_control_plane(self, name: str, cpus: float, memory: int) -> dict[str, Any]: ...


_original: dict[str, tuple[float, int]] = {}  # cluster -> size before the first change


def limit_control_plane(
    cpus: float = 0.0,
    memory: str = "",
    restart: bool = False,
    timeout_s: float = 180.0,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> dict[str, Any]:
    """Size the control plane's machine for this experiment: ``cpus`` cores and ``memory``.

    A real control plane runs on a machine of a given size, which is what a storm
    fills. On kind the control-plane node container (kube-apiserver, etcd, the
    controllers and kubelet together) is limited live (``docker update``); on a
    local cluster the control plane's cgroup. ``cpus`` 0 with ``memory`` ""
    (the defaults) keeps the size the cluster has, so one experiment can size
    kind's unlimited control plane and leave a local one as its spec made it.

    The limit applies live: what the running components hold counts against
    it. A kube-apiserver that an earlier storm grew holds more than a fresh
    one (Go gives freed memory back slowly), so a limit set right after a
    storm leaves less room: on kind, telemetry-storm-apf run right after
    telemetry-storm collapsed with APF rejecting 313 of 318 LISTs, and
    completed on a fresh API server. With ``restart`` kube-apiserver starts
    again on the new size, as on a resized machine, and the action waits up
    to ``timeout_s`` for ``/readyz``; on kind that parks its static pod (about
    40 s), long enough for kube-controller-manager and kube-scheduler to lose
    their Leases and exit, and kubelet starts them again only after its crash
    back-off, so the default is not to restart.

    Returns ``{"cluster", "changed", "before", "after", "restarted",
    "ready_after_s"}``. Raises when only one of cpus and memory is given, the
    limits cannot be set, or the API server is not ready in time. Roll back
    with ``restore_control_plane_size``.
    """
    number("cpus", cpus, 0, 256)
    number("timeout_s", timeout_s, 1, 600)
    flag("restart", restart)
    if bool(cpus) != bool(memory):
        raise ActivityFailed(
            f"give both cpus and memory to size the control plane, or neither to keep its "
            f"size (cpus={cpus!r}, memory={memory!r})"
        )
    try:
        size = memory_bytes(str(memory)) if memory else 0
    except ValueError as err:
        raise ActivityFailed(f"memory: {err}") from None
    if memory and size < MIN_MEMORY:
        raise ActivityFailed(f"memory: {memory!r} is less than a control plane needs (256Mi)")
    target = resolve_target(configuration, secrets)
    cluster = str(target.cluster)
    if not size:
        return {"cluster": cluster, "changed": False, "before": None, "after": None,
                "restarted": False, "ready_after_s": None}  # fmt: skip
    provider = cluster_provider(target, "limit_control_plane")
    result = _resize(provider, cluster, float(cpus), size)
    ready_after = _restart_apiserver(provider, target, timeout_s) if restart else None
    if restart and ready_after is None:
        raise ActivityFailed(
            f"kube-apiserver of {cluster} was not ready within {timeout_s:g} s of its restart "
            f"on the new size ({result['after']})"
        )
    return {
        "cluster": cluster,
        "changed": True,
        **result,
        "restarted": restart,
        "ready_after_s": ready_after,
    }


def grow_control_plane(
    cpus: float = 2.0,
    memory: str = "4Gi",
    restart: bool = True,
    timeout_s: float = 120.0,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> dict[str, Any]:
    """Give the control plane a bigger machine: ``cpus`` cores and ``memory`` (e.g. ``4Gi``).

    Sets the new limits on the control plane's cgroup; with ``restart``
    (default) kube-apiserver is restarted at once on it, as a responder
    resizing an API server VM does, and the action waits (up to ``timeout_s``)
    for ``/readyz``. Returns ``{"cluster", "before", "after", "restarted",
    "ready_after_s", "grown_at"}``; ``ready_after_s`` is null when it was not
    ready in time (a storm that goes on can keep even a grown API server
    busy: measure recovery with ``seconds_until_recovered``). Raises when the
    cluster's control plane has no cgroup or the limits cannot be set. Roll
    back with ``restore_control_plane_size``.
    """
    number("cpus", cpus, 0.1, 256)
    number("timeout_s", timeout_s, 1, 600)
    flag("restart", restart)
    try:
        size = memory_bytes(str(memory))
    except ValueError as err:
        raise ActivityFailed(f"memory: {err}") from None
    target = resolve_target(configuration, secrets)
    provider = local_provider(target, "grow_control_plane")
    cluster = str(target.cluster)
    result = _resize(provider, cluster, float(cpus), size)
    # not ready under a storm that goes on is the finding, not a failed injection
    ready_after = _restart_apiserver(provider, target, timeout_s) if restart else None
    return {
        "cluster": cluster,
        **result,
        "restarted": restart,
        "ready_after_s": ready_after,
        "grown_at": utc_now_iso(),
    }


def _resize(provider: ClusterProvider, cluster: str, cpus: float, memory: int) -> dict[str, Any]:
    """Resize, keeping the size before the first change for the rollback."""
    before = provider.control_plane_size(cluster)
    try:
        result = provider.resize_control_plane(cluster, cpus, memory)
    except ClusterError as err:
        raise ActivityFailed(str(err)) from err
    _original.setdefault(cluster, before)
    return result


def _restart_apiserver(provider: ClusterProvider, target: Target, timeout_s: float) -> float | None:
    """Restart kube-apiserver on the control plane's new size, as resizing its machine does;
    the seconds until ``/readyz`` answered, None when it did not within ``timeout_s``."""
    cluster = str(target.cluster)
    started = time.monotonic()
    if components.component_state(provider, cluster, APISERVER) != "stopped":
        components.stop(provider, cluster, APISERVER, grace=5.0)
    components.ensure_running(provider, cluster, APISERVER)
    admin = target.api(1)
    ready, _ = wait_until(lambda: apiserver_readyz(admin, 2.0)[0], float(timeout_s), 0.5)
    return round(time.monotonic() - started, 3) if ready else None


def restore_control_plane_size(
    configuration: Configuration = None, secrets: Secrets = None
) -> dict[str, Any]:
    """Put the control plane's limits back to what they were before ``grow_control_plane``
    or ``limit_control_plane``.

    No restart: the running API server keeps what it holds and the next
    restart starts on the original size; only when it holds more memory than
    the original limit is it restarted into it (local). On kind a node that
    was unlimited is unlimited again. Safe when nothing was changed (returns
    ``{"restored": false}``). Returns ``{"cluster", "restored", "size",
    "restarted"}``.
    """
    target = resolve_target(configuration, secrets)
    cluster = str(target.cluster)
    original = _original.get(cluster)
    if original is None:
        return {"cluster": cluster, "restored": False, "size": None}
    provider = cluster_provider(target, "restore_control_plane_size")
    restarted = False
    try:
        result = provider.resize_control_plane(cluster, *original)
    except ClusterError as err:
        if target.provider != "local":
            raise ActivityFailed(str(err)) from err
        # the API server holds more than the old limit (the kernel refuses to shrink below
        # what it cannot reclaim): restart it into the original size
        restarted = True
        components.stop(provider, cluster, APISERVER, grace=5.0)
        try:
            result = resize_once_freed(provider, cluster, original)
        except ClusterError as err:
            raise ActivityFailed(str(err)) from err
        finally:
            components.ensure_running(provider, cluster, APISERVER)
        admin = target.api(1)
        wait_until(lambda: apiserver_readyz(admin, 2.0)[0], 90.0, 0.5)
    _original.pop(cluster, None)
    return {"cluster": cluster, "restored": True, "size": result["after"], "restarted": restarted}


def resize_once_freed(
    provider: _Resizable,
    cluster: str,
    size: tuple[float, int],
    timeout_s: float = 20.0,
    every_s: float = 0.5,
) -> dict[str, Any]:
    """Resize the control plane to ``size`` (cores, bytes), trying again for ``timeout_s``
    while the kernel refuses to shrink the cgroup below what it still holds.

    A killed kube-apiserver gives its memory back only once its last thread has exited,
    which can be after its pid is gone (the thread-group leader is reaped first): a
    resize right after the stop can meet the old usage (EBUSY).
    """
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return provider.resize_control_plane(cluster, size[0], size[1])
        except ClusterError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(every_s)
