"""Cordon and uncordon, remembering whose cordon it is; what the controller knows of a node.

The controller marks a node it cordons with the annotation
``rescue.blackstart.dev/cordoned-by: <plan>`` in the same request as the cordon.
A cordon is the controller's only while that annotation names one of its *active*
plans: a node that is unschedulable without it, or with one naming a plan that has
ended (a Failed plan leaves its node cordoned for a person), was cordoned by someone
else; plans record that as ``nodeWasCordoned: true`` and never uncordon such a node.

Both writes are conditional, so a person's cordon made in between is never taken
for the controller's: the cordon carries the ``resourceVersion`` of the Node just read
(the API server answers 409 when anything changed since, and the cordon is decided
again on a fresh read), and the uncordon is a JSON patch that first tests that the
annotation still names the plan.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Container, Mapping
from dataclasses import dataclass, field
from typing import Any

from kubernetes.client.exceptions import ApiException

from blackstart.rescue.controller.kube_api import ACT, KubeApi
from blackstart.rescue.crd.plans import parse_time
from blackstart.rescue.crd.policy import GROUP
from blackstart.rescue.wire.signal import CONDITION_TYPE

__all__ = [
    "ANNOTATION_CORDONED_BY",
    "GPU_RESOURCE",
    "CordonTaken",
    "EarlyCordon",
    "NodeView",
    "cordon",
    "cordoned_by_someone_else",
    "uncordon",
]

from blackstart.names import CORDONED_BY_ANNOTATION as ANNOTATION_CORDONED_BY
from blackstart.names import GPU_COUNT_LABEL, GPU_RESOURCE


def _quantity(value: object) -> int:
    try:
        return int(str(value))
    except ValueError:
        return 0


def _gpus(status: Mapping[str, Any], labels: Mapping[str, str]) -> int:
    """The node's GPUs by what stays put under remediation.

    Not allocatable alone: the device plugin drops it when GPUs go unhealthy, and to
    nothing while it registers again after a reboot, which is when a node is being
    remediated. Capacity, allocatable or GPU feature discovery's ``gpu.count`` label,
    whichever is largest.
    """
    return max(
        _quantity((status.get("capacity") or {}).get(GPU_RESOURCE, 0)),
        _quantity((status.get("allocatable") or {}).get(GPU_RESOURCE, 0)),
        _quantity(labels.get(GPU_COUNT_LABEL, 0)),
    )


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
        annotations = metadata.get("annotations") or {}
        labels = dict(metadata.get("labels") or {})
        return cls(
            name=str(metadata.get("name", "")),
            uid=str(metadata.get("uid", "")),
            labels=labels,
            annotations={k: v for k, v in annotations.items() if k.startswith(GROUP)},
            unschedulable=bool(spec.get("unschedulable", False)),
            ready=ready,
            ready_since=ready_since,
            boot_id=str((status.get("nodeInfo") or {}).get("bootID", "")),
            gpus=_gpus(status, labels),
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


def cordoned_by_someone_else(node: NodeView, ours: Container[str] = ()) -> bool:
    """True when the node is cordoned and not by one of the active plans in ``ours``."""
    return node.unschedulable and (node.cordoned_by is None or node.cordoned_by not in ours)


@dataclass(frozen=True)
class EarlyCordon:
    """A new plan's cordon, made before the plan itself was created (the cordon goes
    first); the plan's cordon step records it instead of cordoning again."""

    view: NodeView
    taken: bool  # someone else's cordon was found: the plan must not take it for its own
    at: dt.datetime


class CordonTaken(Exception):
    """Someone else cordoned the node between the read and the cordon; the view shows it."""

    def __init__(self, view: NodeView) -> None:
        super().__init__(f"{view.name} was cordoned by someone else")
        self.view = view


async def cordon(
    api: KubeApi,
    node: str,
    plan: str,
    attempts: int = 5,
    known: NodeView | None = None,
    priority: int = ACT,
) -> NodeView:
    """Cordon ``node`` for ``plan`` (spec.unschedulable and the cordoned-by annotation).

    Decides on a read of the node and cordons only if it is schedulable, or already
    cordoned for ``plan`` (a resumed plan); the write carries the read's
    ``resourceVersion``, and a conflict (the node changed in between) means reading
    again. ``known``: a view of the node (the watch cache's) to decide on first instead
    of a GET, when it shows the node schedulable: the write's ``resourceVersion`` makes
    that exactly as safe as a fresh read, and in the common case the cordon is then
    one request. Raises :class:`CordonTaken` when someone else's cordon is found.
    """
    trusted = known if known and known.resource_version and not known.unschedulable else None
    for attempt in range(attempts):
        if attempt == 0 and trusted is not None:
            view = trusted
        else:
            view = NodeView.from_object(await api.get_node(node, priority))
        if view.unschedulable and view.cordoned_by != plan:
            raise CordonTaken(view)
        if view.unschedulable:
            return view  # ours already: a plan resumed after its cordon
        try:
            obj = await api.patch_node(
                node,
                {
                    "metadata": {
                        "annotations": {ANNOTATION_CORDONED_BY: plan},
                        "resourceVersion": str(view.resource_version),
                    },
                    "spec": {"unschedulable": True},
                },
                priority,
            )
        except ApiException as err:
            if err.status == 409 and attempt + 1 < attempts:
                continue  # changed since the read (a heartbeat, a person): decide again
            raise
        return NodeView.from_object(obj)
    raise AssertionError("unreachable")


async def uncordon(api: KubeApi, node: str, plan: str) -> NodeView | None:
    """Make ``node`` schedulable and drop the cordoned-by annotation, if ``plan``'s cordon.

    A JSON patch that tests the annotation first: returns the node as written, or
    ``None`` when the annotation no longer names ``plan`` (the node is then left as it
    is). Callers check first that the plan may
    (:func:`blackstart.rescue.crd.plans.should_uncordon`).
    """
    path = "/metadata/annotations/" + ANNOTATION_CORDONED_BY.replace("~", "~0").replace("/", "~1")
    try:
        obj = await api.json_patch_node(
            node,
            [
                {"op": "test", "path": path, "value": plan},
                {"op": "remove", "path": path},
                {"op": "add", "path": "/spec/unschedulable", "value": False},
            ],
        )
    except ApiException as err:
        if err.status in (409, 422):  # the test failed: not our annotation (any more)
            return None
        raise
    return NodeView.from_object(obj)
