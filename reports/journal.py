"""Chaos Toolkit journals as a typed model, for the reports.

:func:`~.journal_loading.load_journal` reads any Chaos Toolkit journal (``chaos run
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

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from blackstart.reports.extension import (
    EXTENSION_NAME,
    BlackstartExtension,
    FaultWindow,
    MetricSeries,
    PlanTransition,
    RescuePlan,
)
from blackstart.reports.fields import (
    parse_time,
)
from blackstart.reports.values import describe_tolerance, summarize_value

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
    "parse_time",
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
