"""Chaos Toolkit journals as a typed model, for the reports.

:func:`load_journal` reads any Chaos Toolkit journal (``chaos run
--journal-path``), also one blackstart did not make, and returns a
:class:`Journal`: the experiment's title, the verdict, the steady-state
hypothesis before/during/after with each probe's tolerance and observed value,
the method and rollbacks, and, when blackstart's controls wrote one, the
``blackstart`` entry of the journal's ``extensions`` (environment, sampled
metrics, fault windows, rescue plans, guard).

Loading is forgiving about what a journal lacks (a journal written by an
interrupted run, an older chaostoolkit-lib, a partial extension): every part
that is missing or malformed is skipped and named in :attr:`Journal.problems`,
which the report shows. It is strict about what is not a journal at all:
a file that is not JSON, or JSON that is not a journal, raises
:class:`JournalError` naming the file and what is wrong with it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from blackstart.reports.extension import (
    EXTENSION_NAME,
    BlackstartExtension,
    FaultWindow,
    MetricSeries,
    PlanTransition,
    RescuePlan,
    parse_extensions,
)
from blackstart.reports.fields import (
    as_list,
    json_type,
    number,
    parse_time,
    text,
    time_field,
)

__all__ = [
    "EXTENSION_NAME",
    "OUTCOMES",
    "ActivityResult",
    "BlackstartExtension",
    "Deviation",
    "FaultWindow",
    "Hypothesis",
    "Journal",
    "JournalError",
    "MetricSeries",
    "PlanTransition",
    "RescuePlan",
    "describe_tolerance",
    "load_journal",
    "parse_journal",
    "parse_time",
    "summarize_value",
]


#: How a run ended, from best to worst. ``not-steady``: the steady state was not
#: met before the method, so the method did not run. ``rollback-failed``: the run
#: ended as it would have, but a rollback raised, so the cluster may still carry
#: the fault; whatever the hypothesis said, that is not a passing run.
OUTCOMES = (
    "completed",
    "deviated",
    "not-steady",
    "rollback-failed",
    "failed",
    "aborted",
    "interrupted",
    "unknown",
)

# Keys at least one of which every Chaos Toolkit journal has.
_JOURNAL_KEYS = ("experiment", "status", "steady_states", "run", "chaoslib-version")


class JournalError(ValueError):
    """A file is not a readable Chaos Toolkit journal; the message names the file and why."""


# --------------------------------------------------------------------- model
@dataclass(frozen=True)
class ActivityResult:
    """One activity as it ran: a probe or action of a phase of the experiment."""

    name: str
    kind: str  # action | probe | unknown
    phase: str  # before | during | after | method | rollback
    status: str  # succeeded | failed | skipped | unknown
    start: datetime | None
    end: datetime | None
    duration: float | None
    output: Any = None
    exception: str | None = None
    tolerance: Any = None
    has_tolerance: bool = False
    tolerance_met: bool | None = None
    background: bool = False
    provider: str = ""

    @property
    def failed(self) -> bool:
        return self.status == "failed"

    @property
    def error_line(self) -> str:
        """The last line of the traceback: what went wrong, in one line."""
        if not self.exception:
            return ""
        # the carets Python 3.11 draws under a failing expression are no error text
        lines = [
            line.strip()
            for line in self.exception.strip().splitlines()
            if line.strip() and line.strip(" ^~")
        ]
        return lines[-1] if lines else ""


@dataclass(frozen=True)
class Hypothesis:
    """One evaluation of the steady-state hypothesis."""

    phase: str  # before | during | after
    met: bool | None
    probes: tuple[ActivityResult, ...]

    @property
    def start(self) -> datetime | None:
        times = [p.start for p in self.probes if p.start]
        return min(times) if times else None


@dataclass(frozen=True)
class Deviation:
    """A probe of the hypothesis whose observed value was outside its tolerance."""

    phase: str
    probe: str
    tolerance: str
    observed: str
    error: str = ""


@dataclass(frozen=True)
class Journal:
    """A Chaos Toolkit journal, read and checked; see :func:`load_journal`."""

    source: str
    raw: Mapping[str, Any]
    title: str
    description: str
    tags: tuple[str, ...]
    status: str
    deviated: bool
    start: datetime | None
    end: datetime | None
    duration: float | None
    hypothesis_title: str
    declared_probes: tuple[Mapping[str, Any], ...]
    before: Hypothesis | None
    after: Hypothesis | None
    during: tuple[Hypothesis, ...]
    method: tuple[ActivityResult, ...]
    rollbacks: tuple[ActivityResult, ...]
    chaoslib_version: str
    platform: str
    node: str
    extension: BlackstartExtension | None
    other_extensions: tuple[str, ...] = ()
    problems: tuple[str, ...] = field(default=())

    # ---------------------------------------------------------------- verdict
    @property
    def outcome(self) -> str:
        """One of :data:`OUTCOMES`."""
        if self.status in ("interrupted", "aborted", "failed"):
            return self.status
        if self.rollbacks_ok is False:
            return "rollback-failed"
        if self.deviated:
            return "deviated"
        if self.before is not None and self.before.met is False:
            return "not-steady"
        if self.status == "completed":
            return "completed"
        return "unknown"

    @property
    def headline(self) -> str:
        """The verdict in one sentence, for people."""
        outcome = self.outcome
        deviations = self.deviations
        names = ", ".join(sorted({d.probe for d in deviations}))
        if outcome == "completed":
            return "Steady state held: every probe stayed within its tolerance."
        if outcome == "deviated":
            return f"Steady state deviated after the method: {names or 'see the hypothesis'}."
        if outcome == "not-steady":
            return (
                f"Steady state was not met before the method ({names or 'see the hypothesis'}); "
                "the method did not run."
            )
        if outcome == "rollback-failed":
            broken = [r for r in self.rollbacks if r.status != "succeeded"]
            what = ", ".join(f"{r.name}: {r.error_line or r.status}" for r in broken[:3])
            return f"A rollback failed ({what}); the cluster may still carry the fault."
        if outcome == "failed":
            failed = [a.name for a in self.activities if a.failed]
            extra = f" ({', '.join(failed[:4])})" if failed else ""
            return f"The run failed: an activity raised{extra}."
        if outcome == "aborted":
            return "The run was aborted: it ran into an error it could not continue from."
        if outcome == "interrupted":
            reason = ""
            if self.extension and self.extension.guard_tripped:
                reason = f" by the guard: {self.extension.guard_reason or 'limit crossed'}"
            return f"The run was interrupted{reason}; rollbacks were played as configured."
        return "The journal does not say how the run ended."

    @property
    def activities(self) -> list[ActivityResult]:
        """Every activity that ran, in order: hypothesis, method, hypothesis, rollbacks."""
        acts: list[ActivityResult] = []
        if self.before:
            acts.extend(self.before.probes)
        acts.extend(self.method)
        for hyp in self.during:
            acts.extend(hyp.probes)
        if self.after:
            acts.extend(self.after.probes)
        acts.extend(self.rollbacks)
        return acts

    @property
    def errors(self) -> list[ActivityResult]:
        """Activities that raised, with their tracebacks."""
        return [a for a in self.activities if a.exception or a.failed]

    @property
    def deviations(self) -> list[Deviation]:
        """Probes outside their tolerance: after the method, before it, and during it."""
        out: list[Deviation] = []
        hyps = [h for h in (self.before, self.after) if h is not None] + list(self.during)
        for hyp in hyps:
            for probe in hyp.probes:
                if probe.tolerance_met is False or (probe.has_tolerance and probe.failed):
                    out.append(
                        Deviation(
                            phase=hyp.phase,
                            probe=probe.name,
                            tolerance=describe_tolerance(probe.tolerance),
                            observed=summarize_value(probe.output),
                            error=probe.error_line,
                        )
                    )
        return out

    @property
    def rollbacks_ok(self) -> bool | None:
        if not self.rollbacks:
            return None
        return all(r.status == "succeeded" for r in self.rollbacks)

    @property
    def faults(self) -> tuple[FaultWindow, ...]:
        return self.extension.faults if self.extension else ()


# ------------------------------------------------------------------- loading
def load_journal(path: str | Path) -> Journal:
    """Read the Chaos Toolkit journal at ``path``.

    Raises :class:`JournalError` (naming the file) when it cannot be read, is
    not JSON or is not a journal. Missing or malformed parts of a journal are
    not errors: they are listed in :attr:`Journal.problems`.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise JournalError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise JournalError(f"{path}: is a folder, not a journal file") from None
    except UnicodeDecodeError as err:
        raise JournalError(f"{path}: not a text file ({err.reason}); expected JSON") from None
    except OSError as err:
        raise JournalError(f"{path}: cannot be read: {err.strerror or err}") from None
    if not text.strip():
        raise JournalError(f"{path}: the file is empty; a journal is a JSON object")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise JournalError(
            f"{path}: not valid JSON (line {err.lineno}, column {err.colno}: {err.msg}); "
            "is it a complete journal written by `chaos run --journal-path`?"
        ) from None
    return parse_journal(data, source=str(path))


