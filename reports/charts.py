"""Charts for the reports, drawn by matplotlib and inlined as SVG.

Two kinds: the run's timeline (every activity of the hypothesis, method and
rollbacks as a bar, by phase and status) and the metrics the sampler wrote
into the journal (API server p99, 429 rate, DNS success ratio, nodes Ready and
cordoned, Xid-to-cordon times, and any other series). Both share one x axis,
seconds since the experiment started, and shade the fault windows, so a
reader can line a latency spike up with the fault that caused it.

matplotlib's object API is used without pyplot (no global figure state, no
GUI), on the Agg backend; text stays text in the SVG (smaller, selectable),
and element ids are salted per chart so several charts can share one page.
"""

from __future__ import annotations

import html
import io
import math
import re
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import matplotlib

matplotlib.use("Agg")

from matplotlib import rc_context
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from blackstart.reports.journal import (
    ActivityResult,
    FaultWindow,
    Journal,
    MetricSeries,
)

__all__ = ["Chart", "metric_charts", "time_origin", "timeline_chart"]

# Palette (colour-blind safe, Tableau 10) and the fault shading.
PHASE_COLOURS = {
    "before": "#4c78a8",
    "during": "#72b7b2",
    "after": "#4c78a8",
    "method": "#f58518",
    "rollback": "#b279a2",
}
FAILED_COLOUR = "#e45756"
FAULT_COLOUR = "#e45756"
SERIES_COLOURS = ("#4c78a8", "#f58518", "#54a24b", "#b279a2", "#e45756", "#72b7b2")
PHASE_LABELS = {
    "before": "hypothesis",
    "during": "hypothesis during",
    "after": "hypothesis after",
    "method": "method",
    "rollback": "rollback",
}

# Charts of the standard series (see the journal contract), in page order.
# Series not named here get a chart of their own after these.
STANDARD_CHARTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("API server p99 latency", ("apiserver_p99_seconds",)),
    ("API server 429 responses", ("apiserver_429_per_second",)),
    ("Data-plane DNS success ratio", ("dns_success_ratio",)),
    ("Data-plane DNS p99 latency", ("dns_p99_seconds",)),
    ("Nodes Ready", ("nodes_ready",)),
    ("Nodes cordoned", ("nodes_cordoned",)),
    ("Xid to cordon", ("xid_to_cordon_seconds",)),
    ("kube-apiserver memory", ("apiserver_memory_bytes", "control_plane_memory_limit_bytes")),
    ("kube-apiserver CPU", ("apiserver_cpu_cores",)),
    ("kube-apiserver restarts", ("apiserver_restarts",)),
    (
        "CoreDNS requests and failures",
        ("coredns_requests_per_second", "coredns_failures_per_second"),
    ),
    ("CoreDNS p99 latency", ("coredns_p99_seconds",)),
)
POINT_SERIES = ("xid_to_cordon_seconds",)  # events, not a continuous signal
RATIO_SERIES = ("dns_success_ratio",)
COUNT_UNITS = ("nodes", "pods", "plans", "count")  # whole numbers, not drawn from zero
MAX_TIMELINE_ROWS = 40
LABEL_ROWS = 3
SHOW_SAMPLES_UP_TO = 60
WIDTH_IN = 9.0

_RC: Any = {  # rcParams for every chart
    "svg.fonttype": "none",
    "font.size": 9,
    "font.family": "sans-serif",
    "font.sans-serif": ["DejaVu Sans", "Liberation Sans", "Arial", "Helvetica"],
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.titlesize": 10,
}


@dataclass(frozen=True)
class Chart:
    """One chart: its title, the inline SVG and a one-line figure summary."""

    key: str
    title: str
    svg: str
    summary: str


# ------------------------------------------------------------------- helpers
def time_origin(journal: Journal) -> datetime | None:
    """t = 0 of every chart: the journal's start, else its earliest timestamp."""
    if journal.start:
        return journal.start
    times = [a.start for a in journal.activities if a.start]
    if journal.extension:
        times += [p[0] for s in journal.extension.series for p in s.points[:1]]
        times += [f.start for f in journal.extension.faults]
    return min(times) if times else None


