"""The ``blackstart`` entry of a journal's ``extensions``, as the controls write it.

See the journal contract: environment (provider, cluster, context, spec,
versions), sampled metric series, fault windows, rescue plans and the guard.
:func:`parse_extensions` reads it from a journal's ``extensions`` list,
skipping (and noting in ``problems``) whatever is missing or malformed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from blackstart.reports.fields import (
    as_list,
    is_number,
    json_type,
    mapping,
    number,
    text,
    time_field,
)

__all__ = [
    "EXTENSION_NAME",
    "BlackstartExtension",
    "FaultWindow",
    "MetricSeries",
    "PlanTransition",
    "RescuePlan",
    "parse_extensions",
]

EXTENSION_NAME = "blackstart"


@dataclass(frozen=True)
class MetricSeries:
    """A time series the metrics sampler wrote: ``points`` are (time, value or None)."""

    name: str
    title: str
    unit: str
    query: str
    points: tuple[tuple[datetime, float | None], ...]

    @property
    def values(self) -> list[float]:
        return [v for _, v in self.points if v is not None]

    @property
    def missing(self) -> int:
        return sum(1 for _, v in self.points if v is None)


@dataclass(frozen=True)
class FaultWindow:
    """When a fault was in place: ``end`` is None when it was never rolled back."""

    name: str
    activity: str
    start: datetime
    end: datetime | None


@dataclass(frozen=True)
class PlanTransition:
    phase: str
    time: datetime | None
    message: str = ""


@dataclass(frozen=True)
class RescuePlan:
    """A RescuePlan object (rescue.blackstart.dev/v1) as the controls saved it."""

    name: str
    node: str
    xids: tuple[int, ...]
    actions: tuple[str, ...]
    source: str
    dry_run: bool
    phase: str
    standby: str
    message: str
    first_seen: datetime | None
    transitions: tuple[PlanTransition, ...]


@dataclass(frozen=True)
class BlackstartExtension:
    """The ``blackstart`` entry of a journal's ``extensions`` (see the journal contract)."""

    environment: Mapping[str, Any]
    interval_s: float | None
    series: tuple[MetricSeries, ...]
    faults: tuple[FaultWindow, ...]
    rescue_plans: tuple[RescuePlan, ...]
    guard_tripped: bool
    guard_reason: str | None

    @property
    def versions(self) -> Mapping[str, Any]:
        versions = self.environment.get("versions")
        return versions if isinstance(versions, Mapping) else {}


def parse_extensions(
    raw: Any, problems: list[str]
) -> tuple[BlackstartExtension | None, tuple[str, ...]]:
    found: BlackstartExtension | None = None
    others: list[str] = []
    for i, item in enumerate(as_list(raw, "extensions", problems)):
        if not isinstance(item, dict):
            problems.append(f"extensions[{i}] is {json_type(item)}, not an object; skipped")
            continue
        name = item.get("name")
        if name != EXTENSION_NAME:
            others.append(str(name))
            continue
        if found is not None:
            problems.append(f"extensions[{i}]: a second '{EXTENSION_NAME}' entry; ignored")
            continue
        found = _blackstart_extension(item, problems)
    return found, tuple(others)