def parse_journal(data: Any, source: str = "<journal>") -> Journal:
    """Build a :class:`Journal` from an already decoded journal; see :func:`load_journal`."""
    if not isinstance(data, dict):
        raise JournalError(
            f"{source}: not a Chaos Toolkit journal: a journal is a JSON object, "
            f"this file holds {json_type(data)}"
        )
    if not any(key in data for key in _JOURNAL_KEYS):
        keys = ", ".join(sorted(str(k) for k in data)[:8]) or "none"
        hint = ""
        if "method" in data or "steady-state-hypothesis" in data:
            hint = "; it looks like an experiment: run it with `chaos run` and pass the journal"
        raise JournalError(
            f"{source}: not a Chaos Toolkit journal: it has none of the keys "
            f"{', '.join(repr(k) for k in _JOURNAL_KEYS)} (found: {keys}){hint}"
        )
    problems: list[str] = []
    experiment = data.get("experiment")
    if not isinstance(experiment, dict):
        problems.append("the journal has no 'experiment' object: title and hypothesis unknown")
        experiment = {}
    hypothesis = experiment.get("steady-state-hypothesis")
    if not isinstance(hypothesis, dict):
        hypothesis = {}
    declared = tuple(
        p
        for p in as_list(hypothesis.get("probes"), "experiment hypothesis probes", problems)
        if isinstance(p, dict)
    )

    status = data.get("status")
    if not isinstance(status, str):
        problems.append("the journal has no 'status': the run may not have finished")
        status = "unknown"
    deviated = data.get("deviated")
    if not isinstance(deviated, bool):
        if deviated is not None:
            problems.append(f"'deviated' is {json_type(deviated)}, not true/false")
        deviated = False

    states = data.get("steady_states")
    if states is not None and not isinstance(states, dict):
        problems.append(f"'steady_states' is {json_type(states)}, not an object; ignored")
        states = None
    states = states or {}
    before = _hypothesis(states.get("before"), "before", problems)
    after = _hypothesis(states.get("after"), "after", problems)
    during_raw = states.get("during")
    during: list[Hypothesis] = []
    for i, item in enumerate(as_list(during_raw, "steady_states.during", problems)):
        hyp = _hypothesis(item, "during", problems, where=f"steady_states.during[{i}]")
        if hyp is not None:
            during.append(hyp)

    method = _activities(data.get("run"), "method", "run", problems)
    rollbacks = _activities(data.get("rollbacks"), "rollback", "rollbacks", problems)

    extension, others = parse_extensions(data.get("extensions"), problems)
    duration = data.get("duration")
    return Journal(
        source=source,
        raw=data,
        title=text(experiment.get("title")) or Path(source).stem,
        description=text(experiment.get("description")),
        tags=tuple(str(t) for t in experiment.get("tags") or () if isinstance(t, str | int)),
        status=status,
        deviated=deviated,
        start=time_field(data.get("start"), "start", problems),
        end=time_field(data.get("end"), "end", problems),
        duration=number(duration),
        hypothesis_title=text(hypothesis.get("title")),
        declared_probes=declared,
        before=before,
        after=after,
        during=tuple(during),
        method=method,
        rollbacks=rollbacks,
        chaoslib_version=text(data.get("chaoslib-version")),
        platform=text(data.get("platform")),
        node=text(data.get("node")),
        extension=extension,
        other_extensions=others,
        problems=tuple(problems),
    )


