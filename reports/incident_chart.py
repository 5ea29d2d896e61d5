"""The incident dashboard: the control plane and CoreDNS on one time axis, fault windows shaded.

One figure, one row per signal, every row sharing the x axis (seconds since
the experiment started): kube-apiserver memory against its limit, its CPU,
its restarts, the API server's p99 and 429s, CoreDNS's requests and
failures, CoreDNS's p99 and the data-plane DNS success ratio. A reader sees
the chain of the December 2024 incident in one glance: memory climbing to the
limit, the restarts, the latency, DNS failing, and where each fault and
remedy sat. Drawn only when the journal has the control plane's series
(local clusters).
"""

import math
from collections.abc import Sequence
from datetime import datetime

from matplotlib import rc_context
from matplotlib.figure import Figure

from blackstart.reports.charts import (
    _RC,
    FAULT_COLOUR,
    SERIES_COLOURS,
    WIDTH_IN,
    Chart,
    _label_rows,
    _run_end,
    _seconds,
    _shade_faults,
    _svg,
    time_origin,
)
from blackstart.reports.extension import FaultWindow, MetricSeries
from blackstart.reports.journal import Journal

__all__ = ["INCIDENT_ROWS", "incident_chart"]

MIB = 1024.0**2
# (row label, unit shown, scale, series drawn on it); a row without data is left out
INCIDENT_ROWS: tuple[tuple[str, str, float, tuple[str, ...]], ...] = (
    ("kube-apiserver memory", "MiB", MIB, ("apiserver_memory_bytes",
                                           "control_plane_memory_limit_bytes")),
    ("kube-apiserver CPU", "cores", 1.0, ("apiserver_cpu_cores",)),
    ("restarts", "count", 1.0, ("apiserver_restarts",)),
    ("API p99", "s", 1.0, ("apiserver_p99_seconds",)),
    ("API 429s", "1/s", 1.0, ("apiserver_429_per_second",)),
    ("CoreDNS requests", "1/s", 1.0, ("coredns_requests_per_second",
                                      "coredns_failures_per_second")),
    ("CoreDNS p99", "s", 1.0, ("coredns_p99_seconds",)),
    ("DNS success", "ratio", 1.0, ("dns_success_ratio",)),
)  # fmt: skip
TRIGGER = ("apiserver_memory_bytes", "apiserver_restarts", "coredns_requests_per_second")
ROW_HEIGHT_IN = 1.05


def _shade(ax: object, faults: Sequence[FaultWindow], origin: datetime, end: float) -> None:
    for fault in faults:
        x0 = _seconds(fault.start, origin)
        x1 = end if fault.end is None else _seconds(fault.end, origin)
        ax.axvspan(x0, max(x1, x0 + 1e-3), facecolor=FAULT_COLOUR, alpha=0.13,  # type: ignore[attr-defined]
                   linewidth=0, zorder=0)  # fmt: skip


def incident_chart(journal: Journal) -> Chart | None:
    """The dashboard of ``journal``; None when it holds none of the control plane's series."""
    ext = journal.extension
    origin = time_origin(journal)
    if ext is None or origin is None:
        return None
    by_name = {s.name: s for s in ext.series}
    if not any(by_name.get(n) is not None and by_name[n].values for n in TRIGGER):
        return None
    rows = [
        (label, unit, scale, [by_name[n] for n in names if n in by_name])
        for label, unit, scale, names in INCIDENT_ROWS
        if any(n in by_name and by_name[n].values for n in names)
    ]
    end = _run_end(journal, origin)
    # fixed margins (inches): room for the row labels on the left, the fault names on top
    top, bottom, left, right = 0.3 + 0.16 * _label_rows(journal.faults), 0.5, 1.6, 0.2
    height = top + bottom + ROW_HEIGHT_IN * len(rows)
    with rc_context(_RC):
        fig = Figure(figsize=(WIDTH_IN, height))
        fig.subplots_adjust(left=left / WIDTH_IN, right=1 - right / WIDTH_IN,
                            bottom=bottom / height, top=1 - top / height, hspace=0.25)  # fmt: skip
        axes = fig.subplots(len(rows), 1, sharex=True, squeeze=False)[:, 0]
        for index, (ax, (label, unit, scale, group)) in enumerate(zip(axes, rows, strict=True)):
            if index == 0:  # shaded and named once, above the first row
                _shade_faults(ax, journal.faults, origin, end)
            else:
                _shade(ax, journal.faults, origin, end)
            for i, series in enumerate(group):
                _draw(ax, series, origin, scale, SERIES_COLOURS[i % len(SERIES_COLOURS)])
            ax.set_ylabel(f"{label}\n({unit})", fontsize=7.5, rotation=0, ha="right",
                          va="center", labelpad=6)  # fmt: skip
            ax.grid(color="#e5e5e5", linewidth=0.6)
            ax.set_axisbelow(True)
            if unit == "ratio":
                ax.set_ylim(-0.05, 1.05)
            else:
                ax.set_ylim(bottom=0)
            if len(group) > 1:
                ax.legend(fontsize=6.5, loc="upper left", frameon=False)
        axes[-1].set_xlim(0, max(end, 1.0) * 1.02)
        axes[-1].set_xlabel("seconds since the experiment started")
        svg = _svg(fig, "incident", "Control plane and CoreDNS on one time axis", tight=False)
    return Chart(
        key="incident",
        title="Control plane and CoreDNS on one time axis",
        svg=svg,
        summary=_summary(by_name),
    )


def _draw(ax: object, series: MetricSeries, origin: datetime, scale: float, colour: str) -> None:
    xs = [_seconds(t, origin) for t, _ in series.points]
    ys = [math.nan if v is None else v / scale for _, v in series.points]
    limit = series.name == "control_plane_memory_limit_bytes"
    step = series.name == "apiserver_restarts"
    ax.plot(  # type: ignore[attr-defined]
        xs,
        ys,
        "--" if limit else "-",
        drawstyle="steps-post" if step else "default",
        color="#777777" if limit else colour,
        linewidth=1.0 if limit else 1.3,
        label=series.title,
    )


def _summary(by_name: dict[str, MetricSeries]) -> str:
    parts = []
    memory = by_name.get("apiserver_memory_bytes")
    if memory and memory.values:
        parts.append(f"kube-apiserver memory peaked at {max(memory.values) / MIB:.0f} MiB")
    limit = by_name.get("control_plane_memory_limit_bytes")
    if limit and limit.values:
        parts.append(f"limit {max(limit.values) / MIB:.0f} MiB")
    restarts = by_name.get("apiserver_restarts")
    if restarts and restarts.values:
        parts.append(f"{max(restarts.values) - min(restarts.values):.0f} restart(s) in the run")
    failures = by_name.get("coredns_failures_per_second")
    if failures and failures.values:
        parts.append(f"CoreDNS failures up to {max(failures.values):.1f}/s")
    return "; ".join(parts) or "control plane and CoreDNS series"
