"""A pytest plugin: a test run that changes a file git tracks fails, naming the file.

Tests write into temporary folders; a test that overwrote, say, the README's
screenshot would pass while quietly changing what the repository shows. At the
start of the session the plugin notes the content of every tracked file that
differs from the index (``git ls-files -m``: work in progress is allowed); at
the end, any tracked file whose content changed since then fails the session.
Outside a git work tree it does nothing.
"""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pytest

_before: dict[str, str] = {}
_changed: list[str] = []
_root: list[Path] = []


def _git(root: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", "-C", str(root), *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def _digest(path: Path) -> str:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return "missing"


def modified_tracked_files(root: Path) -> dict[str, str] | None:
    """Tracked files that differ from the index -> a digest of their content; None if no git."""
    listed = _git(root, "ls-files", "-m", "-z")
    if listed is None:
        return None
    return {name: _digest(root / name) for name in listed.split("\0") if name}


def pytest_sessionstart(session: pytest.Session) -> None:
    _before.clear()
    _changed.clear()
    _root.clear()
    top = _git(Path(session.config.rootpath), "rev-parse", "--show-toplevel")
    if top is None:
        return
    root = Path(top.strip())
    found = modified_tracked_files(root)
    if found is not None:
        _root.append(root)
        _before.update(found)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if not _root:
        return
    after = modified_tracked_files(_root[0]) or {}
    _changed[:] = sorted(
        name for name in set(after) | set(_before) if after.get(name) != _before.get(name)
    )
    if _changed and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _changed:
        return
    terminalreporter.section("tracked files changed by the tests", red=True)
    for name in _changed:
        terminalreporter.line(f"CHANGED {name}", red=True)
    terminalreporter.line(
        "Tests must write into temporary folders (tmp_path), never into files git tracks; "
        "`git diff` shows what changed."
    )
