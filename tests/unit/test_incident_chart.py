"""The report's incident dashboard: the control plane and CoreDNS on one time axis."""

import copy
import json
from pathlib import Path
from typing import Any

from blackstart.reports.html import render_report
from blackstart.reports.incident_chart import incident_chart
from blackstart.reports.journal_loading import parse_journal

STORM = Path(__file__).resolve().parents[1] / "fixtures" / "journals" / "blackstart-storm.json"
MIB = 1024**2


def journal_with_control_plane() -> dict[str, Any]:
    data = json.loads(STORM.read_text())
    entry = next(e for e in data["extensions"] if e["name"] == "blackstart")
    times = [p[0] for p in entry["metrics"]["series"][0]["points"]]
    memory = [200 * MIB + i * 20 * MIB if i < 40 else None for i in range(len(times))]
    restarts = [0 if i < 40 else 1 for i in range(len(times))]
    failures = [0.0 if i < 30 else 12.0 for i in range(len(times))]
    for name, unit, values in (
        ("apiserver_memory_bytes", "bytes", memory),
        ("control_plane_memory_limit_bytes", "bytes", [1024 * MIB] * len(times)),
        ("apiserver_restarts", "count", restarts),
        ("coredns_requests_per_second", "1/s", [40.0] * len(times)),
        ("coredns_failures_per_second", "1/s", failures),
    ):
        entry["metrics"]["series"].append(
            {"name": name, "title": name, "unit": unit, "query": "q",
             "points": [[t, v] for t, v in zip(times, values, strict=True)]}
        )  # fmt: skip
    return data


def test_the_dashboard_stacks_the_control_plane_and_coredns_on_one_axis() -> None:
    chart = incident_chart(parse_journal(journal_with_control_plane()))
    assert chart is not None
    assert chart.key == "incident"
    assert "memory peaked at 980 MiB" in chart.summary
    assert "limit 1024 MiB" in chart.summary
    assert "1 restart(s)" in chart.summary
    assert "CoreDNS failures up to 12.0/s" in chart.summary
    for row in ("kube-apiserver memory", "restarts", "API p99", "CoreDNS requests", "DNS success"):
        assert row in chart.svg, row
    assert chart.svg.count("telemetry-storm") >= 1  # the fault window is named on the axis


def test_no_dashboard_without_the_control_plane_series() -> None:
    data = json.loads(STORM.read_text())
    assert incident_chart(parse_journal(data)) is None


def test_the_report_puts_the_dashboard_first() -> None:
    page = render_report(parse_journal(journal_with_control_plane()))
    assert page.index("Control plane and CoreDNS on one time axis") < page.index(
        "API server p99 latency"
    )
    plain = render_report(parse_journal(copy.deepcopy(json.loads(STORM.read_text()))))
    assert "Control plane and CoreDNS on one time axis" not in plain
