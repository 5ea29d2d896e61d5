"""Node heartbeat loss: stop the kwok controller, so no simulated node renews its lease.

KWOK's controller plays the kubelet of every simulated node. With it stopped,
nodes stop heartbeating and kube-controller-manager marks them NotReady
(status Unknown) after its node-monitor grace period (40-50 s), then taints
them for eviction, as it would after a network partition or a kubelet crash
across the fleet. Local provider only. :func:`start_kwok_controller` is the
rollback.
"""

from typing import Any

from chaoslib.exceptions import ActivityFailed
from chaoslib.types import Configuration, Secrets
from kubernetes import client

from blackstart.actions import _components as components
from blackstart.clusters.local.kwok_nodes import node_is_ready
from blackstart.health import utc_now_iso, wait_until
from blackstart.target import cluster_provider, resolve_target

__all__ = ["start_kwok_controller", "stop_kwok_controller"]

KWOK_CONTROLLER = "kwok-controller"


def stop_kwok_controller(
    wait_not_ready_s: float = 0.0, configuration: Configuration = None, secrets: Secrets = None
) -> dict[str, Any]:
    """Stop the kwok controller: every simulated node stops heartbeating.

    ``wait_not_ready_s``: when above 0, wait up to this many seconds until at
    least one node reports NotReady, and raise if none does (0 returns at
    once). Returns ``{"cluster", "component", "pid", "stopped_at",
    "not_ready_after_s"}``. Raises when the kwok controller was not running.
    Roll back with ``start_kwok_controller``.
    """
    if (
        isinstance(wait_not_ready_s, bool)
        or not isinstance(wait_not_ready_s, int | float)
        or not 0 <= wait_not_ready_s <= 600
    ):
        raise ActivityFailed(f"wait_not_ready_s must be 0-600 seconds, not {wait_not_ready_s!r}")
    target = resolve_target(configuration, secrets)
    provider = cluster_provider(target, "stop_kwok_controller")
    result = components.stop(provider, str(target.cluster), KWOK_CONTROLLER, 5.0)
    result["not_ready_after_s"] = None
    if wait_not_ready_s > 0:
        core = client.CoreV1Api(target.api())

        def some_not_ready() -> bool:
            return any(not node_is_ready(n) for n in core.list_node().items)

        seen, waited = wait_until(some_not_ready, wait_not_ready_s, 1.0)
        if not seen:
            raise ActivityFailed(
                f"no node went NotReady within {wait_not_ready_s:g} s of stopping the kwok "
                "controller; kube-controller-manager's node-monitor grace period may be longer"
            )
        result["not_ready_after_s"] = round(waited, 2)
    return result


def start_kwok_controller(
    timeout_s: float = 120.0, configuration: Configuration = None, secrets: Secrets = None
) -> dict[str, Any]:
    """Start the kwok controller again and wait until every node is Ready (the rollback).

    Safe when it runs. Returns ``{"cluster", "done", "ready_after_s",
    "nodes"}``; raises when some node is still NotReady after ``timeout_s``.
    """
    if (
        isinstance(timeout_s, bool)
        or not isinstance(timeout_s, int | float)
        or not 1 <= timeout_s <= 900
    ):
        raise ActivityFailed(f"timeout_s must be 1-900 seconds, not {timeout_s!r}")
    target = resolve_target(configuration, secrets)
    provider = cluster_provider(target, "start_kwok_controller")
    done = components.ensure_running(provider, str(target.cluster), KWOK_CONTROLLER)
    core = client.CoreV1Api(target.api())

    def not_ready() -> list[str]:
        listed: list[Any] = core.list_node().items
        return [str(n.metadata.name) for n in listed if not node_is_ready(n)]

    (_, waited) = wait_until(lambda: not not_ready(), timeout_s, 1.0)
    left = not_ready()
    if left:
        raise ActivityFailed(
            f"{len(left)} node(s) still NotReady {timeout_s:g} s after the kwok controller "
            f"started: {', '.join(left[:10])}"
        )
    return {
        "cluster": target.cluster,
        "done": done,
        "ready_after_s": round(waited, 2),
        "at": utc_now_iso(),
    }
