"""Cordon and uncordon, remembering whose cordon it is; what the controller knows of a node.

The controller marks a node it cordons with the annotation
``rescue.blackstart.dev/cordoned-by: <plan>`` in the same request as the cordon.
A node that is unschedulable *without* that annotation was cordoned by someone
else (an administrator, another tool): plans record that as
``nodeWasCordoned: true`` before they act and never uncordon such a node.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from blackstart.rescue.controller.kube_api import KubeApi
from blackstart.rescue.crd.plans import parse_time
from blackstart.rescue.crd.policy import GROUP
from blackstart.rescue.wire.signal import CONDITION_TYPE

__all__ = [
    "ANNOTATION_CORDONED_BY",
    "GPU_RESOURCE",
    "NodeView",
    "cordon",
    "cordoned_by_someone_else",
    "uncordon",
]

from blackstart.names import CORDONED_BY_ANNOTATION as ANNOTATION_CORDONED_BY
from blackstart.names import GPU_RESOURCE


def _quantity(value: object) -> int:
    try:
        return int(str(value))
    except ValueError:
        return 0


@dataclass(frozen=True)
class NodeView:
    """What the controller keeps of a Node from the watch: small, and enough to decide."""

    name: str
    uid: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    unschedulable: bool = False
    ready: bool = False
    ready_since: dt.datetime | None = None
    boot_id: str = ""
    gpus: int = 0
    xid_message: str | None = None
    provider_id: str = ""
    resource_version: int = 0

    @classmethod
    def from_object(cls, obj: Mapping[str, Any]) -> NodeView:
        """Read a Node object (a dict, as kopf and :class:`KubeApi` give them)."""
        metadata = obj.get("metadata") or {}
        spec = obj.get("spec") or {}
        status = obj.get("status") or {}
        ready = False
        ready_since = None
        xid_message = None
        for condition in status.get("conditions") or []:
            if condition.get("type") == "Ready":
                ready = condition.get("status") == "True"
                ready_since = parse_time(condition.get("lastTransitionTime"))
            elif condition.get("type") == CONDITION_TYPE and condition.get("status") == "True":
                xid_message = condition.get("message")
        capacity = status.get("allocatable") or status.get("capacity") or {}
        annotations = metadata.get("annotations") or {}
        return cls(
            name=str(metadata.get("name", "")),
            uid=str(metadata.get("uid", "")),
            labels=dict(metadata.get("labels") or {}),
            annotations={k: v for k, v in annotations.items() if k.startswith(GROUP)},
            unschedulable=bool(spec.get("unschedulable", False)),
            ready=ready,
            ready_since=ready_since,
            boot_id=str((status.get("nodeInfo") or {}).get("bootID", "")),
            gpus=_quantity(capacity.get(GPU_RESOURCE, 0)),
            xid_message=xid_message,
            provider_id=str(spec.get("providerID", "")),
            resource_version=_quantity(metadata.get("resourceVersion", 0)),
        )

    def newer_than(self, other: NodeView) -> bool:
        """False when this view is older than ``other`` (a stale watch event)."""
        if not self.resource_version or not other.resource_version:
            return True
        return self.resource_version >= other.resource_version

    @property
    def cordoned_by(self) -> str | None:
        """The plan that cordoned this node, if the controller did."""
        return self.annotations.get(ANNOTATION_CORDONED_BY)


def cordoned_by_someone_else(node: NodeView) -> bool:
    """True when the node is cordoned and the controller did not do it."""
    return node.unschedulable and node.cordoned_by is None


async def cordon(api: KubeApi, node: str, plan: str) -> NodeView:
    """Cordon ``node`` for ``plan`` (spec.unschedulable and the cordoned-by annotation)."""
    obj = await api.patch_node(
        node,
        {
            "metadata": {"annotations": {ANNOTATION_CORDONED_BY: plan}},
            "spec": {"unschedulable": True},
        },
    )
    return NodeView.from_object(obj)


async def uncordon(api: KubeApi, node: str) -> NodeView:
    """Make ``node`` schedulable again and drop the cordoned-by annotation.

    Callers check first that the plan may (:func:`blackstart.rescue.crd.plans.should_uncordon`).
    """
    obj = await api.patch_node(
        node,
        {
            "metadata": {"annotations": {ANNOTATION_CORDONED_BY: None}},
            "spec": {"unschedulable": None},
        },
    )
    return NodeView.from_object(obj)
