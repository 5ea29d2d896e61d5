"""Fleet probes: how much of the fleet is Ready, cordoned and schedulable; is GPU work running.

Nodes are counted from the API (one LIST of nodes per call, as the admin).
A node is *schedulable* when it is Ready, not cordoned and carries no
``NoSchedule``/``NoExecute`` taint; its GPUs count towards the schedulable
capacity. Warm standbys (label ``blackstart.dev/standby=true``) start cordoned:
they add capacity only once promoted.
"""

import math
import threading
import time
from typing import Any, cast

from chaoslib.exceptions import ActivityFailed
from chaoslib.types import Configuration, Secrets
from kubernetes import client

from blackstart.arguments import seconds
from blackstart.clusters.local.kwok_nodes import node_is_ready
from blackstart.clusters.spec import GPU_RESOURCE
from blackstart.names import STANDBY_LABEL
from blackstart.target import resolve_target

__all__ = [
    "gpu_deployments_available",
    "gpu_pods_running",
    "gpu_workload_running_ratio",
    "lowest_schedulable_share",
    "nodes_cordoned",
    "nodes_ready_ratio",
    "schedulable_gpu_capacity",
    "watch_schedulable_share",
]


def _nodes(configuration: Configuration, secrets: Secrets, label_selector: str) -> list[Any]:
    core = client.CoreV1Api(resolve_target(configuration, secrets).api())
    return list(core.list_node(label_selector=label_selector or None).items)


def node_schedulable(node: Any) -> bool:
    """Ready, not cordoned, no NoSchedule/NoExecute taint."""
    if node.spec and node.spec.unschedulable:
        return False
    for taint in (node.spec.taints or []) if node.spec else []:
        if taint.effect in ("NoSchedule", "NoExecute"):
            return False
    return node_is_ready(node)


def node_gpus(node: Any) -> int:
    allocatable = (node.status.allocatable or {}) if node.status else {}
    try:
        return int(str(allocatable.get(GPU_RESOURCE, "0")))
    except ValueError:
        return 0


def nodes_ready_ratio(
    label_selector: str = "", configuration: Configuration = None, secrets: Secrets = None
) -> float:
    """Share (0-1) of the nodes matching ``label_selector`` (default all) that are Ready.

    Raises when no node matches.
    """
    nodes = _nodes(configuration, secrets, label_selector)
    if not nodes:
        raise ActivityFailed(f"no node matches label_selector {label_selector!r}")
    return round(sum(1 for n in nodes if node_is_ready(n)) / len(nodes), 4)


