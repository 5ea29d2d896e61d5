"""Simulated nodes: Node objects that the kwok controller keeps alive.

A node with the annotation ``kwok.x-k8s.io/node: fake`` is managed by the kwok
controller: it goes Ready (node-initialize stage), heartbeats through its
Lease, and runs the pods the scheduler binds to it. Capacity and labels come
from the cluster spec, so a GPU pool advertises ``nvidia.com/gpu`` like a node
running NVIDIA's device plugin.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from blackstart.clusters.spec import NodeSpec

KWOK_NODE_ANNOTATION = "kwok.x-k8s.io/node"


def node_manifest(node: NodeSpec) -> dict[str, Any]:
    """The Node object for one spec node (status included: KWOK nodes post their own)."""
    labels = {
        **node.labels,
        "type": "kwok",
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
    }
    manifest: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": node.name,
            "labels": labels,
            "annotations": {
                KWOK_NODE_ANNOTATION: "fake",
                "node.alpha.kubernetes.io/ttl": "0",
            },
        },
        "spec": {"unschedulable": node.unschedulable},
        "status": {
            "allocatable": dict(node.capacity),
            "capacity": dict(node.capacity),
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
    api: client.CoreV1Api,
    nodes: Iterable[NodeSpec],
    workers: int = 16,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Create the nodes that do not exist yet, in parallel. Returns how many were created."""

    def create(node: NodeSpec) -> int:
        try:
            api.create_node(node_manifest(node))  # type: ignore[arg-type]
        except ApiException as err:
            if err.status == 409:
                return 0
            raise RuntimeError(
                f"creating node {node.name} failed: {err.status} {err.reason}"
            ) from err
        return 1

    created = 0
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for done, result in enumerate(pool.map(create, nodes), start=1):
            created += result
            if progress is not None and done % 100 == 0:
                progress(done)
    return created


def node_is_ready(node: client.V1Node) -> bool:
    for cond in (node.status.conditions or []) if node.status else []:
        if cond.type == "Ready":
            return bool(cond.status == "True")
    return False