def _hypothesis(
    raw: Any, phase: str, problems: list[str], where: str | None = None
) -> Hypothesis | None:
    where = where or f"steady_states.{phase}"
    if raw is None:
        return None
    if not isinstance(raw, dict):
        problems.append(f"{where} is {json_type(raw)}, not an object; ignored")
        return None
    met = raw.get("steady_state_met")
    probes = _activities(raw.get("probes"), phase, f"{where}.probes", problems)
    return Hypothesis(phase=phase, met=met if isinstance(met, bool) else None, probes=probes)


def _activities(
    raw: Any, phase: str, where: str, problems: list[str]
) -> tuple[ActivityResult, ...]:
    results = []
    for i, item in enumerate(as_list(raw, where, problems)):
        if not isinstance(item, dict):
            problems.append(f"{where}[{i}] is {json_type(item)}, not an activity; skipped")
            continue
        results.append(_activity(item, phase, f"{where}[{i}]", problems))
    return tuple(results)


def _activity(
    item: Mapping[str, Any], phase: str, where: str, problems: list[str]
) -> ActivityResult:
    activity = item.get("activity")
    if not isinstance(activity, dict):
        problems.append(f"{where} has no 'activity' object: name unknown")
        activity = {}
    exception = item.get("exception")
    if isinstance(exception, list):
        exception = "".join(str(line) for line in exception)
    elif exception is not None:
        exception = str(exception)
    duration = item.get("duration")
    met = item.get("tolerance_met")
    status = item.get("status")
    kind = text(activity.get("type"))
    return ActivityResult(
        name=text(activity.get("name")) or f"(unnamed {activity.get('type', 'activity')})",
        kind=kind if kind in ("action", "probe") else "unknown",
        phase=phase,
        status=status if isinstance(status, str) else "unknown",
        start=time_field(item.get("start"), f"{where}.start", problems),
        end=time_field(item.get("end"), f"{where}.end", problems),
        duration=number(duration),
        output=item.get("output"),
        exception=exception or None,
        tolerance=activity.get("tolerance"),
        has_tolerance="tolerance" in activity,
        tolerance_met=met if isinstance(met, bool) else None,
        background=bool(activity.get("background")),
        provider=_provider_summary(activity.get("provider")),
    )