def nodes_cordoned(
    label_selector: str = "",
    include_standby: bool = False,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> int:
    """How many nodes matching ``label_selector`` are cordoned (``spec.unschedulable``).

    Warm standbys, cordoned by design, are left out unless ``include_standby``.
    """
    nodes = _nodes(configuration, secrets, label_selector)
    return sum(
        1
        for n in nodes
        if n.spec
        and n.spec.unschedulable
        and (include_standby or (n.metadata.labels or {}).get(STANDBY_LABEL) != "true")
    )


def schedulable_gpu_capacity(
    label_selector: str = "",
    at_least: int = 0,
    within_s: float = 0.0,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> int:
    """GPUs (``nvidia.com/gpu`` allocatable) on schedulable nodes: what new GPU work can use.

    With the default fleet, 48 GPU nodes x 8 = 384 before any fault. With
    ``at_least``, waits up to ``within_s`` seconds for the capacity to reach it
    (e.g. "back to 384 within 30 s"; the node controller lifts a cordoned
    node's ``unschedulable`` taint a moment after it is uncordoned) and
    returns the last count.
    """
    if isinstance(at_least, bool) or not isinstance(at_least, int) or at_least < 0:
        raise ActivityFailed(f"at_least must be a whole number of GPUs, not {at_least!r}")
    if (
        isinstance(within_s, bool)
        or not isinstance(within_s, int | float)
        or not 0 <= within_s <= 600
    ):
        raise ActivityFailed(f"within_s must be 0-600 seconds, not {within_s!r}")
    deadline = time.monotonic() + within_s
    while True:
        nodes = _nodes(configuration, secrets, label_selector)
        gpus = sum(node_gpus(n) for n in nodes if node_schedulable(n))
        if gpus >= at_least or time.monotonic() >= deadline:
            return gpus
        time.sleep(0.5)


def _gpu_pods(
    configuration: Configuration, secrets: Secrets, namespace: str, label_selector: str
) -> list[Any]:
    core = client.CoreV1Api(resolve_target(configuration, secrets).api())
    pods: list[Any]
    if namespace:
        pods = core.list_namespaced_pod(namespace, label_selector=label_selector or None).items
    else:
        pods = core.list_pod_for_all_namespaces(label_selector=label_selector or None).items

    def wants_gpu(pod: Any) -> bool:
        for container in pod.spec.containers or []:
            resources = container.resources
            limits = (resources.limits or {}) if resources else {}
            requests = (resources.requests or {}) if resources else {}
            if GPU_RESOURCE in limits or GPU_RESOURCE in requests:
                return True
        return False

    return [p for p in pods if wants_gpu(p) and not cast(Any, p).metadata.deletion_timestamp]


def gpu_pods_running(
    namespace: str = "",
    label_selector: str = "",
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> int:
    """How many pods that request ``nvidia.com/gpu`` are Running (and not being deleted)."""
    pods = _gpu_pods(configuration, secrets, namespace, label_selector)
    return sum(1 for p in pods if p.status and p.status.phase == "Running")


def gpu_workload_running_ratio(
    expected: int,
    namespace: str = "",
    label_selector: str = "",
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> float:
    """Running GPU pods divided by ``expected`` (capped at 1.0): 1.0 when all GPU work runs."""
    if isinstance(expected, bool) or not isinstance(expected, int) or expected < 1:
        raise ActivityFailed(
            f"expected must be a whole number of pods, at least 1, not {expected!r}"
        )
    running = gpu_pods_running(namespace, label_selector, configuration, secrets)
    return round(min(1.0, running / expected), 4)


_observed: dict[str, list[float]] = {}  # label selector -> shares sampled in this run
_observed_lock = threading.Lock()


def _watch(
    duration_s: Any,
    label_selector: str,
    interval_s: Any,
    configuration: Configuration,
    secrets: Secrets,
    settled_s: Any = 0.0,
) -> list[float]:
    """Sample the schedulable share every ``interval_s`` for ``duration_s`` (or until it
    has :func:`_settled` after a dip, with ``settled_s``); remember it."""
    for key, value in (("duration_s", duration_s), ("interval_s", interval_s),
                       ("settled_s", settled_s)):  # fmt: skip
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ActivityFailed(f"{key} must be seconds, not {value!r}")
    if not 0 <= duration_s <= 600 or not 0.1 <= interval_s <= 60 or not 0 <= settled_s <= 600:
        raise ActivityFailed("duration_s must be 0-600 s, interval_s 0.1-60 s, settled_s 0-600 s")
    deadline = time.monotonic() + duration_s
    seen: list[float] = []
    while True:
        nodes = _nodes(configuration, secrets, label_selector)
        if not nodes:
            raise ActivityFailed(f"no node matches label_selector {label_selector!r}")
        share = sum(1 for n in nodes if node_schedulable(n)) / len(nodes)
        seen.append(share)
        with _observed_lock:
            _observed.setdefault(label_selector, []).append(share)
        if time.monotonic() >= deadline or _settled(seen, interval_s, settled_s):
            return seen
        time.sleep(interval_s)


def watch_schedulable_share(
    duration_s: float = 60.0,
    label_selector: str = "blackstart.dev/role=gpu",
    interval_s: float = 0.5,
    settled_s: float = 0.0,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> dict[str, Any]:
    """Watch the share of matching nodes that are schedulable for ``duration_s`` seconds.

    Run it as a background probe of the method (``"background": true``) while a
    fault takes nodes out: what it sees counts in ``lowest_schedulable_share``
    for the rest of the run. ``settled_s`` (0: off) ends the watch early once
    the share has dipped and then been whole again for that many seconds in a
    row (the remediation wave is over; keep it longer than the gap between two
    waves). Returns ``{"lowest", "samples", "seconds", "settled"}``.
    """
    started = time.monotonic()
    seen = _watch(duration_s, label_selector, interval_s, configuration, secrets, settled_s)
    whole_at_end = _settled(seen, float(interval_s), float(settled_s))
    return {
        "lowest": round(min(seen), 4),
        "samples": len(seen),
        "seconds": round(time.monotonic() - started, 3),
        "settled": whole_at_end,
    }


def _settled(seen: list[float], interval_s: float, settled_s: float) -> bool:
    """True when the samples dipped below whole and the last ``settled_s`` seconds of them
    were whole again."""
    if settled_s <= 0 or not seen or min(seen) >= 1.0:
        return False
    needed = max(1, math.ceil(settled_s / interval_s))
    tail = seen[-needed:]
    return len(tail) == needed and all(share >= 1.0 for share in tail)


def lowest_schedulable_share(
    duration_s: float = 10.0,
    label_selector: str = "blackstart.dev/role=gpu",
    interval_s: float = 0.5,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> float:
    """The lowest share (0-1) of matching nodes that were schedulable during this run.

    Watches for ``duration_s`` itself and also counts what any
    ``watch_schedulable_share`` of this run saw: the floor the fleet kept while a
    remediation wave was taking nodes out. Raises when no node matches.
    """
    _watch(duration_s, label_selector, interval_s, configuration, secrets)
    with _observed_lock:
        return round(min(_observed[label_selector]), 4)


def gpu_deployments_available(
    namespace: str = "",
    within_s: float = 0.0,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> bool:
    """True when every Deployment whose pods request GPUs has all its replicas available.

    ``namespace``: only there (default all). ``within_s``: wait up to that long
    for it (a pod evicted by a drain is scheduled again only once its node is
    uncordoned, then its container starts: seconds on a real node). True when
    there is no such Deployment, so it holds before a workload exists and
    after it is gone.
    """
    wait = seconds("within_s", within_s, 0, 600)
    apps = client.AppsV1Api(resolve_target(configuration, secrets).api())
    deadline = time.monotonic() + wait
    while True:
        available = _gpu_deployments_available(apps, namespace)
        if available or time.monotonic() >= deadline:
            return available
        time.sleep(1.0)


def _gpu_deployments_available(apps: client.AppsV1Api, namespace: str) -> bool:
    deployments: list[Any]
    if namespace:
        deployments = apps.list_namespaced_deployment(namespace).items
    else:
        deployments = apps.list_deployment_for_all_namespaces().items
    for deployment in deployments:
        containers = cast(Any, deployment).spec.template.spec.containers or []
        wants_gpu = any(
            GPU_RESOURCE in ((c.resources.limits or {}) if c.resources else {})
            or GPU_RESOURCE in ((c.resources.requests or {}) if c.resources else {})
            for c in containers
        )
        if not wants_gpu:
            continue
        wanted = deployment.spec.replicas if deployment.spec.replicas is not None else 1
        available = (deployment.status.available_replicas or 0) if deployment.status else 0
        if available < wanted:
            return False
    return True