def _blackstart_extension(item: Mapping[str, Any], problems: list[str]) -> BlackstartExtension:
    where = f"extension '{EXTENSION_NAME}'"
    env = item.get("environment")
    if env is not None and not isinstance(env, dict):
        problems.append(f"{where}: environment is {json_type(env)}, not an object; ignored")
    environment = env if isinstance(env, dict) else {}

    metrics = item.get("metrics")
    series: list[MetricSeries] = []
    interval: float | None = None
    if isinstance(metrics, dict):
        interval = number(metrics.get("interval_s"))
        for i, s in enumerate(as_list(metrics.get("series"), f"{where}: metrics.series", problems)):
            parsed = _series(s, f"{where}: metrics.series[{i}]", problems)
            if parsed is not None:
                series.append(parsed)
    elif metrics is not None:
        problems.append(f"{where}: metrics is {json_type(metrics)}, not an object; ignored")

    faults: list[FaultWindow] = []
    for i, f in enumerate(as_list(item.get("faults"), f"{where}: faults", problems)):
        fw = f"{where}: faults[{i}]"
        if not isinstance(f, dict):
            problems.append(f"{fw} is {json_type(f)}, not an object; skipped")
            continue
        start = time_field(f.get("start"), f"{fw}.start", problems)
        if start is None:
            problems.append(f"{fw} has no start time; skipped")
            continue
        faults.append(
            FaultWindow(
                name=text(f.get("name")) or text(f.get("activity")) or "fault",
                activity=text(f.get("activity")),
                start=start,
                end=time_field(f.get("end"), f"{fw}.end", problems),
            )
        )

    plans: list[RescuePlan] = []
    for i, p in enumerate(as_list(item.get("rescue_plans"), f"{where}: rescue_plans", problems)):
        plan = _plan(p, f"{where}: rescue_plans[{i}]", problems)
        if plan is not None:
            plans.append(plan)

    guard = item.get("guard")
    guard = guard if isinstance(guard, dict) else {}
    reason = guard.get("reason")
    return BlackstartExtension(
        environment=environment,
        interval_s=interval,
        series=tuple(series),
        faults=tuple(faults),
        rescue_plans=tuple(plans),
        guard_tripped=bool(guard.get("tripped")),
        guard_reason=str(reason) if reason is not None else None,
    )


def _series(raw: Any, where: str, problems: list[str]) -> MetricSeries | None:
    if not isinstance(raw, dict):
        problems.append(f"{where} is {json_type(raw)}, not an object; skipped")
        return None
    name = text(raw.get("name"))
    if not name:
        problems.append(f"{where} has no name; skipped")
        return None
    points: list[tuple[datetime, float | None]] = []
    bad = 0
    for point in as_list(raw.get("points"), f"{where}.points", problems):
        if not isinstance(point, list | tuple) or len(point) != 2:
            bad += 1
            continue
        when = time_field(point[0], "", None)
        value = point[1]
        if when is None or not (value is None or is_number(value)):
            bad += 1
            continue
        number = None if value is None else float(value)
        if number is not None and not math.isfinite(number):
            number = None
        points.append((when, number))
    if bad:
        problems.append(f"{where} ({name}): {bad} point(s) are not [time, number|null]; skipped")
    points.sort(key=lambda p: p[0])
    return MetricSeries(
        name=name,
        title=text(raw.get("title")) or name,
        unit=text(raw.get("unit")),
        query=text(raw.get("query")),
        points=tuple(points),
    )


def _plan(raw: Any, where: str, problems: list[str]) -> RescuePlan | None:
    if not isinstance(raw, dict):
        problems.append(f"{where} is {json_type(raw)}, not an object; skipped")
        return None
    meta = mapping(raw.get("metadata"))
    spec = mapping(raw.get("spec"))
    status = mapping(raw.get("status"))
    transitions = []
    for t in status.get("transitions") or ():
        if isinstance(t, dict):
            transitions.append(
                PlanTransition(
                    phase=text(t.get("phase")) or "?",
                    time=time_field(t.get("time"), "", None),
                    message=text(t.get("message")),
                )
            )
    actions = tuple(text(a.get("name")) for a in spec.get("actions") or () if isinstance(a, dict))
    xids = tuple(int(x) for x in spec.get("xids") or () if isinstance(x, int))
    return RescuePlan(
        name=text(meta.get("name")) or "(unnamed plan)",
        node=text(spec.get("nodeName")),
        xids=xids,
        actions=actions,
        source=text(spec.get("source")),
        dry_run=bool(spec.get("dryRun")),
        phase=text(status.get("phase")) or "Pending",
        standby=text(status.get("standbyNode")),
        message=text(status.get("message")),
        first_seen=time_field(spec.get("firstSeenAt"), "", None),
        transitions=tuple(transitions),
    )