def _seconds(when: datetime, origin: datetime) -> float:
    return (when - origin).total_seconds()


def _run_end(journal: Journal, origin: datetime) -> float:
    ends = [0.0]
    if journal.end:
        ends.append(_seconds(journal.end, origin))
    for act in journal.activities:
        if act.end:
            ends.append(_seconds(act.end, origin))
    if journal.extension:
        for s in journal.extension.series:
            if s.points:
                ends.append(_seconds(s.points[-1][0], origin))
    return max(ends)


def _svg(fig: Figure, salt: str, label: str, tight: bool = True) -> str:
    """The figure as an inline <svg> element: no XML prolog, ids unique to this chart."""
    buf = io.StringIO()
    with rc_context({"svg.hashsalt": salt}):
        fig.savefig(
            buf, format="svg", bbox_inches="tight" if tight else None, metadata={"Date": None}
        )
    text = buf.getvalue()
    start = text.find("<svg")
    text = text[start:] if start >= 0 else text
    text = re.sub(r"\s*<metadata>.*?</metadata>", "", text, count=1, flags=re.S)
    # Several charts share a page: give every id (and every reference to one) the chart's prefix.
    text = re.sub(r'\sid="([^"]+)"', rf' id="{salt}-\1"', text)
    text = re.sub(r'(url\(#|href="#)([^")]+)', rf"\g<1>{salt}-\2", text)
    # Responsive: drop the fixed size from the opening tag, keep the viewBox; CSS sizes it.
    head_end = text.find(">") + 1
    head = re.sub(r'\s(width|height)="[^"]*"', "", text[:head_end])
    head = head.replace(
        "<svg",
        f'<svg role="img" class="chart" id="chart-{salt}" aria-label="{html.escape(label)}"',
        1,
    )
    return head + text[head_end:]


def _shade_faults(ax: Axes, faults: Sequence[FaultWindow], origin: datetime, end: float) -> None:
    """Shade each fault window; label it above the axes (up to three staggered rows)."""
    for i, fault in enumerate(faults):
        x0 = _seconds(fault.start, origin)
        open_ended = fault.end is None
        x1 = end if fault.end is None else _seconds(fault.end, origin)
        ax.axvspan(
            x0,
            max(x1, x0 + 1e-3),
            facecolor=FAULT_COLOUR,
            edgecolor=FAULT_COLOUR,
            alpha=0.13,
            linewidth=0,
            zorder=0,
        )
        label = fault.name + (" (never rolled back)" if open_ended else "")
        ax.annotate(
            label,
            xy=(x0, 1.0),
            xycoords=ax.get_xaxis_transform(),
            xytext=(1, 3 + 11 * (i % LABEL_ROWS)),
            textcoords="offset points",
            fontsize=7.5,
            color="#9c2f2f",
            va="bottom",
            ha="left",
            arrowprops={"arrowstyle": "-", "color": "#c98b8b", "linewidth": 0.6},
            annotation_clip=False,
        )


def _label_rows(faults: Sequence[FaultWindow]) -> int:
    return min(len(faults), LABEL_ROWS)


def _fault_handle(faults: Sequence[FaultWindow]) -> list[Patch]:
    if not faults:
        return []
    return [Patch(facecolor=FAULT_COLOUR, alpha=0.2, label="fault window")]


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "chart"


