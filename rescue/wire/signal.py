"""The Xid signal on a Node: what the node agent writes and the controller reads. Pure.

For every burst of Xid lines on a node the agent makes at most two API writes:

1. a Warning Event on the Node, reason ``XidError``, message
   ``GPU Xid error: pci 0000:03:00, xid 62, log: Channel 00000001`` (plus
   `` (+N more in this burst)`` for a burst, then the catalogue's meaning and
   recommended action in brackets);
2. a strategic-merge patch of ``nodes/status`` setting the condition
   ``GPUXidError`` (status ``True``, reason ``XidError``) whose message is the
   durable signal, compact JSON::

       {"v": 1, "reports": [{"id": "<bootID>:<seq or offset>", "xid": 62,
         "pci": "0000:03:00", "uuid": null, "count": 1, "firstSeen": "...",
         "lastSeen": "...", "writtenAt": "..."}]}

   most recent last, at most :data:`MAX_REPORTS` kept. A report id is unique per
   Xid line and stable across agent restarts, so a controller that remembers the
   ids it handled acts once per Xid (:func:`reports_from_node` reads them back).

Events alone are lossy (client-side aggregation, one-hour expiry); the
condition is what the controller acts on.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from blackstart.names import AGENT_REPORTER as REPORTING_CONTROLLER
from blackstart.rescue.wire.catalogue import action_for, describe

__all__ = [
    "CONDITION_REASON",
    "CONDITION_TYPE",
    "EVENT_REASON",
    "EVENT_SOURCE_COMPONENT",
    "MAX_REPORTS",
    "REPORTING_CONTROLLER",
    "SIGNAL_VERSION",
    "XidReport",
    "XidSighting",
    "burst_due",
    "coalesce",
    "condition_message",
    "condition_patch",
    "event_body",
    "event_message",
    "event_name",
    "merge_reports",
    "parse_condition_message",
    "reports_from_node",
    "rfc3339",
]

CONDITION_TYPE = "GPUXidError"
CONDITION_REASON = "XidError"
EVENT_REASON = "XidError"
EVENT_SOURCE_COMPONENT = "blackstart-rescue-agent"

SIGNAL_VERSION = 1
MAX_REPORTS = 20
_EVENT_MESSAGE_CHARS = 1024  # the API server rejects longer Event messages
_LOG_TEXT_CHARS = 200


@dataclass(frozen=True)
class XidSighting:
    """One Xid line the agent read: what it spools until the API server accepted it.

    ``id`` is the line's ``<bootID>:<position>``; ``read_at`` the wall-clock time
    the agent read it; ``log_time`` the timestamp as the log gave it, if any.
    """

    id: str
    node: str
    xid: int
    pci: str
    uuid: str | None
    message: str
    read_at: float
    log_time: str | None = None


@dataclass(frozen=True)
class XidReport:
    """One entry of the condition's ``reports``: identical (xid, pci) lines of one burst."""

    id: str
    xid: int
    pci: str
    uuid: str | None
    count: int
    first_seen: float
    last_seen: float
    written_at: float

    def to_json(self) -> dict[str, Any]:
        """The report as it appears in the condition message."""
        return {
            "id": self.id,
            "xid": self.xid,
            "pci": self.pci,
            "uuid": self.uuid,
            "count": self.count,
            "firstSeen": rfc3339(self.first_seen),
            "lastSeen": rfc3339(self.last_seen),
            "writtenAt": rfc3339(self.written_at),
        }


def rfc3339(epoch: float) -> str:
    """``epoch`` seconds as ``2026-11-24T08:30:00.123456Z``."""
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def coalesce(sightings: Iterable[XidSighting]) -> list[XidReport]:
    """The reports for one burst: lines with the same (xid, pci) become one report.

    A report takes the id of its first line and counts the lines; reports come in
    the order of their first line.
    """
    reports: dict[tuple[int, str], XidReport] = {}
    for s in sightings:
        key = (s.xid, s.pci)
        seen = reports.get(key)
        if seen is None:
            reports[key] = XidReport(
                id=s.id,
                xid=s.xid,
                pci=s.pci,
                uuid=s.uuid,
                count=1,
                first_seen=s.read_at,
                last_seen=s.read_at,
                written_at=s.read_at,
            )
        else:
            reports[key] = XidReport(
                id=seen.id,
                xid=seen.xid,
                pci=seen.pci,
                uuid=seen.uuid or s.uuid,
                count=seen.count + 1,
                first_seen=min(seen.first_seen, s.read_at),
                last_seen=max(seen.last_seen, s.read_at),
                written_at=seen.written_at,
            )
    return list(reports.values())


