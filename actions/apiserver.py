"""Control-plane outages: stop, hang and bring back kube-apiserver and etcd.

Each acts through the cluster's provider (:mod:`blackstart.clusters.provider`):
on a local cluster the real processes (SIGTERM/SIGKILL, SIGSTOP/SIGCONT, then
kwokctl starts what is stopped); on a kind cluster the static pods in the
control-plane node. Nodes, CoreDNS and workloads keep running
through the outage, as they do on a real fleet.

Rollbacks: :func:`start_apiserver` undoes both :func:`stop_apiserver` and
:func:`hang_apiserver` and is safe to run when nothing was broken;
:func:`start_etcd` does the same for etcd.
"""

from typing import Any

from chaoslib.exceptions import ActivityFailed
from chaoslib.types import Configuration, Secrets

from blackstart.actions import _components as components
from blackstart.arguments import seconds as _check_seconds
from blackstart.health import apiserver_readyz, wait_until
from blackstart.target import Target, cluster_provider, resolve_target

__all__ = [
    "hang_apiserver",
    "hang_etcd",
    "resume_apiserver",
    "resume_etcd",
    "start_apiserver",
    "start_etcd",
    "stop_apiserver",
    "stop_etcd",
]

APISERVER = "kube-apiserver"
ETCD = "etcd"


def _wait_ready(target: Target, timeout_s: float) -> float:
    api = target.api()
    ready, waited = wait_until(lambda: apiserver_readyz(api, 2.0)[0], timeout_s, 0.5)
    if not ready:
        detail = apiserver_readyz(api, 2.0)[1]
        raise ActivityFailed(
            f"kube-apiserver of {target.describe()} was not ready {timeout_s:g} s after it was "
            f"restored (last /readyz: {detail}); check `blackstart cluster status`"
        )
    return round(waited, 3)


def stop_apiserver(
    grace_s: float = 5.0, configuration: Configuration = None, secrets: Secrets = None
) -> dict[str, Any]:
    """Stop kube-apiserver: nothing can read or change the cluster until it is started again.

    ``grace_s``: seconds between SIGTERM and SIGKILL (local provider).
    Returns ``{"cluster", "component", "pid", "stopped_at"}``. Raises when the
    API server was not running (the fault would be a no-op). On kind, parks the
    static-pod manifest (kubelet stops the pod within about 20 s).
    Roll back with ``start_apiserver``.
    """
    _check_seconds("grace_s", grace_s, 0, 60)
    target = resolve_target(configuration, secrets)
    provider = cluster_provider(target, "stop_apiserver")
    return components.stop(provider, str(target.cluster), APISERVER, grace_s)


def hang_apiserver(configuration: Configuration = None, secrets: Secrets = None) -> dict[str, Any]:
    """Freeze kube-apiserver (SIGSTOP): its port stays open but no request gets an answer.

    Clients hang until their own timeouts, which is harder on them than a
    refused connection. Local provider only. Returns ``{"cluster",
    "component", "pid", "hung_at"}``. Roll back with ``resume_apiserver`` or
    ``start_apiserver``.
    """
    target = resolve_target(configuration, secrets)
    provider = cluster_provider(target, "hang_apiserver")
    return components.hang(provider, str(target.cluster), APISERVER)


def resume_apiserver(
    timeout_s: float = 60.0, configuration: Configuration = None, secrets: Secrets = None
) -> dict[str, Any]:
    """Let a hung kube-apiserver run again (SIGCONT) and wait until ``/readyz`` answers.

    Safe when it was not hung. Returns ``{"cluster", "done", "ready_after_s"}``.
    Raises when it is not ready within ``timeout_s`` seconds.
    """
    return start_apiserver(timeout_s, configuration, secrets)


def start_apiserver(
    timeout_s: float = 90.0, configuration: Configuration = None, secrets: Secrets = None
) -> dict[str, Any]:
    """Bring kube-apiserver back (resume it if hung, start it if stopped) and wait until ready.

    The rollback of ``stop_apiserver`` and ``hang_apiserver``; safe to run when
    nothing was broken. Returns ``{"cluster", "done", "ready_after_s",
    "controllers_restarted"}`` where ``done`` is ``resumed``, ``started`` or
    ``already running``; kube-controller-manager and kube-scheduler, which exit
    when an outage outlasts their leader lease, are started again as a node's
    kubelet would (``controllers_restarted``); on the local provider the API
    server's crash-loop back-off starts over. Raises when
    ``/readyz`` does not answer within ``timeout_s`` seconds.
    """
    _check_seconds("timeout_s", timeout_s, 1, 600)
    target = resolve_target(configuration, secrets)
    provider = cluster_provider(target, "start_apiserver")
    done = components.ensure_running(provider, str(target.cluster), APISERVER)
    ready_after = _wait_ready(target, timeout_s)
    # the next experiment's first OOM kill waits kubelet's first 10 s, not what this one's
    # crash loop ran up
    provider.reset_restart_backoff(str(target.cluster), APISERVER)
    restarted = components.restart_exited_controllers(provider, str(target.cluster))
    return {
        "cluster": target.cluster,
        "done": done,
        "ready_after_s": ready_after,
        "controllers_restarted": restarted,
    }


def stop_etcd(
    grace_s: float = 5.0, configuration: Configuration = None, secrets: Secrets = None
) -> dict[str, Any]:
    """Stop etcd: the API server stays up but every read and write that needs storage fails.

    Local provider only. Returns ``{"cluster", "component", "pid",
    "stopped_at"}``; raises when etcd was not running. Roll back with ``start_etcd``.
    """
    _check_seconds("grace_s", grace_s, 0, 60)
    target = resolve_target(configuration, secrets)
    provider = cluster_provider(target, "stop_etcd")
    return components.stop(provider, str(target.cluster), ETCD, grace_s)


def hang_etcd(configuration: Configuration = None, secrets: Secrets = None) -> dict[str, Any]:
    """Freeze etcd (SIGSTOP): requests that need storage hang until the API server times out.

    Local provider only. Roll back with ``resume_etcd`` or ``start_etcd``.
    """
    target = resolve_target(configuration, secrets)
    provider = cluster_provider(target, "hang_etcd")
    return components.hang(provider, str(target.cluster), ETCD)


def resume_etcd(
    timeout_s: float = 60.0, configuration: Configuration = None, secrets: Secrets = None
) -> dict[str, Any]:
    """Let a hung etcd run again and wait until the API server is ready. Safe when not hung."""
    return start_etcd(timeout_s, configuration, secrets)


def start_etcd(
    timeout_s: float = 90.0, configuration: Configuration = None, secrets: Secrets = None
) -> dict[str, Any]:
    """Bring etcd back (resume if hung, start if stopped) and wait until the API server is ready.

    The rollback of ``stop_etcd`` and ``hang_etcd``; safe when nothing was
    broken. Returns ``{"cluster", "done", "ready_after_s"}``.
    """
    _check_seconds("timeout_s", timeout_s, 1, 600)
    target = resolve_target(configuration, secrets)
    provider = cluster_provider(target, "start_etcd")
    done = components.ensure_running(provider, str(target.cluster), ETCD)
    # the API server may have given up on etcd while it was gone: make sure it runs too
    components.ensure_running(provider, str(target.cluster), APISERVER)
    ready_after = _wait_ready(target, timeout_s)
    return {
        "cluster": target.cluster,
        "done": done,
        "ready_after_s": ready_after,
        "controllers_restarted": components.restart_exited_controllers(
            provider, str(target.cluster)
        ),
    }
