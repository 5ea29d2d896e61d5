"""`blackstart report` and the usage errors of `blackstart gameday`."""

from __future__ import annotations

import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

from click.testing import CliRunner

from blackstart.cli import main

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
JOURNALS = FIXTURES / "journals"


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def test_report_writes_the_page_beside_the_journal(tmp_path: Path) -> None:
    journal = tmp_path / "journal.json"
    shutil.copy(JOURNALS / "flag-deviates.json", journal)
    code, out, _ = invoke("report", str(journal))
    assert code == 0
    page = tmp_path / "journal.html"
    assert out.startswith(f"{page}  (deviated, ")
    assert "rendered in" in out
    assert 'href="journal.json"' in page.read_text()


def test_report_of_several_journals_writes_pages_an_index_and_junit(tmp_path: Path) -> None:
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        shutil.copy(JOURNALS / "probe-holds.json", tmp_path / name / "journal.json")
    out_dir = tmp_path / "site"
    code, out, _ = invoke(
        "report",
        str(tmp_path / "a" / "journal.json"),
        str(tmp_path / "b" / "journal.json"),
        str(JOURNALS / "blackstart-storm.json"),
        "-o",
        str(out_dir),
        "--junit",
        str(out_dir / "junit.xml"),
    )
    assert code == 0, out
    assert sorted(p.name for p in out_dir.iterdir()) == [
        "a.html",
        "b.html",
        "blackstart-storm.html",
        "index.html",
        "junit.xml",
    ]
    index = (out_dir / "index.html").read_text()
    assert 'href="a.html"' in index and 'href="../a/journal.json"' in index
    root = ET.parse(out_dir / "junit.xml").getroot()
    assert (root.get("tests"), root.get("failures")) == ("3", "1")  # the storm deviated


def test_report_to_a_named_file(tmp_path: Path) -> None:
    code, _, _ = invoke(
        "report", str(JOURNALS / "interrupted.json"), "-o", str(tmp_path / "x.html")
    )
    assert code == 0
    assert "Interrupted" in (tmp_path / "x.html").read_text()


def test_report_refuses_what_is_not_a_journal_naming_each_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{oops")
    code, _, err = invoke(
        "report", str(bad), str(FIXTURES / "experiments" / "probe-holds.json"), "-o", str(tmp_path)
    )
    assert code == 2
    assert f"Error: {bad}: not valid JSON (line 1, column 2" in err
    assert "probe-holds.json: not a Chaos Toolkit journal" in err
    assert "it looks like an experiment" in err
    assert list(tmp_path.glob("*.html")) == []  # nothing half-written


def test_report_output_must_be_html_or_a_folder(tmp_path: Path) -> None:
    code, _, err = invoke(
        "report", str(JOURNALS / "interrupted.json"), "-o", str(tmp_path / "x.txt")
    )
    assert code == 2
    assert "name the file .html (or pass a folder/)" in err


def test_gameday_without_a_suite_file_exits_2(tmp_path: Path) -> None:
    code, _, err = invoke("gameday", "--suite", str(tmp_path / "none.yaml"))
    assert code == 2
    assert "no such suite file; pass --suite FILE" in err


def test_gameday_with_an_unknown_only_name_exits_2() -> None:
    suite = Path(__file__).resolve().parents[2] / "experiments" / "gameday.yaml"
    code, _, err = invoke("gameday", "--suite", str(suite), "--only", "no-such-experiment")
    assert code == 2
    assert "--only names no entry of this suite: no-such-experiment" in err
    assert "xid-62-cordon" in err


def test_gameday_with_a_missing_experiment_file_exits_2_before_any_cluster(tmp_path: Path) -> None:
    suite = tmp_path / "suite.yaml"
    suite.write_text("experiments: [not-written]\n")
    code, _, err = invoke("gameday", "--suite", str(suite), "--name", "never-created")
    assert code == 2
    assert "experiments[0] (not-written): experiment file" in err
    assert "does not exist" in err


def test_gameday_with_a_bad_cluster_spec_exits_2(tmp_path: Path) -> None:
    suite = tmp_path / "suite.yaml"
    suite.write_text("experiments: [a]\n")
    (tmp_path / "a.json").write_text('{"title": "t", "method": []}')
    code, _, err = invoke("gameday", "--suite", str(suite), "--spec", str(tmp_path / "nope.yaml"))
    assert code == 2
    assert "nope.yaml" in err


def test_gameday_rejects_an_unknown_provider() -> None:
    code, _, err = invoke("gameday", "--provider", "docker")
    assert code == 2
    assert "'docker' is not one of 'local', 'kind'" in err


def test_gameday_help_documents_the_exit_codes() -> None:
    code, out, _ = invoke("gameday", "--help")
    assert code == 0
    for line in (
        "0    every experiment",
        "1    at least one",
        "2    usage error",
        "3    the cluster",
        "130  interrupted",
    ):
        assert line in out


def test_python_dash_m_blackstart_cli_runs_the_command_line() -> None:
    """The local provider starts the rescue processes as `python -m blackstart.cli ...`."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "blackstart.cli", "rescue", "agent", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "--min-write-interval" in done.stdout
