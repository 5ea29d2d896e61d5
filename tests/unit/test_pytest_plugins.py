"""The suite's own pytest plugins: a skip fails the run unless listed with its reason
(tests/skip_policy.py), and a run that changes a tracked file fails (tests/tracked_files.py).

Each test runs a real pytest, in a subprocess, on a small test file.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
REPO = TESTS.parent
SAMPLE = """
import pytest

def test_runs():
    assert True

def test_needs_a_tool():
    pytest.skip("the tool is not installed")

@pytest.mark.xfail(reason="known bug")
def test_known_bug():
    assert False
"""


def run_pytest(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_sample.py").write_text(SAMPLE)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "skip_policy", "-p", "no:cacheprovider", *args],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(TESTS)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_a_skip_not_listed_fails_the_run_naming_the_test_and_reason(tmp_path: Path) -> None:
    allowed = tmp_path / "allowed.txt"
    allowed.write_text("# nothing allowed\n")
    done = run_pytest(tmp_path, "--allowed-skips", str(allowed))
    assert done.returncode == 1, done.stdout
    assert "SKIPPED test_sample.py::test_needs_a_tool: the tool is not installed" in done.stdout
    assert "SKIPPED test_sample.py::test_known_bug: xfail: known bug" in done.stdout
    assert "2 test(s) skipped without being listed" in done.stdout


def test_listed_skips_pass(tmp_path: Path) -> None:
    allowed = tmp_path / "allowed.txt"
    allowed.write_text(
        "test_sample.py::test_needs_a_tool | the tool is optional here\n"
        "test_sample.py::test_known_bug | tracked upstream  # a comment\n"
    )
    done = run_pytest(tmp_path, "--allowed-skips", str(allowed))
    assert done.returncode == 0, done.stdout
    assert "skips not allowed" not in done.stdout


def test_only_the_listed_skip_is_allowed(tmp_path: Path) -> None:
    allowed = tmp_path / "allowed.txt"
    allowed.write_text("test_sample.py::test_known_bug | tracked upstream\n")
    done = run_pytest(tmp_path, "--allowed-skips", str(allowed))
    assert done.returncode == 1, done.stdout
    assert "test_needs_a_tool" in done.stdout.split("skips not allowed", 1)[1]
    assert "test_known_bug" not in done.stdout.split("skips not allowed", 1)[1]


def test_a_listed_skip_without_a_reason_is_a_usage_error(tmp_path: Path) -> None:
    allowed = tmp_path / "allowed.txt"
    allowed.write_text("test_sample.py::test_needs_a_tool\n")
    done = run_pytest(tmp_path, "--allowed-skips", str(allowed))
    assert done.returncode == 4, done.stdout + done.stderr  # pytest's usage error
    assert "allowed.txt:1" in done.stderr and "<why the skip is acceptable>" in done.stderr


def test_without_the_option_skips_are_reported_as_usual(tmp_path: Path) -> None:
    done = run_pytest(tmp_path)
    assert done.returncode == 0, done.stdout
    assert "1 skipped" in done.stdout


def test_ci_runs_the_suite_with_the_allowed_skips_file() -> None:
    script = (REPO / ".ci" / "test").read_text()
    assert "--allowed-skips tests/allowed_skips.txt" in script
    from skip_policy import read_allowed

    read_allowed(TESTS / "allowed_skips.txt")  # well-formed


def test_a_run_that_changes_a_tracked_file_fails_naming_it(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "picture.png").write_text("the real picture")
    (repo / "draft.txt").write_text("committed")
    (repo / "test_writes.py").write_text(
        "from pathlib import Path\n\n"
        "def test_overwrites_the_picture():\n"
        "    Path(__file__).with_name('picture.png').write_text('a test picture')\n"
    )
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "x"], check=True)
    (repo / "draft.txt").write_text("work in progress, before the run")  # allowed: not the tests
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "tracked_files", "-p", "no:cacheprovider"],
        cwd=repo,
        env={**os.environ, "PYTHONPATH": str(TESTS)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 1, done.stdout
    changed = done.stdout.split("tracked files changed by the tests", 1)[1]
    assert "CHANGED picture.png" in changed and "draft.txt" not in changed
