"""enableWarmStandby: swap a warm standby in for the failed node, so GPU capacity is back.

A warm standby is a node carrying the standby label (``blackstart.dev/standby=true``
by default, ``--standby-label``), kept cordoned until needed. For a failed node:

1. the candidates are the standbys that are cordoned, Ready and not claimed by
   another plan; :func:`blackstart.rescue.crd.policy.choose_standby` picks one at
   random among those matching a WarmStandbyPolicy for the failed node, else
   among all of them;
2. the plan records the choice (``status.standbyNode``) *before* touching the
   standby, so a restarted controller finishes the same swap;
3. the standby is made schedulable, gets the failed node's matched labels (the
   labels of the rule's nodeSelector that the failed node carries, and the
   ``originNode`` labels of the WarmStandbyPolicy entries that apply to it: what
   workloads select on), its standby label becomes ``in-use`` and the annotation
   ``rescue.blackstart.dev/replaces: <failed node>`` records the swap.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping

from blackstart.rescue.controller.kube_api import KubeApi
from blackstart.rescue.controller.node_actions import NodeView
from blackstart.rescue.crd.policy import GROUP as _GROUP
from blackstart.rescue.crd.policy import (
    NodeSelector,
    WarmStandbyPolicy,
    choose_standby,
    labels_match,
)

__all__ = [
    "ANNOTATION_REPLACES",
    "DEFAULT_STANDBY_LABEL",
    "IN_USE",
    "available_standbys",
    "enable_standby",
    "matched_labels",
    "parse_standby_label",
    "pick_standby",
]

from blackstart.names import REPLACES_ANNOTATION as ANNOTATION_REPLACES
from blackstart.names import STANDBY_LABEL

DEFAULT_STANDBY_LABEL = f"{STANDBY_LABEL}=true"
IN_USE = "in-use"


def parse_standby_label(text: str) -> tuple[str, str]:
    """``key=value`` into (key, value); raises :class:`ValueError` naming the text."""
    key, sep, value = text.partition("=")
    if not sep or not key or not value:
        raise ValueError(f"standby label {text!r} must be key=value, e.g. {DEFAULT_STANDBY_LABEL}")
    return key, value


def available_standbys(
    nodes: Iterable[NodeView], label: tuple[str, str], claimed: Iterable[str] = ()
) -> dict[str, Mapping[str, str]]:
    """The standbys a plan may take now: labelled, cordoned, Ready, not claimed. Name -> labels."""
    taken = set(claimed)
    key, value = label
    return {
        node.name: node.labels
        for node in nodes
        if node.labels.get(key) == value
        and node.unschedulable
        and node.ready
        and node.name not in taken
    }


def matched_labels(
    failed: NodeView,
    selector: NodeSelector | None,
    policies: Iterable[WarmStandbyPolicy],
) -> dict[str, str]:
    """The failed node's labels the standby takes over (see the module docstring)."""
    labels: dict[str, str] = {}
    if selector is not None:
        for key, value in selector.labels.items():
            if failed.labels.get(key) == value:
                labels[key] = value
    for policy in policies:
        for match in policy.matches:
            if labels_match(match.origin_labels, failed.labels):
                labels.update(match.origin_labels)
    return labels


def pick_standby(
    failed: NodeView,
    nodes: Iterable[NodeView],
    label: tuple[str, str],
    claimed: Iterable[str],
    policies: Iterable[WarmStandbyPolicy],
    rng: random.Random | None = None,
) -> str | None:
    """The standby to swap in for ``failed``, or ``None`` when none is available."""
    standbys = available_standbys(nodes, label, claimed)
    return choose_standby(failed.labels, standbys, list(policies), rng or random.Random())


async def enable_standby(
    api: KubeApi,
    standby: str,
    failed: str,
    labels: Mapping[str, str],
    label: tuple[str, str],
    plan: str,
) -> NodeView:
    """Make ``standby`` schedulable with ``labels``, marked as replacing ``failed``."""
    key, _ = label
    obj = await api.patch_node(
        standby,
        {
            "metadata": {
                "labels": {**labels, key: IN_USE},
                "annotations": {ANNOTATION_REPLACES: failed, f"{_GROUP}/replaced-by-plan": plan},
            },
            "spec": {"unschedulable": None},
        },
    )
    return NodeView.from_object(obj)
