"""An incident (new Xid reports a rule acts on) and the small facts read off reports."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from blackstart.rescue.crd.plans import (
    format_time,
    parse_time,
)
from blackstart.rescue.crd.policy import (
    MatchedRule,
)


def now_utc() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass
class Incident:
    """New Xid reports on a node that a rule says to act on."""

    node: str
    reports: list[dict[str, Any]]
    rule: MatchedRule
    refused_at: dt.datetime | None = None

    @property
    def report_ids(self) -> list[str]:
        return [str(r["id"]) for r in self.reports]

    @property
    def xids(self) -> list[int]:
        return sorted({int(r.get("xid", 0)) for r in self.reports})

    def first_written(self) -> str | None:
        """The earliest time the agent read one of the Xid lines (for the latency metric)."""
        times = [parse_time(r.get("writtenAt")) for r in self.reports]
        known = [t for t in times if t is not None]
        return format_time(min(known)) if known else None


@dataclass
class NodeMemory:
    """Report ids of a node seen and dealt with outside any plan (counted, ignored...)."""

    seen: set[str] = field(default_factory=set)


def resource_version(body: Mapping[str, Any]) -> int:
    try:
        return int(str((body.get("metadata") or {}).get("resourceVersion", 0)))
    except ValueError:
        return 0


def report_time(report: Mapping[str, Any]) -> dt.datetime | None:
    for key in ("lastSeen", "writtenAt", "firstSeen"):
        moment = parse_time(report.get(key))
        if moment is not None:
            return moment
    return None
