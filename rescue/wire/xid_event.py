"""The XidError Event on a Node: what the agent posts besides the condition. Pure.

A Warning Event, reason ``XidError``, message
``GPU Xid error: pci 0000:03:00, xid 62, log: Channel 00000001`` (plus
`` (+N more in this burst)``, then the catalogue's meaning and recommended action in
brackets). A repeat of the same Xid adds to the Event's ``count`` and
``lastTimestamp`` (:func:`event_series_patch`) instead of a new object. Events are
best-effort and expire; the condition (:mod:`blackstart.rescue.wire.signal`) is what
the controller acts on.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Sequence
from typing import Any

from blackstart.names import AGENT_REPORTER as REPORTING_CONTROLLER
from blackstart.rescue.wire.catalogue import action_for, describe
from blackstart.rescue.wire.signal import XidSighting

__all__ = [
    "EVENT_REASON",
    "EVENT_SOURCE_COMPONENT",
    "REPORTING_CONTROLLER",
    "event_body",
    "event_message",
    "event_name",
    "event_series_patch",
]

EVENT_REASON = "XidError"
EVENT_SOURCE_COMPONENT = "blackstart-rescue-agent"
_EVENT_MESSAGE_CHARS = 1024  # the API server rejects longer Event messages
_LOG_TEXT_CHARS = 200


def event_message(sightings: Sequence[XidSighting], total: int | None = None) -> str:
    """``GPU Xid error: pci P, xid X, log: TEXT`` for the first Xid of a burst.

    Then `` (+N more in this burst)`` when there were more (``total`` lines in
    all, default: as many as ``sightings``), and the catalogue's meaning and
    recommended action of the first Xid in brackets.
    """
    if not sightings:
        raise ValueError("an Xid event needs at least one Xid")
    first = sightings[0]
    count = len(sightings) if total is None else max(1, total)
    text = first.message[:_LOG_TEXT_CHARS]
    where = f"pci {first.pci}"
    if first.gpu_instance:
        where += f" GPU-I {first.gpu_instance}"
        if first.compute_instance:
            where += f" GPU-CI {first.compute_instance}"
    message = f"GPU Xid error: {where}, xid {first.xid}, log: {text}"
    if count > 1:
        message += f" (+{count - 1} more in this burst)"
    info = describe(first.xid)
    message += f" [{info.meaning}; recommended action: {action_for(first.xid, first.message)}]"
    return message[:_EVENT_MESSAGE_CHARS]


def event_name(node: str, first_id: str) -> str:
    """The Event's name: derived from the burst's first Xid, so a re-sent burst is a 409."""
    digest = hashlib.sha256(f"{node}/{first_id}".encode()).hexdigest()[:16]
    return f"{node[:200]}.xid.{digest}"


def event_body(
    node: str,
    node_uid: str | None,
    sightings: Sequence[XidSighting],
    now: float,
    namespace: str = "default",
    host: str | None = None,
    total: int | None = None,
) -> dict[str, Any]:
    """The Warning Event (core/v1) on the Node for one burst of ``sightings`` (``total`` lines)."""
    stamp = dt.datetime.fromtimestamp(now, dt.UTC)
    micro = stamp.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    second = stamp.strftime("%Y-%m-%dT%H:%M:%SZ")
    involved: dict[str, Any] = {"apiVersion": "v1", "kind": "Node", "name": node}
    if node_uid:
        involved["uid"] = node_uid
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": event_name(node, sightings[0].id), "namespace": namespace},
        "involvedObject": involved,
        "type": "Warning",
        "reason": EVENT_REASON,
        "message": event_message(sightings, total),
        "source": {"component": EVENT_SOURCE_COMPONENT, "host": host or node},
        "reportingComponent": REPORTING_CONTROLLER,
        "reportingInstance": f"{EVENT_SOURCE_COMPONENT}-{node}"[:128],
        "action": "ReportXid",
        "count": len(sightings) if total is None else max(1, total),
        "firstTimestamp": second,
        "lastTimestamp": second,
        "eventTime": micro,
    }


def event_series_patch(count: int, now: float) -> dict[str, Any]:
    """The merge patch that adds to an Event's series: its new ``count`` and last time.

    As Kubernetes aggregates repeated events: one object, counted, instead of
    one object per occurrence.
    """
    return {
        "count": max(1, count),
        "lastTimestamp": dt.datetime.fromtimestamp(now, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