# ------------------------------------------------------------------ timeline
def timeline_chart(journal: Journal) -> Chart | None:
    """Every activity as a bar on its own row, by phase; fault windows shaded.

    None when no activity has timestamps (nothing to draw).
    """
    origin = time_origin(journal)
    acts = [a for a in journal.activities if a.start]
    if origin is None or not acts:
        return None
    rows: dict[tuple[str, str], list[ActivityResult]] = {}
    for act in acts:
        rows.setdefault((_row_phase(act.phase), act.name), []).append(act)
    keys = list(rows)
    hidden = 0
    if len(keys) > MAX_TIMELINE_ROWS:
        hidden = len(keys) - MAX_TIMELINE_ROWS
        keys = keys[:MAX_TIMELINE_ROWS]
    end = _run_end(journal, origin)
    min_width = max(end, 1.0) * 0.004

    with rc_context(_RC):
        fig = Figure(figsize=(WIDTH_IN, 0.9 + 0.26 * len(keys)), layout="constrained")
        ax = fig.subplots()
        _shade_faults(ax, journal.faults, origin, end)
        for row, key in enumerate(keys):
            for act in rows[key]:
                x0 = _seconds(act.start, origin)  # type: ignore[arg-type]
                width = act.duration if act.duration is not None else 0.0
                if act.end:
                    width = max(width, _seconds(act.end, origin) - x0)
                bad = act.failed or act.tolerance_met is False
                ax.barh(
                    row,
                    max(width, min_width),
                    left=x0,
                    height=0.6,
                    color=FAILED_COLOUR if bad else PHASE_COLOURS.get(act.phase, "#888888"),
                    edgecolor="#7a1f1f" if bad else "none",
                    linewidth=0.8,
                    hatch="xx" if act.failed else None,
                )
        ax.set_yticks(range(len(keys)), [f"{name}" for _, name in keys], fontsize=8)
        ax.set_ylim(len(keys) - 0.5, -0.5)  # first activity on top, no empty margin rows
        ax.set_xlim(left=min(0.0, ax.get_xlim()[0]), right=max(end, min_width) * 1.02)
        ax.set_xlabel("seconds since the experiment started")
        ax.grid(axis="x", color="#dddddd", linewidth=0.6)
        ax.set_axisbelow(True)
        _phase_bands(ax, keys)
        handles = [
            Patch(color=PHASE_COLOURS[p], label=PHASE_LABELS[p])
            for p in ("before", "method", "during", "rollback")
            if any(k[0] == p for k in keys)
        ]
        handles.append(Patch(color=FAILED_COLOUR, label="failed / out of tolerance"))
        handles += _fault_handle(journal.faults)
        fig.legend(
            handles=handles,
            loc="outside lower center",
            ncols=min(len(handles), 5),
            frameon=False,
            fontsize=8,
        )
        svg = _svg(fig, "timeline", "Timeline of the run's activities")
    summary = f"{len(acts)} activities over {end:.1f} s"
    if journal.faults:
        summary += f", {len(journal.faults)} fault window(s) shaded"
    if hidden:
        summary += f"; {hidden} more rows not drawn (see the table)"
    return Chart(key="timeline", title="Timeline", svg=svg, summary=summary)


def _row_phase(phase: str) -> str:
    return "before" if phase == "after" else phase


def _phase_bands(ax: Axes, keys: Sequence[tuple[str, str]]) -> None:
    """Thin separators between the rows of different phases."""
    for i in range(1, len(keys)):
        if keys[i][0] != keys[i - 1][0]:
            ax.axhline(i - 0.5, color="#bbbbbb", linewidth=0.6, linestyle=":")


# ------------------------------------------------------------------- metrics
def metric_charts(journal: Journal) -> list[Chart]:
    """One chart per standard group of series present, then one per other series."""
    ext = journal.extension
    origin = time_origin(journal)
    if ext is None or origin is None or not ext.series:
        return []
    by_name = {s.name: s for s in ext.series}
    groups: list[tuple[str, list[MetricSeries]]] = []
    used: set[str] = set()
    for title, names in STANDARD_CHARTS:
        present = [by_name[n] for n in names if n in by_name]
        if present:
            groups.append((title, present))
            used.update(n for n in names)
    for series in ext.series:
        if series.name not in used:
            groups.append((series.title, [series]))
            used.add(series.name)
    end = _run_end(journal, origin)
    return [_metric_chart(title, group, journal.faults, origin, end) for title, group in groups]


