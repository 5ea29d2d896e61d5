"""The game-day runner, driving the real `chaos run` on small experiments that need no cluster.

The cluster session here brings nothing up (these tests check the runner:
progress, timeouts, Ctrl-C, reports, exit codes); the game day on a real
local cluster is tests/e2e/test_gameday.py.
"""

from __future__ import annotations

import os
import signal
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from blackstart import chaos_follow, gameday
from blackstart.gameday import (
    ClusterUnavailable,
    ExitCode,
    Gameday,
    GamedayOptions,
    chaos_binary,
    chaos_environment,
    default_out_dir,
)
from blackstart.reports.journal_loading import parse_journal
from blackstart.suite import load_suite

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


class NoClusterSession:
    """Stands in for the cluster: records what the runner asked of it, runs nothing."""

    description = "no cluster (runner test)"

    def __init__(self, fail_up: str = "") -> None:
        self.fail_up = fail_up
        self.calls: list[str] = []

    def up(self) -> None:
        self.calls.append("up")
        if self.fail_up:
            raise ClusterUnavailable(self.fail_up)

    def start_rescue(self) -> str:
        self.calls.append("start_rescue")
        return "no rescue controller in this test"

    def down(self) -> str:
        self.calls.append("down")
        return "nothing to tear down"

    def chaos_env(self) -> dict[str, str | None]:
        return {"BLACKSTART_CLUSTER": None}

    def facts(self) -> dict[str, str]:
        return {"provider": "none"}


