"""JUnit XML for CI systems: one test case per experiment.

The layout is the common one that GitHub (test-report actions), GitLab
(``artifacts:reports:junit``), Jenkins and Buildkite read::

    <testsuites name=... tests= failures= errors= skipped= time=>
      <testsuite name=... tests= failures= errors= skipped= time= timestamp= hostname=>
        <properties><property name="provider" value="local"/>...</properties>
        <testcase name="telemetry-storm" classname="blackstart.gameday.<suite>" time="..">
          <failure type="deviated" message="...">one line per deviated probe</failure>
          <system-out>the verdict, the deviated probes, where the report is</system-out>
        </testcase>

A run that deviated when the suite expected it to hold (or held when it was
expected to deviate) is a ``failure`` carrying each deviated probe's name,
tolerance and observed value. A run that failed, was aborted or
interrupted, timed out, was not steady before the method or left no journal
is an ``error`` with the traceback of what raised. Written with the standard
library's ``xml.etree``.
"""

from __future__ import annotations

import socket
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

from blackstart.reports.runs import ExperimentRun

__all__ = ["junit_xml", "write_junit"]

MAX_TEXT = 20_000


def _deviation_lines(run: ExperimentRun) -> list[str]:
    lines = []
    for d in run.deviations:
        line = f"{d.probe} ({d.phase}): observed {d.observed}, tolerance {d.tolerance}"
        if d.error:
            line += f"; error: {d.error}"
        lines.append(line)
    return lines


def _tracebacks(run: ExperimentRun) -> str:
    if run.journal is None:
        return ""
    parts = []
    for act in run.journal.errors:
        if act.exception:
            parts.append(f"--- {act.name} ({act.phase}) ---\n{act.exception.rstrip()}")
    return "\n".join(parts)


def _clip(text: str) -> str:
    return text if len(text) <= MAX_TEXT else text[:MAX_TEXT] + "\n… (cut; see the report)"


def _message(run: ExperimentRun) -> str:
    if run.outcome == "deviated" and run.expected == "completed":
        probes = ", ".join(
            f"{d.probe} observed {d.observed} (tolerance {d.tolerance})" for d in run.deviations
        )
        return f"steady state deviated: {probes or 'see the report'}"
    return f"{run.outcome}: {run.summary}"


def _testcase(parent: ET.Element, run: ExperimentRun, classname: str) -> None:
    case = ET.SubElement(
        parent,
        "testcase",
        {
            "name": run.name,
            "classname": classname,
            "time": f"{run.duration or 0.0:.3f}",
        },
    )
    if run.experiment_path:
        case.set("file", run.experiment_path)
    props = ET.SubElement(case, "properties")
    for key, value in (
        ("expected", run.expected),
        ("outcome", run.outcome),
        ("report", run.report_href),
        ("journal", run.journal_href),
    ):
        if value:
            ET.SubElement(props, "property", {"name": key, "value": value})
    kind = run.kind
    deviations = _deviation_lines(run)
    if kind == "failure":
        failure = ET.SubElement(
            case, "failure", {"type": run.outcome, "message": _message(run)[:1000]}
        )
        failure.text = _clip("\n".join(deviations or [run.summary]))
    elif kind == "error":
        error = ET.SubElement(case, "error", {"type": run.outcome, "message": _message(run)[:1000]})
        body = [run.summary, *deviations]
        tracebacks = _tracebacks(run)
        if tracebacks:
            body.append(tracebacks)
        error.text = _clip("\n".join(body))
    elif kind == "skipped":
        ET.SubElement(case, "skipped", {"message": run.summary[:1000]})
    out = [f"{run.outcome} (expected {run.expected}): {run.summary}"]
    if deviations:
        out.append("deviated probes:")
        out.extend(f"  {line}" for line in deviations)
    if run.report_href:
        out.append(f"report: {run.report_href}")
    ET.SubElement(case, "system-out").text = _clip("\n".join(out))


def junit_xml(
    runs: Sequence[ExperimentRun],
    *,
    suite: str = "blackstart",
    properties: Mapping[str, str] | None = None,
    timestamp: datetime | None = None,
    wall_time: float | None = None,
) -> str:
    """The JUnit XML document for ``runs`` (one ``testsuite`` named ``suite``)."""
    counts = {
        "tests": len(runs),
        "failures": sum(1 for r in runs if r.kind == "failure"),
        "errors": sum(1 for r in runs if r.kind == "error"),
        "skipped": sum(1 for r in runs if r.kind == "skipped"),
    }
    total = wall_time if wall_time is not None else sum(r.duration or 0.0 for r in runs)
    attrs = {k: str(v) for k, v in counts.items()} | {"time": f"{total:.3f}"}
    root = ET.Element("testsuites", {"name": f"blackstart game day: {suite}", **attrs})
    when = (timestamp or datetime.now(UTC)).astimezone(UTC).replace(microsecond=0)
    testsuite = ET.SubElement(
        root,
        "testsuite",
        {
            "name": suite,
            **attrs,
            "timestamp": when.strftime("%Y-%m-%dT%H:%M:%S"),
            "hostname": socket.gethostname(),
        },
    )
    if properties:
        props = ET.SubElement(testsuite, "properties")
        for key, value in properties.items():
            ET.SubElement(props, "property", {"name": str(key), "value": str(value)})
    classname = f"blackstart.gameday.{suite}"
    for run in runs:
        _testcase(testsuite, run, classname)
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def write_junit(
    path: str | Path,
    runs: Sequence[ExperimentRun],
    *,
    suite: str = "blackstart",
    properties: Mapping[str, str] | None = None,
    timestamp: datetime | None = None,
    wall_time: float | None = None,
) -> Path:
    """Write :func:`junit_xml` of ``runs`` to ``path``; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = junit_xml(
        runs, suite=suite, properties=properties, timestamp=timestamp, wall_time=wall_time
    )
    path.write_text(text, encoding="utf-8")
    return path
