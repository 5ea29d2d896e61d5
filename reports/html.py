"""One self-contained HTML page per journal.

:func:`render_report` turns a :class:`~blackstart.reports.journal.Journal`
into a single HTML file: inline CSS, charts as inline SVG (see
:mod:`blackstart.reports.charts`), no scripts, no fonts or images fetched
from anywhere, tracebacks folded with ``<details>``. It opens from disk, from
a CI artifact or an e-mail attachment, and reads the same with JavaScript off.

The page, top to bottom: the verdict; the steady-state hypothesis with each
probe's tolerance and the value observed before, during and after the method;
the timeline of the method and rollbacks with the fault windows; the sampled
metrics; the rescue plans and their transitions; the environment; the errors.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from markupsafe import Markup

from blackstart import __version__
from blackstart.reports.charts import Chart, metric_charts, time_origin, timeline_chart
from blackstart.reports.incident_chart import incident_chart
from blackstart.reports.journal import ActivityResult, Hypothesis, Journal
from blackstart.reports.values import describe_tolerance, summarize_value

__all__ = [
    "OUTCOME_LABELS",
    "environment",
    "format_clock",
    "format_duration",
    "render_report",
    "write_report",
]

#: How each outcome is named on a page.
OUTCOME_LABELS = {
    "completed": "Steady state held",
    "deviated": "Deviated",
    "not-steady": "Not steady before",
    "rollback-failed": "Rollback failed",
    "failed": "Failed",
    "aborted": "Aborted",
    "interrupted": "Interrupted",
    "unknown": "Unknown",
    "timeout": "Timed out",
    "error": "Did not run",
    "skipped": "Not run",
}
PHASE_NAMES = {
    "before": "hypothesis (before)",
    "during": "hypothesis (during)",
    "after": "hypothesis (after)",
    "method": "method",
    "rollback": "rollback",
}
SUMMARY_LIMIT = 90


def environment() -> Environment:
    """The Jinja2 environment of the report templates (``reports/templates``)."""
    env = Environment(
        loader=PackageLoader("blackstart.reports", "templates"),
        autoescape=select_autoescape(enabled_extensions=("html", "j2"), default=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["duration"] = format_duration
    env.filters["clock"] = format_clock
    env.globals["OUTCOME_LABELS"] = OUTCOME_LABELS
    env.globals["version"] = __version__
    return env


# ------------------------------------------------------------------- format
def format_duration(seconds: float | None) -> str:
    """``0.25 s``, ``12.3 s``, ``4 min 05 s``, ``1 h 02 min``; ``—`` when unknown."""
    if seconds is None:
        return "—"
    if seconds < 0.01:
        return f"{seconds * 1000:.1f} ms"
    if seconds < 10:
        return f"{seconds:.2f} s"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def format_clock(when: datetime | None) -> str:
    if when is None:
        return "—"
    return when.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _offset(when: datetime | None, origin: datetime | None) -> str:
    if when is None or origin is None:
        return "—"
    return f"+{(when - origin).total_seconds():.2f} s"


def _pretty(value: Any) -> str:
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, indent=2, sort_keys=True, default=str)
    except (TypeError, ValueError):
        return repr(value)


# --------------------------------------------------------------- view model
@dataclass
class ProbeCell:
    value: str
    full: str
    met: bool | None
    status: str
    error: str = ""
    note: str = ""


@dataclass
class ProbeRow:
    name: str
    tolerance: str
    provider: str
    before: ProbeCell | None = None
    during: ProbeCell | None = None
    after: ProbeCell | None = None


@dataclass
class TimelineRow:
    phase: str
    name: str
    kind: str
    offset: str
    duration: str
    status: str
    bad: bool
    result: str
    full: str
    provider: str


@dataclass
class ErrorEntry:
    phase: str
    name: str
    line: str
    traceback: str


@dataclass
class PlanView:
    name: str
    node: str
    xids: str
    actions: str
    phase: str
    standby: str
    message: str
    source: str
    dry_run: bool
    transitions: list[tuple[str, str, str, str]] = field(default_factory=list)


def _cell(probe: ActivityResult) -> ProbeCell:
    summary = summarize_value(probe.output, SUMMARY_LIMIT)
    return ProbeCell(
        value=summary,
        full=_pretty(probe.output) if len(summary) >= SUMMARY_LIMIT else "",
        met=probe.tolerance_met,
        status=probe.status,
        error=probe.error_line,
    )


def _probe_rows(journal: Journal) -> list[ProbeRow]:
    rows: dict[str, ProbeRow] = {}
    for declared in journal.declared_probes:
        name = str(declared.get("name") or "(unnamed probe)")
        rows.setdefault(
            name,
            ProbeRow(
                name=name,
                tolerance=describe_tolerance(declared.get("tolerance")),
                provider="",
            ),
        )

    def row_for(probe: ActivityResult) -> ProbeRow:
        row = rows.get(probe.name)
        if row is None:
            row = rows[probe.name] = ProbeRow(
                name=probe.name, tolerance=describe_tolerance(probe.tolerance), provider=""
            )
        row.provider = row.provider or probe.provider
        return row

    for hyp in (journal.before, journal.after):
        if hyp is None:
            continue
        for probe in hyp.probes:
            setattr(row_for(probe), hyp.phase, _cell(probe))
    _during_cells(journal.during, row_for)
    return list(rows.values())


def _during_cells(during: Sequence[Hypothesis], row_for: Any) -> None:
    runs: dict[str, list[ActivityResult]] = {}
    for hyp in during:
        for probe in hyp.probes:
            runs.setdefault(probe.name, []).append(probe)
    for name, probes in runs.items():
        missed = [p for p in probes if p.tolerance_met is False]
        shown = missed[0] if missed else probes[-1]
        cell = _cell(shown)
        cell.met = not missed if all(p.tolerance_met is not None for p in probes) else None
        met = sum(1 for p in probes if p.tolerance_met)
        cell.note = f"{met} of {len(probes)} met" + (" (first miss shown)" if missed else "")
        row_for(probes[0]).during = cell
        del name


def _timeline_rows(journal: Journal, origin: datetime | None) -> tuple[list[TimelineRow], int]:
    """Rows of the activity table, and how many passing continuous-hypothesis runs were left out.

    A continuous hypothesis runs its probes every second or so; listing every
    passing run would bury the method, so only its misses are listed.
    """
    rows = []
    quiet = 0
    for act in journal.activities:
        if act.phase == "during" and not (act.failed or act.tolerance_met is False):
            quiet += 1
            continue
        summary = summarize_value(act.output, SUMMARY_LIMIT) if act.output is not None else ""
        if act.exception:
            summary = act.error_line
        full = ""
        if act.output is not None and len(summarize_value(act.output, 10_000)) >= SUMMARY_LIMIT:
            full = _pretty(act.output)
        status = act.status
        if act.tolerance_met is False:
            status += ", out of tolerance"
        rows.append(
            TimelineRow(
                phase=PHASE_NAMES.get(act.phase, act.phase),
                name=act.name,
                kind=act.kind + (" (background)" if act.background else ""),
                offset=_offset(act.start, origin),
                duration=format_duration(act.duration),
                status=status,
                bad=act.failed or act.tolerance_met is False,
                result=summary,
                full=full,
                provider=act.provider,
            )
        )
    return rows, quiet


def _plans(journal: Journal, origin: datetime | None) -> list[PlanView]:
    if journal.extension is None:
        return []
    views = []
    for plan in journal.extension.rescue_plans:
        view = PlanView(
            name=plan.name,
            node=plan.node or "—",
            xids=", ".join(str(x) for x in plan.xids) or "—",
            actions=" → ".join(plan.actions) or "—",
            phase=plan.phase,
            standby=plan.standby,
            message=plan.message,
            source=plan.source,
            dry_run=plan.dry_run,
        )
        for t in plan.transitions:
            view.transitions.append(
                (t.phase, format_clock(t.time), _offset(t.time, origin), t.message)
            )
        views.append(view)
    return views


def _environment_rows(journal: Journal) -> tuple[list[tuple[str, str]], list[tuple[str, str]], str]:
    facts: list[tuple[str, str]] = []
    versions: list[tuple[str, str]] = []
    spec = ""
    ext = journal.extension
    if ext is not None:
        env = ext.environment
        for key, label in (
            ("provider", "provider"),
            ("cluster", "cluster"),
            ("context", "context"),
        ):
            if env.get(key) not in (None, ""):
                facts.append((label, str(env[key])))
        versions = [(str(k), str(v)) for k, v in sorted(ext.versions.items())]
        if env.get("spec") is not None:
            spec = _pretty(env["spec"])
        for key, value in sorted(env.items()):
            if key not in ("provider", "cluster", "context", "versions", "spec"):
                facts.append((key, summarize_value(value, 200)))
        if ext.interval_s:
            facts.append(("metrics interval", f"{ext.interval_s:g} s"))
    if journal.chaoslib_version and not any(k == "chaostoolkit-lib" for k, _ in versions):
        versions.append(("chaostoolkit-lib", journal.chaoslib_version))
    if journal.platform:
        facts.append(("platform", journal.platform))
    if journal.node:
        facts.append(("host", journal.node))
    if journal.other_extensions:
        facts.append(("other extensions", ", ".join(journal.other_extensions)))
    return facts, versions, spec


# ------------------------------------------------------------------- render
def render_report(
    journal: Journal,
    *,
    expected: str | None = None,
    journal_href: str | None = None,
    index_href: str | None = None,
    generated_at: datetime | None = None,
) -> str:
    """The page of ``journal`` as one HTML document.

    ``expected`` (``completed`` or ``deviated``) adds whether the run ended as
    its game-day suite expects; ``journal_href`` and ``index_href`` add links
    to the raw journal and to the suite's index page.
    """
    origin = time_origin(journal)
    timeline: Chart | None = timeline_chart(journal)
    timeline_rows, quiet_during = _timeline_rows(journal, origin)
    dashboard = incident_chart(journal)
    charts = ([dashboard] if dashboard else []) + metric_charts(journal)
    facts, versions, spec = _environment_rows(journal)
    ext = journal.extension
    errors = [
        ErrorEntry(
            phase=PHASE_NAMES.get(a.phase, a.phase),
            name=a.name,
            line=a.error_line or f"status {a.status}",
            traceback=a.exception or "",
        )
        for a in journal.errors
    ]
    rollbacks_total = len(journal.rollbacks)
    rollbacks_ok = sum(1 for r in journal.rollbacks if r.status == "succeeded")
    template = environment().get_template("report.html.j2")
    return template.render(
        j=journal,
        outcome=journal.outcome,
        expected=expected,
        as_expected=None if expected is None else journal.outcome == expected,
        probe_rows=_probe_rows(journal),
        has_during=bool(journal.during),
        timeline=timeline,
        timeline_svg=Markup(timeline.svg) if timeline else None,
        timeline_rows=timeline_rows,
        quiet_during=quiet_during,
        charts=[(c, Markup(c.svg)) for c in charts],
        series=list(ext.series) if ext else [],
        faults=[
            (
                f.name,
                f.activity,
                _offset(f.start, origin),
                _offset(f.end, origin) if f.end else None,
            )
            for f in journal.faults
        ],
        plans=_plans(journal, origin),
        facts=facts,
        versions=versions,
        spec=spec,
        errors=errors,
        rollbacks_total=rollbacks_total,
        rollbacks_ok=rollbacks_ok,
        journal_href=journal_href,
        index_href=index_href,
        generated=format_clock(generated_at or datetime.now(UTC)),
    )


def write_report(
    journal: Journal,
    path: str | Path,
    *,
    expected: str | None = None,
    journal_href: str | None = None,
    index_href: str | None = None,
) -> Path:
    """Render ``journal`` and write it to ``path`` (folders are created); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    html = render_report(
        journal, expected=expected, journal_href=journal_href, index_href=index_href
    )
    path.write_text(html, encoding="utf-8")
    return path
