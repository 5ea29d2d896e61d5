"""The game-day runner behind ``blackstart gameday``.

One command runs a suite (:mod:`blackstart.suite`): bring the cluster up (or
use a given kubeconfig context), start the rescue controller and its agents,
run each experiment with Chaos Toolkit as a subprocess::

    chaos --no-version-check --log-file <out>/<name>/chaostoolkit.log \\
        run --journal-path <out>/<name>/journal.json [--var k=v ...] <experiment>

with ``BLACKSTART_CLUSTER=<name>`` in its environment (so the experiments'
cluster control reuses the running cluster) or, with ``--context``,
``BLACKSTART_CONTEXT=<context>`` (which every blackstart activity and control
obeys over the experiment's own configuration; nothing is created), write a page per experiment, an
index page and JUnit XML into the output folder, tear the cluster down
unless ``--keep``, and exit with one of :class:`ExitCode`.

Interrupting (Ctrl-C, or SIGTERM from a CI system) forwards SIGINT to the
running ``chaos`` process, which then plays the experiment's rollbacks; the
runner waits for it (bounded), skips the experiments not yet run, writes the
reports of what ran, tears down and exits 130. A second Ctrl-C says what is
being waited for; a third kills the run.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import IntEnum
from pathlib import Path
from types import FrameType

from blackstart import __version__
from blackstart.chaos_follow import Ending, follow_chaos, mmss, signal_group
from blackstart.gameday_clusters import (
    ClusterSession,
    ClusterUnavailable,
    ContextSession,
    KindSession,
    LocalSession,
)
from blackstart.reports.html import format_duration, write_report
from blackstart.reports.index import write_index
from blackstart.reports.journal import Journal, JournalError
from blackstart.reports.journal_loading import load_journal
from blackstart.reports.junit import write_junit
from blackstart.reports.runs import ExperimentRun
from blackstart.suite import Suite, SuiteEntry, chaos_var_arguments

__all__ = [
    "DEFAULT_CLUSTER_NAME",
    "ClusterSession",
    "ClusterUnavailable",
    "ContextSession",
    "ExitCode",
    "Gameday",
    "GamedayOptions",
    "KindSession",
    "LocalSession",
    "chaos_binary",
    "chaos_environment",
    "default_out_dir",
]

DEFAULT_CLUSTER_NAME = "gameday"

Echo = Callable[[str], None]


class ExitCode(IntEnum):
    """How ``blackstart gameday`` exits."""

    AS_EXPECTED = 0  #: every experiment ended as its suite entry expects
    UNEXPECTED = 1  #: at least one ended otherwise (deviated, failed, timed out, ...)
    USAGE = 2  #: bad command line, suite file or experiment file; nothing was run
    #: the cluster (or the rescue controller) could not be brought up, or the --context
    #: could not be reached or is not allow-listed
    CLUSTER = 3
    INTERRUPTED = 130  #: interrupted (Ctrl-C / SIGTERM); rollbacks ran, cluster torn down


# ------------------------------------------------------------------- options
@dataclass
class GamedayOptions:
    """What ``blackstart gameday`` was asked to do."""

    suite: Suite
    out_dir: Path
    session: ClusterSession
    chaos: str
    keep: bool = False
    rollback_grace: float = 180.0
    verbose: bool = False


def chaos_binary() -> str | None:
    """The ``chaos`` command beside this Python (the venv), else the one on PATH."""
    beside = Path(sys.executable).with_name("chaos")
    if beside.exists():
        return str(beside)
    return shutil.which("chaos")


def default_out_dir(now: datetime | None = None, base: Path | None = None) -> Path:
    """``./gameday-<UTC timestamp>/``, with a suffix if that folder exists already."""
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%d-%H%M%S")
    base = base or Path.cwd()
    path = base / f"gameday-{stamp}"
    n = 2
    while path.exists():
        path = base / f"gameday-{stamp}-{n}"
        n += 1
    return path


# --------------------------------------------------------------- progress


@dataclass
class _Measured:
    run: ExperimentRun
    report_bytes: int = 0
    render_s: float = 0.0


# -------------------------------------------------------------------- runner
@dataclass
class Gameday:
    """Runs a suite; :meth:`run` returns the exit code (see :class:`ExitCode`)."""

    options: GamedayOptions
    echo: Echo = field(default=lambda m: print(m, file=sys.stderr, flush=True))
    out: Echo = field(default=lambda m: print(m, flush=True))

    def __post_init__(self) -> None:
        self._child: subprocess.Popen[str] | None = None
        self._interrupts = 0
        self._interrupted = threading.Event()
        self._tearing_down = False
        self._starting_chaos = False
        self.results: list[_Measured] = []
        self.notes: list[str] = []

    # ------------------------------------------------------------- signals
    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        self._interrupts += 1
        self._interrupted.set()
        if self._tearing_down:
            self.echo(f"[gameday] {name}: finishing (tear-down, reports); please wait")
            return
        if self._starting_chaos:
            return  # chaos is being started: it is interrupted as soon as it runs
        child = self._child
        if child is None or child.poll() is not None:
            raise KeyboardInterrupt
        if self._interrupts == 1:
            self.echo(
                f"[gameday] {name}: interrupting the running experiment; Chaos Toolkit plays "
                f"its rollbacks (waiting up to {self.options.rollback_grace:.0f} s)"
            )
            signal_group(child, signal.SIGINT)
        elif self._interrupts == 2:
            self.echo(
                "[gameday] still waiting for the rollbacks to finish; press Ctrl-C again to "
                "kill chaos without them (the cluster is torn down either way)"
            )
        else:
            self.echo("[gameday] killing chaos")
            signal_group(child, signal.SIGKILL)

    @contextmanager
    def _signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
        for s in previous:
            signal.signal(s, self._on_signal)
        try:
            yield
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)

    # ----------------------------------------------------------------- run
    def run(self) -> int:
        opts = self.options
        suite = opts.suite
        started_at = datetime.now(UTC)
        started = time.monotonic()
        opts.out_dir.mkdir(parents=True, exist_ok=True)
        with suppress(shutil.SameFileError):
            shutil.copyfile(suite.path, opts.out_dir / "suite.yaml")
        self.echo(
            f"[gameday] suite {suite.path} ({suite.name}): {len(suite.entries)} experiment(s); "
            f"output in {opts.out_dir}/"
        )
        code = ExitCode.AS_EXPECTED
        cluster_error = ""
        with self._signals():
            try:
                try:
                    self.echo(f"[gameday] bringing up the {opts.session.description}")
                    t = time.monotonic()
                    opts.session.up()
                    self.echo(f"[gameday] {opts.session.description} ready in {mmss(t)}")
                    self.echo(f"[gameday] {opts.session.start_rescue()}")
                except ClusterUnavailable as err:
                    cluster_error = str(err)
                    self.echo(f"[gameday] error: {cluster_error}")
                    code = ExitCode.CLUSTER
                if not cluster_error:
                    self._run_entries(started_at, started)
            except KeyboardInterrupt:
                self._interrupted.set()
            finally:
                # From here on a signal only says to wait: nothing may be left half done.
                self._tearing_down = True
                self._teardown()
            if self._interrupted.is_set():
                code = ExitCode.INTERRUPTED
                self.notes.append(
                    "The game day was interrupted (Ctrl-C or SIGTERM): the running experiment's "
                    "rollbacks were played, the experiments after it were not run."
                )
            self._add_not_run(cluster_error)
            wall = time.monotonic() - started
            self._write_suite_reports(started_at, wall)
        not_here = {e.name for e in suite.entries if e.not_run}
        if code == ExitCode.AS_EXPECTED and any(
            not m.run.as_expected and m.run.name not in not_here for m in self.results
        ):
            code = ExitCode.UNEXPECTED
        self._summary(wall, code)
        return int(code)

    def _add_not_run(self, cluster_error: str) -> None:
        ran = {m.run.name for m in self.results}
        for entry in self.options.suite.entries:
            if entry.name in ran:
                continue
            reason = (
                f"not run: the cluster could not come up: {cluster_error}"
                if cluster_error
                else "not run: the game day was interrupted"
            )
            run = ExperimentRun(
                name=entry.name,
                outcome="error" if cluster_error else "skipped",
                expected=entry.expect,
                error=reason,
                experiment_path=str(entry.path),
            )
            self.results.append(_Measured(run))

    def _run_entries(self, started_at: datetime, started: float) -> None:
        entries = self.options.suite.entries
        for index, entry in enumerate(entries, start=1):
            if self._interrupted.is_set():
                break
            if entry.not_run:
                measured = self._not_run_here(index, len(entries), entry)
            else:
                measured = self._run_entry(index, len(entries), entry)
            self.results.append(measured)
            # Keep the index and JUnit current, so a crash later loses nothing.
            self._write_suite_reports(started_at, time.monotonic() - started)

    def _teardown(self) -> None:
        session = self.options.session
        if self.options.keep:
            self.echo(f"[gameday] --keep: {session.description} is left running")
            return
        try:
            self.echo(f"[gameday] {session.down()}")
        except Exception as err:  # report, never hide the run's own result
            self.echo(f"[gameday] error: tearing down {session.description} failed: {err}")
            self.notes.append(f"Tear-down failed: {err}")

    # ----------------------------------------------------------- one entry
    def _not_run_here(self, index: int, total: int, entry: SuiteEntry) -> _Measured:
        """An entry the suite says does not run on this provider: reported, never passed."""
        provider = self.options.suite.provider
        reason = f"not run on {provider}: {entry.not_run}"
        self.echo(f"[{index}/{total} {entry.name}] {reason}")
        run = ExperimentRun(
            name=entry.name,
            outcome="skipped",
            expected=entry.expect,
            error=reason,
            experiment_path=str(entry.path),
        )
        return _Measured(run)

    def _run_entry(self, index: int, total: int, entry: SuiteEntry) -> _Measured:
        opts = self.options
        folder = opts.out_dir / entry.name
        folder.mkdir(parents=True, exist_ok=True)
        journal_path = folder / "journal.json"
        journal_path.unlink(missing_ok=True)
        log_path = folder / "chaos.log"
        tag = f"[{index}/{total} {entry.name}]"
        argv = [
            opts.chaos,
            "--no-version-check",
            "--log-file",
            str(folder / "chaostoolkit.log"),
            "run",
            "--journal-path",
            str(journal_path),
            *chaos_var_arguments(entry.variables),
            str(entry.path),
        ]
        env = chaos_environment(opts.session.chaos_env())
        self.echo(
            f"{tag} 00:00 start (expect {entry.expect}, timeout {format_duration(entry.timeout)})"
        )
        t0 = time.monotonic()
        ending = Ending()
        with log_path.open("w", encoding="utf-8") as log:
            log.write("$ " + " ".join(argv) + "\n")
            log.flush()
            self._starting_chaos = True
            try:
                child = subprocess.Popen(
                    argv,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env=env,
                    text=True,
                    errors="replace",
                    bufsize=1,
                    start_new_session=True,  # Ctrl-C reaches us only; we forward it once
                )
            except OSError as err:
                self._starting_chaos = False
                return self._no_journal(entry, folder, t0, f"chaos could not start: {err}")
            self._child = child
            self._starting_chaos = False
            if self._interrupted.is_set():  # Ctrl-C while it was starting
                signal_group(child, signal.SIGINT)
            try:
                ending = follow_chaos(
                    child,
                    entry,
                    tag,
                    t0,
                    log,
                    echo=self.echo,
                    verbose=self.options.verbose,
                    rollback_grace=self.options.rollback_grace,
                    interrupted=self._interrupted,
                )
            finally:
                self._child = None
        duration = time.monotonic() - t0
        timed_out = ending.timed_out
        cut = ""
        if ending.stopped_by:
            cut = (
                f"the rollbacks did not finish within --rollback-grace "
                f"{format_duration(opts.rollback_grace)}: chaos was stopped with "
                f"{ending.stopped_by}"
            )
        journal: Journal | None = None
        error = ""
        try:
            journal = load_journal(journal_path)
        except JournalError as err:
            error = (
                f"chaos exited with code {child.returncode} and left no readable journal "
                f"({err}); see {log_path.name}: {_tail(log_path)}"
            )
            if cut:
                error = (
                    f"{cut} and left no readable journal ({err}): whether its rollbacks ran "
                    f"is unknown, the cluster may still carry the fault; check it "
                    f"(`blackstart cluster status`) before trusting the next experiment"
                )
        if cut:
            self._rollbacks_cut(entry.name, cut, journal)
        if journal is None:
            measured = self._no_journal(entry, folder, t0, error)
            if timed_out:
                measured.run = replace(measured.run, outcome="timeout")
            return measured
        outcome = "timeout" if timed_out else journal.outcome
        if cut:
            unfinished = _unfinished_rollbacks(journal)
            error = (
                f"{cut}; rollbacks not completed: {', '.join(unfinished) or 'none recorded'}; "
                "the cluster may still carry the fault"
            )
            if timed_out:
                error = f"timed out after {format_duration(entry.timeout)}; {error}"
        elif timed_out:
            error = (
                f"timed out after {format_duration(entry.timeout)}; interrupted, rollbacks played"
            )
        run = ExperimentRun(
            name=entry.name,
            outcome=outcome,
            expected=entry.expect,
            journal=journal,
            duration=duration,
            error=error,
            experiment_path=str(entry.path),
            report_href=f"{entry.name}/report.html",
            journal_href=f"{entry.name}/journal.json",
            log_href=f"{entry.name}/chaos.log",
        )
        t = time.perf_counter()
        report = write_report(
            journal,
            folder / "report.html",
            expected=entry.expect,
            journal_href="journal.json",
            index_href="../index.html",
        )
        render_s = time.perf_counter() - t
        size = report.stat().st_size
        verdict = "as expected" if run.as_expected else f"NOT as expected ({entry.expect})"
        self.echo(
            f"{tag} {mmss(t0)} {outcome}, {verdict}; report {report} "
            f"({size / 1024:.0f} kB, rendered in {render_s:.2f} s)"
        )
        return _Measured(run, size, render_s)

    def _rollbacks_cut(self, name: str, cut: str, journal: Journal | None) -> None:
        detail = (
            f"rollbacks not completed: {', '.join(_unfinished_rollbacks(journal)) or 'none'}"
            if journal is not None
            else "no readable journal: whether they ran is unknown"
        )
        self.echo(f"[{name}] error: {cut}; {detail}")
        self.notes.append(
            f"{name}: {cut}; {detail}. The cluster may still carry that experiment's fault; "
            "give rollbacks more time with --rollback-grace."
        )

    def _no_journal(self, entry: SuiteEntry, folder: Path, t0: float, error: str) -> _Measured:
        self.echo(f"[{entry.name}] error: {error}")
        run = ExperimentRun(
            name=entry.name,
            outcome="error",
            expected=entry.expect,
            duration=time.monotonic() - t0,
            error=error,
            experiment_path=str(entry.path),
            log_href=f"{entry.name}/chaos.log",
        )
        return _Measured(run)

    # ------------------------------------------------------------ reports
    def _write_suite_reports(self, started_at: datetime, wall: float) -> None:
        opts = self.options
        runs = [m.run for m in self.results]
        facts = {
            "suite": f"{opts.suite.path} ({opts.suite.name})",
            **opts.session.facts(),
            "blackstart": __version__,
            "chaostoolkit": _chaostoolkit_version(),
            "host": socket.gethostname(),
            "output": str(opts.out_dir),
        }
        write_junit(
            opts.out_dir / "junit.xml",
            runs,
            suite=opts.suite.name,
            properties={k: v for k, v in facts.items() if k != "output"},
            timestamp=started_at,
            wall_time=wall,
        )
        write_index(
            opts.out_dir / "index.html",
            runs,
            title=f"Game day: {opts.suite.name}",
            started=started_at,
            wall_time=wall,
            facts=facts,
            junit_href="junit.xml",
            notes=self.notes,
        )

    def _summary(self, wall: float, code: ExitCode) -> None:
        width = max([len("EXPERIMENT"), *(len(m.run.name) for m in self.results)])
        self.out("")
        self.out(f"{'EXPERIMENT':<{width}}  {'EXPECTED':<9}  {'OUTCOME':<11}  {'RESULT':<10}  TOOK")
        for m in self.results:
            r = m.run
            result = "ok" if r.as_expected else ("not run" if r.outcome == "skipped" else r.kind)
            self.out(
                f"{r.name:<{width}}  {r.expected:<9}  {r.outcome:<11}  {result:<10}  "
                f"{format_duration(r.duration)}"
            )
        ok = sum(1 for m in self.results if m.run.as_expected)
        suite = self.options.suite
        not_here = sum(1 for e in suite.entries if e.not_run)
        where = f" ({not_here} not run on {suite.provider}, see the suite)" if not_here else ""
        self.out("")
        self.out(
            f"{ok} of {len(self.results)} experiments as expected{where}; wall time "
            f"{format_duration(wall)}; exit code {int(code)} ({code.name.lower()})"
        )
        self.out(f"index: {self.options.out_dir / 'index.html'}")
        self.out(f"junit: {self.options.out_dir / 'junit.xml'}")


# ------------------------------------------------------------------ helpers
def _unfinished_rollbacks(journal: Journal) -> list[str]:
    """Rollbacks that did not succeed: ``name (status)``, or ``name (never ran)``."""
    ran = {r.name: r for r in journal.rollbacks}
    declared = [
        str(a.get("name", "?"))
        for a in (journal.raw.get("experiment") or {}).get("rollbacks") or []
        if isinstance(a, dict)
    ]

    def how(name: str) -> str:
        if name not in ran:
            return "never ran"
        status = ran[name].status
        return status if status in ("failed", "skipped") else "did not finish"

    unfinished = [
        f"{name} ({how(name)})"
        for name in declared
        if name not in ran or ran[name].status != "succeeded"
    ]
    return unfinished + [
        f"{r.name} ({how(r.name)})"
        for r in journal.rollbacks
        if r.name not in declared and r.status != "succeeded"
    ]


def chaos_environment(overrides: Mapping[str, str | None]) -> dict[str, str]:
    """This process' environment with ``overrides`` applied (None removes a variable)."""
    env = dict(os.environ)
    for key, value in overrides.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    env["PYTHONUNBUFFERED"] = "1"  # progress lines as they happen
    return env


def _tail(path: Path, lines: int = 3) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(line.strip() for line in text[-lines:])


def _chaostoolkit_version() -> str:
    try:
        from importlib.metadata import version

        lib = version("chaostoolkit-lib")
        return f"chaostoolkit {version('chaostoolkit')}, chaostoolkit-lib {lib}"
    except Exception:
        return "unknown"
