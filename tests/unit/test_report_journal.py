"""Reading Chaos Toolkit journals: real ones from `chaos run`, blackstart's extension, bad files."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from blackstart.reports.journal import JournalError
from blackstart.reports.journal_loading import load_journal, parse_journal
from blackstart.reports.values import describe_tolerance, summarize_value

JOURNALS = Path(__file__).resolve().parents[1] / "fixtures" / "journals"


def raw(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((JOURNALS / f"{name}.json").read_text())
    return data


@pytest.mark.parametrize(
    ("name", "outcome", "headline"),
    [
        ("probe-holds", "completed", "Steady state held: every probe stayed within its tolerance."),
        ("flag-deviates", "deviated", "Steady state deviated after the method: flag-exists."),
        ("hypothesis-raises", "failed", "The run failed: an activity raised (flag-size)."),
        (
            "interrupted",
            "interrupted",
            "The run was interrupted; rollbacks were played as configured.",
        ),
        (
            "not-steady",
            "not-steady",
            "Steady state was not met before the method (missing-file-exists); the method did "
            "not run.",
        ),
        (
            "blackstart-storm",
            "deviated",
            "Steady state deviated after the method: data-plane-dns-success-ratio.",
        ),
        (
            "controls-coredns-kill",
            "deviated",
            "Steady state deviated after the method: dns-success-ratio.",
        ),
    ],
)
def test_each_fixture_journal_has_the_outcome_of_its_run(
    name: str, outcome: str, headline: str
) -> None:
    """The verdict sentence names what the run did: the probe that deviated, the activity
    that raised, the probe that was not steady before."""
    journal = load_journal(JOURNALS / f"{name}.json")
    assert journal.outcome == outcome
    assert journal.problems == ()
    assert journal.headline == headline


def test_a_run_interrupted_by_the_guard_says_why_in_its_headline() -> None:
    data = raw("interrupted")
    data.setdefault("extensions", []).append(
        {"name": "blackstart", "guard": {"tripped": True, "reason": "API server p99 12.00 s"}}
    )
    assert parse_journal(data).headline == (
        "The run was interrupted by the guard: API server p99 12.00 s; rollbacks were played "
        "as configured."
    )


def test_a_deviated_run_names_the_probe_its_tolerance_and_what_was_observed() -> None:
    journal = load_journal(JOURNALS / "flag-deviates.json")
    [deviation] = journal.deviations
    assert (deviation.phase, deviation.probe) == ("after", "flag-exists")
    assert deviation.tolerance == "== true"
    assert deviation.observed == "false"
    assert "flag-exists" in journal.headline


def test_a_failed_method_probe_keeps_its_traceback() -> None:
    journal = load_journal(JOURNALS / "flag-deviates.json")
    [error] = [a for a in journal.errors if a.phase == "method"]
    assert error.name == "stat-missing-file"
    assert "FileNotFoundError" in (error.exception or "")
    assert error.error_line.startswith("chaoslib.exceptions.ActivityFailed")


def test_a_continuous_hypothesis_is_read_as_during_evaluations() -> None:
    journal = load_journal(JOURNALS / "probe-holds.json")
    assert len(journal.during) >= 1
    assert all(h.phase == "during" and h.met for h in journal.during)
    assert {p.name for p in journal.during[0].probes} == {
        "python-is-3",
        "tmp-is-a-folder",
        "mean-of-3-and-5",
    }


def test_an_interrupted_run_still_records_its_rollbacks() -> None:
    journal = load_journal(JOURNALS / "interrupted.json")
    assert [r.name for r in journal.rollbacks] == ["rollback-after-interrupt"]
    assert journal.rollbacks_ok is True
    assert "never-reached" not in [a.name for a in journal.method]


def test_the_blackstart_extension_is_read_per_the_contract() -> None:
    journal = load_journal(JOURNALS / "blackstart-storm.json")
    ext = journal.extension
    assert ext is not None
    assert ext.environment["provider"] == "local"
    assert ext.versions["kubernetes"] == "v1.33.13"
    assert ext.interval_s == 2.0
    names = [s.name for s in ext.series]
    assert names[:3] == ["apiserver_p99_seconds", "apiserver_429_per_second", "dns_success_ratio"]
    p99 = ext.series[0]
    assert p99.missing == 3 and len(p99.values) == len(p99.points) - 3
    assert [f.name for f in ext.faults] == ["telemetry-storm", "coredns-restart", "xid-79-gpu-07"]
    assert ext.faults[2].end is None  # never rolled back
    plan = ext.rescue_plans[0]
    assert (plan.name, plan.node, plan.xids, plan.phase) == (
        "gpu-07-xid79-1",
        "gpu-07",
        (79,),
        "Replaced",
    )
    assert [t.phase for t in plan.transitions] == ["Pending", "Cordoned", "Draining", "Replaced"]
    assert plan.standby == "standby-02"
    assert ext.guard_tripped is False


def test_what_blackstarts_controls_wrote_on_a_real_cluster_is_read() -> None:
    """controls-coredns-kill.json: `blackstart gameday` ran an experiment with the cluster,
    guard and metrics controls on a real local cluster (CoreDNS killed, then restored)."""
    journal = load_journal(JOURNALS / "controls-coredns-kill.json")
    ext = journal.extension
    assert ext is not None and journal.problems == ()
    names = {s.name for s in ext.series}
    assert {"apiserver_p99_seconds", "dns_success_ratio", "nodes_ready", "nodes_cordoned"} <= names
    assert [f.activity for f in ext.faults] == ["kill_coredns"]
    assert ext.faults[0].end is not None  # the rollback ended the fault window
    assert ext.environment["provider"] == "local"
    assert ext.versions["coredns"] == "v1.12.4"
    [deviation] = journal.deviations
    assert deviation.probe == "dns-success-ratio" and deviation.observed == "0.0"


def test_a_journal_without_the_extension_has_none() -> None:
    assert load_journal(JOURNALS / "probe-holds.json").extension is None


def test_a_partial_journal_loads_and_says_what_is_missing() -> None:
    data = raw("blackstart-storm")
    del data["status"]
    data["run"] = {"not": "a list"}
    ext = data["extensions"][0]
    ext["metrics"]["series"][0]["points"][0] = ["yesterday", "high"]
    ext["metrics"]["series"].append({"title": "no name"})
    ext["faults"].append({"name": "no-start"})
    ext["rescue_plans"].append("not an object")
    data["steady_states"]["after"]["probes"][0]["start"] = "half past eight"
    journal = parse_journal(data, source="partial.json")
    problems = "\n".join(journal.problems)
    assert "no 'status'" in problems
    assert "run is an object, not a list" in problems
    assert "metrics.series[0] (apiserver_p99_seconds): 1 point(s)" in problems
    assert "metrics.series[7] has no name" in problems
    assert "faults[3] has no start time" in problems
    assert "rescue_plans[2] is a string" in problems
    assert "'half past eight' is not an ISO 8601 time" in problems
    assert journal.outcome == "deviated"  # still known from 'deviated'
    assert journal.method == ()
    assert len(journal.extension.series) == 7  # type: ignore[union-attr]


def test_a_minimal_journal_from_another_tool_loads() -> None:
    journal = parse_journal({"status": "completed", "deviated": False}, source="tiny.json")
    assert journal.outcome == "completed"
    assert journal.title == "tiny"
    assert "no 'experiment' object" in journal.problems[0]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"status": "completed", ', "not valid JSON (line 1, column 25"),
        ("", "the file is empty"),
        ("[1, 2]", "this file holds an array"),
        ('"completed"', "this file holds a string"),
        ('{"name": "x", "items": []}', "it has none of the keys"),
        ('{"title": "t", "method": []}', "it looks like an experiment"),
    ],
)
def test_a_file_that_is_not_a_journal_is_refused_naming_the_file(
    tmp_path: Path, content: str, message: str
) -> None:
    path = tmp_path / "broken.json"
    path.write_text(content)
    with pytest.raises(JournalError) as err:
        load_journal(path)
    assert str(err.value).startswith(f"{path}: ")
    assert message in str(err.value)


def test_missing_folder_and_binary_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(JournalError, match="no such file"):
        load_journal(tmp_path / "nope.json")
    with pytest.raises(JournalError, match="is a folder"):
        load_journal(tmp_path)
    binary = tmp_path / "journal.json"
    binary.write_bytes(b"\xff\xfe\x00\x81")
    with pytest.raises(JournalError, match="not a text file"):
        load_journal(binary)


@pytest.mark.parametrize(
    ("tolerance", "text"),
    [
        (True, "== true"),
        (0, "== 0"),
        ("ok", '== "ok"'),
        ([200, 201], "one of [200, 201]"),
        ({"type": "range", "range": [0.99, 1.0]}, "in [0.99, 1.0]"),
        ({"type": "regex", "pattern": "^3\\.", "target": "stdout"}, "matches /^3\\./ (stdout)"),
        ({"type": "jsonpath", "path": "$.ready", "expect": 60}, "$.ready == 60"),
        (
            {"type": "probe", "name": "p", "provider": {"type": "python", "func": "f"}},
            "probe p",
        ),
        (None, "(none)"),
    ],
)
def test_tolerances_are_described_as_people_read_them(tolerance: object, text: str) -> None:
    assert describe_tolerance(tolerance) == text


def test_long_values_are_cut_to_one_line() -> None:
    text = summarize_value({"lines": ["x" * 50] * 10}, limit=60)
    assert len(text) == 60 and text.endswith("…") and "\n" not in text


def test_a_second_blackstart_entry_is_ignored_and_noted() -> None:
    data = raw("blackstart-storm")
    second = copy.deepcopy(data["extensions"][0])
    second["faults"] = []
    data["extensions"].append(second)
    data["extensions"].append({"name": "other-tool", "x": 1})
    journal = parse_journal(data, source="two.json")
    assert len(journal.faults) == 3
    assert journal.other_extensions == ("other-tool",)
    assert any("a second 'blackstart' entry" in p for p in journal.problems)


def test_a_failed_rollback_is_part_of_the_verdict() -> None:
    """A real chaos run whose method held but whose rollback raised (os.listdir of no folder)."""
    journal = load_journal(JOURNALS / "rollback-failed.json")
    assert journal.status == "completed"
    assert journal.outcome == "rollback-failed"
    assert "restore-something" in journal.headline
    assert "No such file or directory" in journal.headline
    assert journal.rollbacks[0].error_line.startswith("chaoslib.exceptions.ActivityFailed")


def test_the_error_line_is_never_the_carets_under_an_expression() -> None:
    from blackstart.reports.journal import ActivityResult

    act = ActivityResult(
        name="x",
        kind="action",
        phase="rollback",
        status="failed",
        start=None,
        end=None,
        duration=None,
        exception=(
            'Traceback:\n  File "a.py", line 1\n    f(x)\n    ^^^^\nValueError: bad\n    ^^^\n'
        ),
    )
    assert act.error_line == "ValueError: bad"
