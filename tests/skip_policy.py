"""A pytest plugin: a skipped test fails the run unless it is listed, with its reason.

``pytest --allowed-skips tests/allowed_skips.txt`` (what ``.ci/test`` runs)
collects every skipped or xfailed test; any that the file does not list makes
the session exit 1, naming the test and the reason pytest gave. The file holds
one ``<test node id> | <why this skip is acceptable>`` per line (``#`` starts a
comment); a line without a reason is a usage error. Without the option, skips
are reported as pytest always does.

tests/conftest.py loads it for the suite; other runs can load it with
``-p skip_policy`` (with ``tests/`` on ``sys.path``).
"""

from __future__ import annotations

from pathlib import Path

import pytest

OPTION = "--allowed-skips"
_skipped: list[tuple[str, str]] = []  # (node id, reason) of this session's skips
_unlisted: list[tuple[str, str]] = []


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        OPTION,
        metavar="FILE",
        default=None,
        help="Fail the run when a test is skipped (or xfailed) unless FILE lists it with a "
        "reason: one `<node id> | <reason>` per line.",
    )


def read_allowed(path: Path) -> dict[str, str]:
    """Node id -> reason, from the allowed-skips file; a line without a reason is an error."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise pytest.UsageError(f"{OPTION}: cannot read {path}: {err}") from err
    allowed: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        node, _, reason = (part.strip() for part in line.partition("|"))
        if not node or not reason:
            raise pytest.UsageError(
                f"{path}:{number}: write `<test node id> | <why the skip is acceptable>`, "
                f"not {raw.strip()!r}"
            )
        allowed[node] = reason
    return allowed


def pytest_configure(config: pytest.Config) -> None:
    _skipped.clear()
    _unlisted.clear()
    option = config.getoption(OPTION)
    if option:
        read_allowed(Path(option))  # a malformed file stops the run before any test


def _reason(report: pytest.TestReport) -> str:
    wasxfail = getattr(report, "wasxfail", None)
    if wasxfail is not None:
        return f"xfail: {wasxfail}" if wasxfail else "xfail"
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped:
        _skipped.append((report.nodeid, _reason(report)))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    option = session.config.getoption(OPTION)
    if not option:
        return
    allowed = read_allowed(Path(option))
    _unlisted[:] = [(node, why) for node, why in _skipped if node not in allowed]
    if _unlisted and session.exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    unlisted = list(_unlisted)
    if not unlisted:
        return
    option = terminalreporter.config.getoption(OPTION)
    terminalreporter.section("skips not allowed", red=True)
    for node, why in unlisted:
        terminalreporter.line(f"SKIPPED {node}: {why}", red=True)
    terminalreporter.line(
        f"{len(unlisted)} test(s) skipped without being listed in {option}: a skip is not a "
        "pass. Make the test run (a missing resource must fail, naming what to install), or "
        f"list it there as `<node id> | <reason>`."
    )