def suite_file(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "suite.yaml"
    path.write_text(body.replace("FIXTURES", str(FIXTURES)))
    return path


def run_gameday(
    tmp_path: Path,
    body: str,
    session: NoClusterSession | None = None,
    on_line: object = None,
    grace: float = 30.0,
    provider: str = "local",
) -> tuple[int, list[str], NoClusterSession, Path]:
    session = session or NoClusterSession()
    out = tmp_path / "out"
    chaos = chaos_binary()
    assert chaos, "chaos (chaostoolkit) must be installed beside this Python"
    lines: list[str] = []

    def echo(message: str) -> None:
        lines.append(message)
        if callable(on_line):
            on_line(message)

    options = GamedayOptions(
        suite=load_suite(suite_file(tmp_path, body), provider=provider),
        out_dir=out,
        session=session,
        chaos=chaos,
        rollback_grace=grace,
    )
    code = Gameday(options, echo=echo, out=lines.append).run()
    return code, lines, session, out


def test_a_suite_runs_each_experiment_and_writes_pages_index_and_junit(tmp_path: Path) -> None:
    flag = tmp_path / "flag"
    flag.touch()
    code, lines, session, out = run_gameday(
        tmp_path,
        f"""
suite: runner-test
experiments:
  - name: holds
    file: FIXTURES/experiments/probe-holds.json
  - name: known-weakness
    file: FIXTURES/experiments/flag-deviates.json
    expect: deviated
    variables: {{flag_path: "{flag}"}}
""",
    )
    assert code == ExitCode.AS_EXPECTED
    assert session.calls == ["up", "start_rescue", "down"]
    for name in ("holds", "known-weakness"):
        for produced in ("journal.json", "report.html", "chaos.log", "chaostoolkit.log"):
            assert (out / name / produced).is_file(), f"{name}/{produced}"
    # the suite's variable reached Chaos Toolkit: the probe saw the flag file at that path
    assert '"output": true' in (out / "known-weakness" / "journal.json").read_text()
    assert flag.exists()  # and the rollback put it back
    index = (out / "index.html").read_text()
    assert 'href="holds/report.html"' in index and 'href="known-weakness/journal.json"' in index
    assert "All 2 experiments ended as expected." in index
    root = ET.parse(out / "junit.xml").getroot()
    assert (root.get("tests"), root.get("failures"), root.get("errors")) == ("2", "0", "0")
    assert (out / "suite.yaml").is_file()
    progress = "\n".join(lines)
    for phase in ("hypothesis before", "method: action sleep-a-moment", "rollbacks", "ended"):
        assert phase in progress
    assert "[2/2 known-weakness]" in progress
    summary = lines[lines.index("") + 1 :]
    assert summary[0].split() == ["EXPERIMENT", "EXPECTED", "OUTCOME", "RESULT", "TOOK"]
    assert summary[2].split()[:4] == ["known-weakness", "deviated", "deviated", "ok"]


def test_an_entry_the_suite_keeps_off_a_provider_is_reported_not_run_never_passed(
    tmp_path: Path,
) -> None:
    flag = tmp_path / "flag"
    flag.touch()
    body = f"""
experiments:
  - name: holds
    file: FIXTURES/experiments/probe-holds.json
  - name: needs-local
    file: FIXTURES/experiments/flag-deviates.json
    expect: deviated
    variables: {{flag_path: "{flag}"}}
    providers:
      kind: {{not_run: "the storm needs the local control plane's cgroup"}}
"""
    code, lines, _, out = run_gameday(tmp_path, body, provider="kind")
    # what ran ended as expected: the entry not run on kind does not fail the game day...
    assert code == ExitCode.AS_EXPECTED
    assert not (out / "needs-local" / "journal.json").exists()
    # ...but it is never counted as passed: JUnit skips it with the reason, the index says so
    root = ET.parse(out / "junit.xml").getroot()
    assert (root.get("tests"), root.get("failures"), root.get("skipped")) == ("2", "0", "1")
    skipped = root.find(".//testcase[@name='needs-local']/skipped")
    assert skipped is not None
    assert "not run on kind: the storm needs the local control plane's cgroup" in (
        skipped.get("message") or ""
    )
    assert "1 of 2 experiments were not run." in (out / "index.html").read_text()
    summary = lines[lines.index("") + 1 :]
    assert summary[2].split()[:4] == ["needs-local", "deviated", "skipped", "not"]
    assert "1 of 2 experiments as expected (1 not run on kind, see the suite)" in "\n".join(lines)
    # on the local provider the same suite runs it
    (tmp_path / "local").mkdir()
    code, _, _, out = run_gameday(tmp_path / "local", body)
    assert code == ExitCode.AS_EXPECTED
    assert (out / "needs-local" / "journal.json").is_file()


def test_an_unexpected_outcome_exits_1(tmp_path: Path) -> None:
    flag = tmp_path / "flag"
    flag.touch()
    code, lines, _, out = run_gameday(
        tmp_path,
        f"""
experiments:
  - name: deviates
    file: FIXTURES/experiments/flag-deviates.json
    variables: {{flag_path: "{flag}"}}
""",
    )
    assert code == ExitCode.UNEXPECTED
    failure = ET.parse(out / "junit.xml").getroot().find(".//failure")
    assert failure is not None and "flag-exists observed false" in (failure.get("message") or "")
    assert any("NOT as expected (completed)" in line for line in lines)


def test_a_timeout_interrupts_the_run_and_its_rollbacks_still_run(tmp_path: Path) -> None:
    marker = tmp_path / "rolled-back"
    seconds = "116.25"  # unique, to look for the `sleep` the method leaves in the background
    code, lines, session, out = run_gameday(
        tmp_path,
        f"""
experiments:
  - name: slow
    file: FIXTURES/gameday/slow.json
    timeout: 4
    variables: {{marker: "{marker}", seconds: "{seconds}"}}
""",
    )
    assert code == ExitCode.UNEXPECTED
    assert marker.exists(), "the rollback did not run after the timeout"
    assert any("timeout (4.00 s): interrupting" in line for line in lines)
    index = (out / "index.html").read_text()
    assert "Timed out" in index
    error = ET.parse(out / "junit.xml").getroot().find(".//error")
    assert error is not None and error.get("type") == "timeout"
    assert session.calls[-1] == "down"
    assert _processes_with(seconds) == []  # what chaos started dies with the timed-out run


def test_ctrl_c_forwards_to_chaos_plays_rollbacks_skips_the_rest_and_tears_down(
    tmp_path: Path,
) -> None:
    marker = tmp_path / "rolled-back"
    # what SIGINT did before (a shell that starts pytest in the background ignores it)
    handler_before = signal.getsignal(signal.SIGINT)
    # unique, to look for a leftover `sleep` afterwards: the method's own, and the one it
    # leaves in the background, as an activity whose start Ctrl-C cut short leaves it
    seconds = "117.25"

    def press_ctrl_c_once_the_method_runs(line: str) -> None:
        if "method: action sleep-long" in line:
            os.kill(os.getpid(), signal.SIGINT)

    code, _, session, out = run_gameday(
        tmp_path,
        f"""
experiments:
  - name: slow
    file: FIXTURES/gameday/slow.json
    variables: {{marker: "{marker}", seconds: "{seconds}"}}
  - name: never
    file: FIXTURES/experiments/probe-holds.json
""",
        on_line=press_ctrl_c_once_the_method_runs,
    )
    assert code == ExitCode.INTERRUPTED
    assert marker.exists(), "the rollback did not run after Ctrl-C"
    assert session.calls == ["up", "start_rescue", "down"]
    assert not (out / "never").exists()
    assert '"status": "interrupted"' in (out / "slow" / "journal.json").read_text()
    skipped = ET.parse(out / "junit.xml").getroot().find(".//testcase[@name='never']/skipped")
    assert skipped is not None
    assert "interrupted" in (out / "index.html").read_text()
    assert _processes_with(seconds) == []
    assert signal.getsignal(signal.SIGINT) is handler_before  # handler restored


def _processes_with(needle: str) -> list[str]:
    return [pid for pid in os.listdir("/proc") if pid.isdigit() and needle in _cmdline(pid)]


def _rollback_outlives_the_grace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seconds: str, stubborn: bool
) -> tuple[int, list[str], Path, Path]:
    monkeypatch.setenv("PYTHONPATH", str(FIXTURES / "gameday"))  # the fixture's rollback module
    monkeypatch.setattr(chaos_follow, "KILL_AFTER_TERM_S", 2.0)  # SIGKILL 2 s after SIGTERM
    marker = tmp_path / "rolled-back"
    code, lines, _, out = run_gameday(
        tmp_path,
        f"""
experiments:
  - name: slow-rollback
    file: FIXTURES/gameday/slow-rollback.json
    timeout: 3
    variables: {{marker: "{marker}", seconds: "{seconds}", stubborn: {str(stubborn).lower()}}}
""",
        grace=2.0,
    )
    return code, lines, out, marker


