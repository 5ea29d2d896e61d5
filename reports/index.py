"""The index page of a game day (or of several journals): one row per experiment.

Each row: the experiment, what the suite expected, how it ended, whether
that is as expected, how long it took, which probes deviated, and links to
its page, its raw journal and its Chaos Toolkit log. Above the table: the
overall verdict (all as expected, or how many not), the counts, the wall
time and the environment. Self-contained like the per-experiment pages.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

from blackstart.reports.html import environment, format_clock, format_duration
from blackstart.reports.runs import ExperimentRun

__all__ = ["render_index", "write_index"]


def render_index(
    runs: Sequence[ExperimentRun],
    *,
    title: str = "Game day",
    started: datetime | None = None,
    wall_time: float | None = None,
    facts: Mapping[str, str] | None = None,
    junit_href: str | None = None,
    notes: Sequence[str] = (),
    generated_at: datetime | None = None,
) -> str:
    """The index page for ``runs`` as one HTML document.

    ``facts`` are shown as the environment (provider, cluster, suite file...);
    ``notes`` are shown above the table (for example: interrupted by Ctrl-C).
    """
    unexpected = [r for r in runs if not r.as_expected and r.outcome != "skipped"]
    skipped = [r for r in runs if r.outcome == "skipped"]
    if not runs:
        overall, headline = "unknown", "No experiment was run."
    elif unexpected:
        overall = "failed"
        headline = (
            f"{len(unexpected)} of {len(runs)} experiments did not end as expected: "
            + ", ".join(r.name for r in unexpected)
            + "."
        )
    elif skipped:
        overall = "interrupted"
        headline = f"{len(skipped)} of {len(runs)} experiments were not run."
    else:
        overall = "completed"
        headline = f"All {len(runs)} experiments ended as expected."
    template = environment().get_template("index.html.j2")
    return template.render(
        title=title,
        runs=runs,
        overall=overall,
        headline=headline,
        counts={
            "as expected": sum(1 for r in runs if r.as_expected),
            "not as expected": len(unexpected),
            "not run": len(skipped),
        },
        started=format_clock(started) if started else "—",
        wall_time=format_duration(wall_time),
        facts=list((facts or {}).items()),
        junit_href=junit_href,
        notes=list(notes),
        generated=format_clock(generated_at or datetime.now(UTC)),
    )


def write_index(
    path: str | Path,
    runs: Sequence[ExperimentRun],
    *,
    title: str = "Game day",
    started: datetime | None = None,
    wall_time: float | None = None,
    facts: Mapping[str, str] | None = None,
    junit_href: str | None = None,
    notes: Sequence[str] = (),
) -> Path:
    """Write :func:`render_index` to ``path``; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    html = render_index(
        runs,
        title=title,
        started=started,
        wall_time=wall_time,
        facts=facts,
        junit_href=junit_href,
        notes=notes,
    )
    path.write_text(html, encoding="utf-8")
    return path
