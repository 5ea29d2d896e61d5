"""The Xid signal on a Node: what the node agent writes and the controller reads. Pure.

The agent reports Xid lines with two kinds of API writes:

1. a strategic-merge patch of ``nodes/status`` setting the condition
   ``GPUXidError`` (status ``True``, reason ``XidError``) whose message is the
   durable signal, compact JSON::

       {"v": 1, "reports": [{"id": "<bootID>:<seq or offset>", "xid": 62,
         "pci": "0000:03:00", "uuid": null, "count": 1, "firstSeen": "...",
         "lastSeen": "...", "writtenAt": "...", "bootId": "<bootID>",
         "loggedAt": "...", "gpuInstance": null, "computeInstance": null}]}

   most recent last, at most :data:`MAX_REPORTS` kept. Identical lines (same
   boot, Xid, GPU and MIG instance, :func:`report_key`) collapse into one
   report whose ``count`` and ``lastSeen`` grow (:func:`fold_reports`); its id,
   the id of its first line, is stable across agent restarts, so a controller
   that remembers the ids it handled acts once per Xid (:func:`reports_from_node`
   reads them back). ``loggedAt`` is the kernel's own time of the latest line
   (boot time plus the kernel timestamp), so a replayed old line is seen as old;
   ``firstSeen``/``lastSeen``/``writtenAt`` are when the agent read lines;
2. a Warning Event on the Node, reason ``XidError`` (:mod:`blackstart.rescue.wire.xid_event`).

Events are best-effort and lossy (one-hour expiry); the condition is what the
controller acts on.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

__all__ = [
    "CONDITION_REASON",
    "CONDITION_TYPE",
    "MAX_REPORTS",
    "SIGNAL_VERSION",
    "XidReport",
    "XidSighting",
    "burst_due",
    "coalesce",
    "condition_message",
    "condition_patch",
    "fold_reports",
    "key_of_report",
    "merge_reports",
    "parse_condition_message",
    "report_key",
    "reports_from_node",
    "rfc3339",
]

CONDITION_TYPE = "GPUXidError"
CONDITION_REASON = "XidError"

SIGNAL_VERSION = 1
MAX_REPORTS = 20


@dataclass(frozen=True)
class XidSighting:
    """One Xid line the agent read: what it spools until the API server accepted it.

    ``id`` is the line's ``<bootID>:<position>``; ``read_at`` the wall-clock time
    the agent read it; ``log_time`` the timestamp as the log gave it, if any;
    ``logged_at`` when the kernel logged it (epoch seconds: the node's boot time
    plus the kernel's timestamp), None when the line cannot tell; ``boot_id``
    the boot it was logged in; ``gpu_instance``/``compute_instance`` the MIG
    instance (``"07"``), None without MIG.
    """

    id: str
    node: str
    xid: int
    pci: str
    uuid: str | None
    message: str
    read_at: float
    log_time: str | None = None
    logged_at: float | None = None
    boot_id: str = ""
    gpu_instance: str | None = None
    compute_instance: str | None = None

    @property
    def boot(self) -> str:
        """The boot the line was logged in (from the id when not given)."""
        return self.boot_id or self.id.rpartition(":")[0]

    @property
    def key(self) -> str:
        """Lines with the same key are the same Xid on the same GPU (instance) in one boot."""
        return report_key(self.boot, self.xid, self.pci, self.gpu_instance, self.compute_instance)


def report_key(
    boot_id: str,
    xid: int,
    pci: str,
    gpu_instance: str | None = None,
    compute_instance: str | None = None,
) -> str:
    """What identical Xid lines share: boot, code, GPU and MIG instance (not the text)."""
    return f"{boot_id}|{xid}|{pci}|{gpu_instance or ''}|{compute_instance or ''}"


def key_of_report(report: Mapping[str, Any]) -> str:
    """:func:`report_key` of a report in the condition (older agents wrote no ``bootId``)."""
    boot = str(report.get("bootId") or str(report.get("id", "")).rpartition(":")[0])
    try:
        xid = int(report.get("xid", -1))
    except (TypeError, ValueError):
        xid = -1
    return report_key(
        boot,
        xid,
        str(report.get("pci", "")),
        report.get("gpuInstance"),
        report.get("computeInstance"),
    )


@dataclass(frozen=True)
class XidReport:
    """One entry of the condition's ``reports``: identical lines collapsed into one, counted.

    ``first``: the first line (its id is the report's id). ``logged_at``: when
    the kernel logged the latest line (None when the log does not tell).
    """

    id: str
    xid: int
    pci: str
    uuid: str | None
    count: int
    first_seen: float
    last_seen: float
    written_at: float
    boot_id: str = ""
    logged_at: float | None = None
    gpu_instance: str | None = None
    compute_instance: str | None = None

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
            "bootId": self.boot_id,
            "loggedAt": None if self.logged_at is None else rfc3339(self.logged_at),
            "gpuInstance": self.gpu_instance,
            "computeInstance": self.compute_instance,
        }


def rfc3339(epoch: float) -> str:
    """``epoch`` seconds as ``2026-11-24T08:30:00.123456Z``."""
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _epoch(stamp: Any) -> float | None:
    if not isinstance(stamp, str) or not stamp:
        return None
    try:
        return dt.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _later(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else max(a, b)


def coalesce(sightings: Iterable[XidSighting]) -> list[XidReport]:
    """The reports for ``sightings``: lines with the same :attr:`XidSighting.key` become one.

    A report takes the id of its first line and counts the lines; reports come in
    the order of their first line.
    """
    reports: dict[str, XidReport] = {}
    for s in sightings:
        seen = reports.get(s.key)
        if seen is None:
            reports[s.key] = XidReport(
                id=s.id,
                xid=s.xid,
                pci=s.pci,
                uuid=s.uuid,
                count=1,
                first_seen=s.read_at,
                last_seen=s.read_at,
                written_at=s.read_at,
                boot_id=s.boot,
                logged_at=s.logged_at,
                gpu_instance=s.gpu_instance,
                compute_instance=s.compute_instance,
            )
        else:
            reports[s.key] = replace(
                seen,
                uuid=seen.uuid or s.uuid,
                count=seen.count + 1,
                first_seen=min(seen.first_seen, s.read_at),
                last_seen=max(seen.last_seen, s.read_at),
                logged_at=_later(seen.logged_at, s.logged_at),
            )
    return list(reports.values())


def fold_reports(
    existing: Sequence[Mapping[str, Any]],
    new: Sequence[XidReport],
    collapse_window: float,
    keep: int = MAX_REPORTS,
) -> list[dict[str, Any]]:
    """The condition's reports after ``new`` ones: identical Xids collapse into one report.

    A new report whose key matches a report already there, last logged (else
    last seen) at most ``collapse_window`` seconds before the new one, adds its count
    to that report and moves it last (its id, what the controller acts once on,
    stays). Any other new report is added last. The last ``keep`` are kept.
    """
    reports = [dict(r) for r in existing if str(r.get("id", ""))]
    for report in new:
        folded = False
        for index in range(len(reports) - 1, -1, -1):
            old = reports[index]
            last = _epoch(old.get("lastSeen"))
            if key_of_report(old) != report_key(
                report.boot_id, report.xid, report.pci, report.gpu_instance, report.compute_instance
            ):
                continue
            # by the kernel's time when both tell: a replayed old line never hides a new one
            old_logged = _epoch(old.get("loggedAt"))
            if old_logged is not None and report.logged_at is not None:
                if report.logged_at - old_logged > collapse_window:
                    break
            elif last is None or report.first_seen - last > collapse_window:
                break
            logged = _later(old_logged, report.logged_at)
            old.update(
                count=max(1, int(old.get("count") or 1)) + report.count,
                lastSeen=rfc3339(max(last or report.last_seen, report.last_seen)),
                loggedAt=None if logged is None else rfc3339(logged),
                uuid=old.get("uuid") or report.uuid,
                bootId=report.boot_id,
            )
            reports.append(reports.pop(index))
            folded = True
            break
        if not folded:
            reports = [r for r in reports if r.get("id") != report.id]
            reports.append(report.to_json())
    return reports[-keep:] if keep > 0 else []


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