def _provider_summary(provider: Any) -> str:
    if not isinstance(provider, dict):
        return ""
    kind = provider.get("type", "")
    if kind == "python":
        return f"python {provider.get('module', '?')}.{provider.get('func', '?')}"
    if kind == "process":
        return f"process {provider.get('path', '?')}"
    if kind == "http":
        return f"http {provider.get('method', 'GET')} {provider.get('url', '?')}"
    return str(kind)


def summarize_value(value: Any, limit: int = 160) -> str:
    """A probe's output in one short line (JSON, truncated)."""
    if isinstance(value, str):
        text = value
    else:
        try:
            text = json.dumps(value, sort_keys=True, default=str)
        except (TypeError, ValueError):
            text = repr(value)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def describe_tolerance(tolerance: Any) -> str:
    """A probe's tolerance as people read it: ``== true``, ``in [0.99, 1]``, ``matches /x/``."""
    if tolerance is None:
        return "(none)"
    if isinstance(tolerance, bool):
        return f"== {str(tolerance).lower()}"
    if isinstance(tolerance, int | float | str):
        return f"== {json.dumps(tolerance)}"
    if isinstance(tolerance, list):
        return "one of " + json.dumps(tolerance)
    if isinstance(tolerance, dict):
        kind = tolerance.get("type")
        target = tolerance.get("target")
        on = f" ({target})" if target else ""
        if kind == "range" and isinstance(tolerance.get("range"), list):
            low, high = (tolerance["range"] + [None, None])[:2]
            return f"in [{low}, {high}]{on}"
        if kind == "regex":
            return f"matches /{tolerance.get('pattern', '')}/{on}"
        if kind == "jsonpath":
            path = tolerance.get("path", "")
            if "expect" in tolerance:
                return f"{path} == {json.dumps(tolerance['expect'])}{on}"
            return f"{path} matches{on}"
        if kind == "probe":
            provider = tolerance.get("provider")
            func = provider.get("func", "") if isinstance(provider, dict) else ""
            label = tolerance.get("name") or func
            return f"probe {label}" if label else "probe"
        return summarize_value(tolerance, 120)
    return summarize_value(tolerance, 120)