def _metric_chart(
    title: str,
    group: Sequence[MetricSeries],
    faults: Sequence[FaultWindow],
    origin: datetime,
    end: float,
) -> Chart:
    key = "metric-" + _slug("-".join(s.name for s in group))
    unit = group[0].unit
    # Fixed margins (in inches), so the x axes of all metric charts line up on the page.
    plot_h, bottom, left, right = 1.9, 0.5, 0.75, 0.2
    top = 0.3 + 0.16 * _label_rows(faults)
    height = plot_h + bottom + top
    with rc_context(_RC):
        fig = Figure(figsize=(WIDTH_IN, height))
        fig.subplots_adjust(
            left=left / WIDTH_IN,
            right=1 - right / WIDTH_IN,
            bottom=bottom / height,
            top=1 - top / height,
        )
        ax = fig.subplots()
        _shade_faults(ax, faults, origin, end)
        drawn = 0
        for i, series in enumerate(group):
            xs = [_seconds(t, origin) for t, _ in series.points]
            ys = [math.nan if v is None else v for _, v in series.points]
            if not xs:
                continue
            drawn += 1 if series.values else 0
            colour = SERIES_COLOURS[i % len(SERIES_COLOURS)]
            if series.name in POINT_SERIES:
                ax.plot(xs, ys, "o", color=colour, markersize=4.5, label=series.title)
            else:
                # Few samples: mark each one, so a value between two gaps still shows.
                marker = "o" if len(xs) <= SHOW_SAMPLES_UP_TO else None
                ax.plot(
                    xs,
                    ys,
                    "-",
                    marker=marker,
                    markersize=2.5,
                    color=colour,
                    linewidth=1.4,
                    label=series.title,
                )
                missing = [x for x, y in zip(xs, ys, strict=True) if math.isnan(y)]
                if missing:
                    ax.plot(
                        missing,
                        [0.0] * len(missing),
                        "|",
                        color="#777777",
                        markersize=7,
                        transform=ax.get_xaxis_transform(),
                        clip_on=False,
                    )
        ax.margins(y=0.12)
        if all(s.name in RATIO_SERIES for s in group):
            ax.set_ylim(-0.02, 1.05)
        elif unit in COUNT_UNITS:
            # A count: whole-number ticks, scaled to the data so one node less shows.
            ax.yaxis.set_major_locator(MaxNLocator(integer=True, nbins=5))
            values = [v for s in group for v in s.values]
            if values and max(values) - min(values) < 2:
                low, high = min(values), max(values)
                ax.set_ylim(low - 1 if low >= 1 else -0.2, high + 1)
        else:
            values = [v for s in group for v in s.values]
            high = max(values, default=0.0)
            ax.set_ylim(0, high * 1.15 if high > 0 else 1.0)
        ax.set_xlim(0, max(end, 1.0) * 1.02)
        ax.set_ylabel(unit or "value")
        ax.set_xlabel("seconds since the experiment started", labelpad=2)
        ax.grid(color="#e5e5e5", linewidth=0.6)
        ax.set_axisbelow(True)
        if drawn == 0:
            ax.text(
                0.5,
                0.5,
                "no values: every sample was unavailable"
                if any(s.points for s in group)
                else "no samples",
                transform=ax.transAxes,
                ha="center",
                va="center",
                color="#888888",
            )
        if len(group) > 1:  # one series: the page's heading names it
            ax.legend(loc="best", frameon=True, framealpha=0.85, edgecolor="none", fontsize=7.5)
        svg = _svg(fig, key, title, tight=False)
    return Chart(key=key, title=title, svg=svg, summary=_summary(group))


def _summary(group: Iterable[MetricSeries]) -> str:
    parts = []
    for series in group:
        values = series.values
        unit = f" {series.unit}" if series.unit else ""
        if not values:
            parts.append(f"{series.title}: no values ({len(series.points)} samples)")
            continue
        if series.name in POINT_SERIES:
            text = (
                f"{series.title}: {len(values)} events, median {_num(statistics.median(values))}"
                f"{unit}, max {_num(max(values))}{unit}"
            )
        else:
            text = (
                f"{series.title}: min {_num(min(values))}, median "
                f"{_num(statistics.median(values))}, max {_num(max(values))}{unit} "
                f"({len(series.points)} samples"
            )
            text += f", {series.missing} unavailable: ticks on the axis)" if series.missing else ")"
        parts.append(text)
    return "; ".join(parts)


def _num(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 1:
        return f"{value:.2f}".rstrip("0").rstrip(".")
    return f"{value:.3g}"
