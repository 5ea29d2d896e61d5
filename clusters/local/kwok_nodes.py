"""Simulated nodes: Node objects that the kwok controller keeps alive.

A node with the annotation ``kwok.x-k8s.io/node: fake`` is managed by the kwok
controller: it takes the node's Lease and heartbeats through it, and runs the
pods the scheduler binds to it. Capacity and labels come from the cluster
spec, so a GPU pool advertises ``nvidia.com/gpu`` like a node running NVIDIA's
device plugin.

A node is created with the status a kubelet posts when it registers Ready
(KWOK's node conditions), so the kwok controller has no status to write
before the node counts: on a 1-CPU API server that write was a third of
bring-up. A node that goes NotReady later (node-not-ready stage, a reboot)
is made Ready again by KWOK's node-initialize stage as before.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Collection
from typing import Any

from kubernetes import client

from blackstart.clusters.local.bulk_create import CreateError, post_all
from blackstart.clusters.spec import NodeSpec

KWOK_NODE_ANNOTATION = "kwok.x-k8s.io/node"
TTL_ANNOTATION = "node.alpha.kubernetes.io/ttl"

# The conditions KWOK's node-initialize stage writes (kwok v0.7.0 pkg/utils/gotpl/funcs.go,
# nodeConditions): (type, status, reason, message).
READY_CONDITIONS = (
    ("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
    (
        "MemoryPressure",
        "False",
        "KubeletHasSufficientMemory",
        "kubelet has sufficient memory available",
    ),
    ("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
    ("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
    ("NetworkUnavailable", "False", "RouteCreated", "RouteController created a route"),
)

# kube-controller-manager's TTL controller (pkg/controller/ttl, ttlBoundaries): the ttl
# annotation it wants on every node while the cluster has at most sizeMax nodes, and above.
_TTL_BY_FLEET_SIZE = ((100, 0), (500, 15), (1000, 30), (2000, 60))
_TTL_ABOVE = 300


def node_ttl_seconds(fleet_size: int) -> int:
    """The ``node.alpha.kubernetes.io/ttl`` kube-controller-manager settles on for a fleet.

    Each node is created with it, so the TTL controller does not patch every
    node of a large fleet once it has grown (10,000 patches at 10,000 nodes).
    """
    for size_max, ttl in _TTL_BY_FLEET_SIZE:
        if fleet_size <= size_max:
            return ttl
    return _TTL_ABOVE


def ready_conditions(now: dt.datetime) -> list[dict[str, str]]:
    """A registering kubelet's node conditions (KWOK's), Ready since ``now``."""
    stamp = now.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return [
        {
            "type": kind,
            "status": status,
            "reason": reason,
            "message": message,
            "lastHeartbeatTime": stamp,
            "lastTransitionTime": stamp,
        }
        for kind, status, reason, message in READY_CONDITIONS
    ]


def node_manifest(
    node: NodeSpec, fleet_size: int = 1, now: dt.datetime | None = None
) -> dict[str, Any]:
    """The Node object for one spec node of a ``fleet_size``-node fleet, registered Ready."""
    labels = {
        **node.labels,
        "type": "kwok",
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        # a kubelet registers the beta labels too; without them kube-controller-manager
        # patches every node to add them
        "beta.kubernetes.io/os": "linux",
        "beta.kubernetes.io/arch": "amd64",
    }
    manifest: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": node.name,
            "labels": labels,
            "annotations": {
                KWOK_NODE_ANNOTATION: "fake",
                TTL_ANNOTATION: str(node_ttl_seconds(fleet_size)),
            },
        },
        "spec": {"unschedulable": node.unschedulable},
        "status": {
            "allocatable": dict(node.capacity),
            "capacity": dict(node.capacity),
            "conditions": ready_conditions(now or dt.datetime.now(dt.UTC)),
            "phase": "Running",
            "nodeInfo": {
                "architecture": "amd64",
                "bootID": str(uuid.uuid5(uuid.NAMESPACE_DNS, f"{node.name}.boot.0")),
                "machineID": uuid.uuid5(uuid.NAMESPACE_DNS, node.name).hex,
                "systemUUID": str(uuid.uuid5(uuid.NAMESPACE_DNS, node.name)),
                "containerRuntimeVersion": "kwok://fake",
                "kubeProxyVersion": "",
                "operatingSystem": "linux",
                "kubeletVersion": "fake",
                "kernelVersion": "blackstart-kwok",
                "osImage": "blackstart simulated GPU node",
            },
        },
    }
    if node.taints:
        manifest["spec"]["taints"] = [dict(t) for t in node.taints]
    return manifest


def create_nodes(
    api: client.ApiClient,
    nodes: Collection[NodeSpec],
    workers: int = 8,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Create the nodes that do not exist yet, in parallel. Returns how many were created."""
    fleet_size = len(nodes)
    try:
        return post_all(
            api.configuration,
            "/api/v1/nodes",
            nodes,
            lambda node: node_manifest(node, fleet_size),
            workers=workers,
            progress=progress,
            progress_every=100 if fleet_size <= 2000 else 1000,
        )
    except CreateError as err:
        raise RuntimeError(f"creating the nodes failed: {err}") from err


def node_is_ready(node: client.V1Node) -> bool:
    for cond in (node.status.conditions or []) if node.status else []:
        if cond.type == "Ready":
            return bool(cond.status == "True")
    return False