def merge_reports(
    existing: Sequence[Mapping[str, Any]],
    new: Sequence[Mapping[str, Any]],
    keep: int = MAX_REPORTS,
) -> list[dict[str, Any]]:
    """``existing`` reports followed by ``new`` ones, the last ``keep`` of them.

    A new report whose id is already there replaces the old entry in place (the
    same Xid sent again, perhaps with a higher count): an id never appears twice.
    """
    merged: dict[str, dict[str, Any]] = {}
    for report in [*existing, *new]:
        report_id = str(report.get("id", ""))
        if not report_id:
            continue
        merged[report_id] = dict(report)
    reports = list(merged.values())
    return reports[-keep:] if keep > 0 else []


def condition_message(reports: Sequence[Mapping[str, Any]]) -> str:
    """The condition's message: compact JSON ``{"v": 1, "reports": [...]}``."""
    return json.dumps({"v": SIGNAL_VERSION, "reports": list(reports)}, separators=(",", ":"))


def parse_condition_message(message: str | None) -> list[dict[str, Any]]:
    """The reports in a ``GPUXidError`` condition message; [] for anything malformed."""
    if not message:
        return []
    try:
        data = json.loads(message)
    except ValueError:
        return []
    if not isinstance(data, dict) or not isinstance(data.get("reports"), list):
        return []
    return [r for r in data["reports"] if isinstance(r, dict) and isinstance(r.get("id"), str)]


def reports_from_node(node: Any) -> list[dict[str, Any]]:
    """The Xid reports in a Node's ``GPUXidError`` condition (a client model or a dict)."""
    for condition in _conditions_of(node):
        ctype = _field(condition, "type")
        if ctype == CONDITION_TYPE:
            return parse_condition_message(_field(condition, "message"))
    return []


def condition_patch(reports: Sequence[Mapping[str, Any]], now: float) -> dict[str, Any]:
    """The strategic-merge patch of ``nodes/status`` that sets the ``GPUXidError`` condition.

    Node conditions merge by ``type``, so the node's other conditions stay.
    """
    stamp = dt.datetime.fromtimestamp(now, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "status": {
            "conditions": [
                {
                    "type": CONDITION_TYPE,
                    "status": "True",
                    "reason": CONDITION_REASON,
                    "message": condition_message(reports),
                    "lastHeartbeatTime": stamp,
                    "lastTransitionTime": stamp,
                }
            ]
        }
    }


def event_message(sightings: Sequence[XidSighting]) -> str:
    """``GPU Xid error: pci P, xid X, log: TEXT`` for the first Xid of a burst.

    Then `` (+N more in this burst)`` when there were more, and the catalogue's
    meaning and recommended action of the first Xid in brackets.
    """
    if not sightings:
        raise ValueError("an Xid event needs at least one Xid")
    first = sightings[0]
    text = first.message[:_LOG_TEXT_CHARS]
    message = f"GPU Xid error: pci {first.pci}, xid {first.xid}, log: {text}"
    if len(sightings) > 1:
        message += f" (+{len(sightings) - 1} more in this burst)"
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
) -> dict[str, Any]:
    """The Warning Event (core/v1) on the Node for one burst of ``sightings``."""
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
        "message": event_message(sightings),
        "source": {"component": EVENT_SOURCE_COMPONENT, "host": host or node},
        "reportingComponent": REPORTING_CONTROLLER,
        "reportingInstance": f"{EVENT_SOURCE_COMPONENT}-{node}"[:128],
        "action": "ReportXid",
        "count": len(sightings),
        "firstTimestamp": second,
        "lastTimestamp": second,
        "eventTime": micro,
    }


def burst_due(first_read: float, last_read: float, now: float, window: float) -> bool:
    """Whether a node's pending Xids form a finished burst to report now.

    Finished when no Xid came for ``window`` seconds, or the burst has lasted
    five windows (at least one second): a steady stream is still reported.
    """
    return now - last_read >= window or now - first_read >= max(1.0, 5 * window)


def _conditions_of(node: Any) -> list[Any]:
    status = _field(node, "status")
    if status is None:
        return []
    conditions = _field(status, "conditions")
    return list(conditions or [])


def _field(obj: Any, name: str) -> Any:
    if isinstance(obj, Mapping):
        return obj.get(name)
    return getattr(obj, name, None)
