"""JUnit XML: one test case per experiment, deviated probes in failures, errors for broken runs."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from blackstart.reports.journal_loading import load_journal
from blackstart.reports.junit import junit_xml, write_junit
from blackstart.reports.runs import ExperimentRun

JOURNALS = Path(__file__).resolve().parents[1] / "fixtures" / "journals"


def run(name: str, expected: str = "completed") -> ExperimentRun:
    journal = load_journal(JOURNALS / f"{name}.json")
    return ExperimentRun(
        name=name,
        outcome=journal.outcome,
        expected=expected,
        journal=journal,
        duration=journal.duration,
        report_href=f"{name}/report.html",
        journal_href=f"{name}/journal.json",
    )


def suite_runs() -> list[ExperimentRun]:
    return [
        run("probe-holds"),
        run("blackstart-storm", expected="deviated"),
        run("flag-deviates"),
        run("hypothesis-raises"),
        run("interrupted"),
        run("not-steady"),
        ExperimentRun(name="timed-out", outcome="timeout", error="timed out after 5 min"),
        ExperimentRun(name="later", outcome="skipped", error="not run: interrupted"),
    ]


def check_structure(root: ET.Element) -> None:
    """The structure CI readers rely on: counts agree with the test cases."""
    assert root.tag == "testsuites"
    suites = root.findall("testsuite")
    assert len(suites) == 1
    suite = suites[0]
    cases = suite.findall("testcase")
    for element in (root, suite):
        assert int(element.get("tests", "-1")) == len(cases)
        assert int(element.get("failures", "-1")) == sum(
            1 for c in cases if c.find("failure") is not None
        )
        assert int(element.get("errors", "-1")) == sum(
            1 for c in cases if c.find("error") is not None
        )
        assert int(element.get("skipped", "-1")) == sum(
            1 for c in cases if c.find("skipped") is not None
        )
        float(element.get("time", "x"))
    assert suite.get("timestamp") and suite.get("hostname")
    for case in cases:
        assert case.get("name") and case.get("classname")
        float(case.get("time", "x"))
        verdicts = [c for c in case if c.tag in ("failure", "error", "skipped")]
        assert len(verdicts) <= 1
        for v in verdicts:
            assert v.get("message")


def cases_by_name(xml: str) -> dict[str, ET.Element]:
    root = ET.fromstring(xml.encode())
    check_structure(root)
    return {c.get("name", ""): c for c in root.iter("testcase")}


def test_one_test_case_per_experiment_with_consistent_counts() -> None:
    xml = junit_xml(suite_runs(), suite="catalogue", properties={"provider": "local"})
    assert xml.startswith('<?xml version="1.0" encoding="UTF-8"?>')
    root = ET.fromstring(xml.encode())
    check_structure(root)
    suite = root.find("testsuite")
    assert suite is not None
    assert (
        suite.get("tests"),
        suite.get("failures"),
        suite.get("errors"),
        suite.get("skipped"),
    ) == (
        "8",
        "1",
        "4",
        "1",
    )
    assert suite.find("properties/property[@name='provider']").get("value") == "local"  # type: ignore[union-attr]
    assert {c.get("classname") for c in suite.iter("testcase")} == {"blackstart.gameday.catalogue"}


def test_an_unexpected_deviation_is_a_failure_carrying_the_deviated_probes() -> None:
    failure = cases_by_name(junit_xml(suite_runs()))["flag-deviates"].find("failure")
    assert failure is not None
    assert failure.get("type") == "deviated"
    assert failure.get("message") == (
        "steady state deviated: flag-exists observed false (tolerance == true)"
    )
    assert failure.text == "flag-exists (after): observed false, tolerance == true"


def test_an_expected_deviation_passes_and_still_reports_the_probes() -> None:
    case = cases_by_name(junit_xml(suite_runs()))["blackstart-storm"]
    assert [c.tag for c in case] == ["properties", "system-out"]
    out = case.findtext("system-out") or ""
    assert "data-plane-dns-success-ratio (after): observed 0.962, tolerance in [0.99, 1.0]" in out


def test_holding_when_a_deviation_is_expected_is_a_failure() -> None:
    xml = junit_xml([run("probe-holds", expected="deviated")])
    failure = cases_by_name(xml)["probe-holds"].find("failure")
    assert failure is not None and failure.get("type") == "completed"
    assert "has the weakness been fixed?" in (failure.get("message") or "")


@pytest.mark.parametrize(
    ("name", "kind", "text"),
    [
        ("hypothesis-raises", "failed", "FileNotFoundError"),
        ("interrupted", "interrupted", "The run was interrupted"),
        ("not-steady", "not-steady", "missing-file-exists (before): observed false"),
        ("timed-out", "timeout", "timed out after 5 min"),
    ],
)
def test_runs_that_did_not_get_an_answer_are_errors(name: str, kind: str, text: str) -> None:
    error = cases_by_name(junit_xml(suite_runs()))[name].find("error")
    assert error is not None
    assert error.get("type") == kind
    assert text in (error.text or "")


def test_write_junit_writes_a_parseable_file(tmp_path: Path) -> None:
    path = write_junit(tmp_path / "out" / "junit.xml", suite_runs(), suite="s", wall_time=12.5)
    root = ET.parse(path).getroot()
    check_structure(root)
    assert root.get("time") == "12.500"