def test_rollbacks_outliving_the_grace_are_stopped_and_reported_as_not_completed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--rollback-grace: chaos is stopped (SIGTERM) in its rollbacks; the report says which
    did not complete, never "rollbacks played", and the rollback's own process is ended."""
    seconds = "118.25"  # unique, to look for a leftover `sleep`
    code, lines, out, marker = _rollback_outlives_the_grace(tmp_path, monkeypatch, seconds, False)
    assert code == ExitCode.UNEXPECTED
    # SIGTERM fails the slow rollback; chaos goes on with the next one and ends
    assert marker.exists()
    error = ET.parse(out / "junit.xml").getroot().find(".//testcase[@name='slow-rollback']/error")
    assert error is not None
    message = error.get("message") or ""
    assert "the rollbacks did not finish within --rollback-grace 2.00 s" in message
    assert "stopped with SIGTERM" in message
    assert "rollbacks not completed: slow-rollback (failed);" in message
    assert "rollbacks played" not in message
    index = (out / "index.html").read_text()
    assert "may still carry that experiment&#39;s fault" in index or "may still carry" in index
    assert any("rollbacks not completed" in line for line in lines)
    assert _processes_with(f"sleep {seconds}") == []


def test_a_chaos_that_ignores_sigterm_is_killed_and_the_missing_journal_is_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seconds = "118.75"
    code, _, out, marker = _rollback_outlives_the_grace(tmp_path, monkeypatch, seconds, True)
    assert code == ExitCode.UNEXPECTED
    assert not marker.exists()
    assert not (out / "slow-rollback" / "journal.json").exists()
    error = ET.parse(out / "junit.xml").getroot().find(".//testcase[@name='slow-rollback']/error")
    assert error is not None
    message = error.get("message") or ""
    assert "stopped with SIGKILL and left no readable journal" in message
    assert "whether its rollbacks ran is unknown" in message
    assert "blackstart cluster status" in message
    assert _processes_with(f"sleep {seconds}") == []


def test_unfinished_rollbacks_name_the_failed_the_cut_and_the_never_run() -> None:
    journal = parse_journal(
        {
            "status": "interrupted",
            "experiment": {
                "title": "t",
                "method": [],
                "rollbacks": [{"name": n, "type": "action"} for n in ("a", "b", "c", "d")],
            },
            "run": [],
            "rollbacks": [
                {"activity": {"name": "a", "type": "action"}, "status": "succeeded"},
                {"activity": {"name": "b", "type": "action"}, "status": "failed"},
                {"activity": {"name": "c", "type": "action"}},
            ],
        }
    )
    assert gameday._unfinished_rollbacks(journal) == [
        "b (failed)",
        "c (did not finish)",
        "d (never ran)",
    ]


def _cmdline(pid: str) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def test_a_cluster_that_cannot_come_up_exits_3_and_reports_every_entry(tmp_path: Path) -> None:
    code, _, session, out = run_gameday(
        tmp_path,
        "experiments:\n  - {name: a, file: FIXTURES/experiments/probe-holds.json}",
        session=NoClusterSession(fail_up="missing binaries: etcd"),
    )
    assert code == ExitCode.CLUSTER
    assert session.calls == ["up", "down"]
    error = ET.parse(out / "junit.xml").getroot().find(".//testcase[@name='a']/error")
    assert error is not None
    assert "the cluster could not come up: missing binaries: etcd" in (error.get("message") or "")


def test_chaos_environment_sets_and_removes_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BLACKSTART_CLUSTER", "old")
    env = chaos_environment({"BLACKSTART_CLUSTER": None, "KUBERNETES_CONTEXT": "prod-like"})
    assert "BLACKSTART_CLUSTER" not in env
    assert env["KUBERNETES_CONTEXT"] == "prod-like"
    assert env["PYTHONUNBUFFERED"] == "1"


def test_the_default_output_folder_is_timestamped_and_never_reused(tmp_path: Path) -> None:
    from datetime import UTC, datetime

    when = datetime(2026, 11, 24, 9, 30, 12, tzinfo=UTC)
    first = default_out_dir(when, tmp_path)
    assert first.name == "gameday-20261124-093012"
    first.mkdir()
    assert default_out_dir(when, tmp_path).name == "gameday-20261124-093012-2"
