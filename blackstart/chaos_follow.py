"""Following one ``chaos run``: its log lines as progress, its timeout, its rollback grace.

:func:`follow_chaos` relays what chaos prints, interrupts it (SIGINT, so Chaos
Toolkit plays the rollbacks) when the suite entry's timeout passes, and stops it
(SIGTERM, then SIGKILL) when its rollbacks outlive the grace.
"""

import os
import queue
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from typing import IO

from blackstart.reports.html import format_duration
from blackstart.suite import SuiteEntry

HEARTBEAT_S = 30.0
KILL_AFTER_TERM_S = 15.0
ORPHAN_OUTPUT_S = 10.0  # after chaos exits, how long to read what its children still print
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_LOG_LINE = re.compile(r"^\[(?P<when>[^\]]*?)\s(?P<level>[A-Z]+)\]\s?(?P<msg>.*)$")


@dataclass
class ChaosProgress:
    """Follows chaos' log lines: which phase and which activity the run is in.

    A continuous hypothesis (checked every second while the method runs) is
    not echoed probe by probe; its deviations are, as chaos logs them as errors.
    """

    phase: str = "starting"
    activity: str = ""
    method_started: bool = False
    in_hypothesis: bool = False
    continuous: bool = False
    status: str = ""

    def feed(self, line: str) -> tuple[str | None, str | None]:
        """(progress message, error message) worth printing for this line, if any."""
        match = _LOG_LINE.match(line)
        if not match:
            return None, None
        level, msg = match.group("level"), match.group("msg").strip()
        if level in ("ERROR", "CRITICAL"):
            if "not in the given tolerance" in msg:
                self.in_hypothesis = False
            return None, msg
        if msg.startswith("Executing the steady-state hypothesis continuously"):
            self.continuous = True
            return None, None
        if msg.startswith("Steady state hypothesis:"):
            self.in_hypothesis = True
            if not self.method_started:
                self.phase = "hypothesis before"
            elif self.continuous and self.phase == "method":
                return None, None  # checked every few seconds during the method: not echoed
            else:
                self.phase = "hypothesis after"
            return f"{self.phase}: {msg.split(':', 1)[1].strip()}", None
        if msg.startswith("Steady state hypothesis is met"):
            self.in_hypothesis = False
            return None, None
        if msg.startswith("Playing your experiment's method"):
            self.phase, self.method_started, self.activity = "method", True, ""
            self.in_hypothesis = False
            return "method", None
        if msg.startswith("Let's rollback"):
            self.phase, self.activity = "rollbacks", ""
            return "rollbacks", None
        if msg.startswith("Rollback:"):
            self.phase = "rollbacks"
            self.activity = msg.split(":", 1)[1].strip()
            return f"rollbacks: {self.activity}", None
        for kind in ("Probe", "Action"):
            if msg.startswith(f"{kind}:"):
                name = msg.split(":", 1)[1].strip()
                if self.phase == "rollbacks":
                    return None, None  # "Rollback: <name>" was shown already
                if kind == "Probe" and self.in_hypothesis:
                    if self.phase == "method":
                        return None, None  # a continuous check's probe
                    return f"{self.phase}: probe {name}", None
                self.activity = f"{kind.lower()} {name}"
                return f"method: {self.activity}", None
        if msg.startswith("Pausing"):
            return f"{self.phase}: {msg.rstrip('.')}", None
        if msg.startswith("Experiment ended with status:"):
            self.status = msg.split(":", 1)[1].strip()
            self.phase = "ended"
            return f"ended: {self.status}", None
        return None, None


@dataclass(frozen=True)
class Ending:
    """How a chaos run ended, as far as the runner had a hand in it."""

    timed_out: bool = False
    #: the signal the runner stopped chaos with when its rollbacks outlived
    #: --rollback-grace ("SIGTERM", "SIGKILL"), else ""
    stopped_by: str = ""


def signal_process(child: subprocess.Popen[str], sig: signal.Signals) -> None:
    with suppress(ProcessLookupError):
        child.send_signal(sig)


def signal_group(child: subprocess.Popen[str], sig: signal.Signals) -> None:
    """Signal chaos and the processes it started, as Ctrl-C on `chaos run` in a terminal does.

    chaos runs in a session of its own (see ``start_new_session``), so its
    process group holds chaos and its activities' subprocesses only.
    """
    try:
        os.killpg(child.pid, sig)
    except (ProcessLookupError, PermissionError):
        signal_process(child, sig)


def mmss(t0: float) -> str:
    seconds = int(time.monotonic() - t0)
    return f"{seconds // 60:02d}:{seconds % 60:02d}"


def follow_chaos(
    child: subprocess.Popen[str],
    entry: SuiteEntry,
    tag: str,
    t0: float,
    log: IO[str],
    *,
    echo: Callable[[str], None],
    verbose: bool,
    rollback_grace: float,
    interrupted: threading.Event,
) -> Ending:
    """Relay chaos' output until it exits; enforce the timeout and the rollback grace."""
    lines: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        assert child.stdout is not None
        for line in child.stdout:
            lines.put(line)
        lines.put(None)

    reader = threading.Thread(target=read, name=f"chaos-{entry.name}", daemon=True)
    reader.start()
    progress = ChaosProgress()
    timed_out = False
    stop_deadline: float | None = None
    termed = killed = False
    last_shown = time.monotonic()
    eof = False
    orphans_ended = False
    exited_at: float | None = None

    def cut_short() -> bool:
        """Whether chaos was interrupted, timed out or stopped: then what it started dies too.

        Stopped in a rollback, what that rollback started (a `sleep`, a kubectl) would
        outlive it. Interrupted, an activity's process can outlive it as well: a SIGINT
        that reaches chaos while it is starting the process (after the fork, before the
        exec) raises in chaos, which then never kills it, and the child, not yet the
        program it becomes, loses the signal (seen in CI: a `sleep` left running).
        chaos' session holds nothing else: what is meant to outlive a run (control-plane
        components, the rescue processes) starts in a session of its own.
        """
        return termed or timed_out or interrupted.is_set()

    while not eof or child.poll() is None:
        try:
            line = lines.get(timeout=0.5)
        except queue.Empty:
            line = ""
        if line is None:
            eof = True
        elif line:
            clean = _ANSI.sub("", line).rstrip("\n")
            log.write(clean + "\n")
            log.flush()
            if verbose:
                echo(f"{tag}   {clean}")
            shown, err = progress.feed(clean)
            if shown:
                echo(f"{tag} {mmss(t0)} {shown}")
                last_shown = time.monotonic()
            elif err and not verbose:
                echo(f"{tag} {mmss(t0)}   ! {err[:300]}")
        now = time.monotonic()
        if not timed_out and now - t0 > entry.timeout and child.poll() is None:
            timed_out = True
            echo(
                f"{tag} {mmss(t0)} timeout ({format_duration(entry.timeout)}): interrupting; "
                "Chaos Toolkit plays the rollbacks"
            )
            signal_group(child, signal.SIGINT)
        if (timed_out or interrupted.is_set()) and stop_deadline is None:
            stop_deadline = now + rollback_grace
        if stop_deadline is not None and child.poll() is None:
            if now > stop_deadline and not termed:
                echo(f"{tag} rollbacks did not finish in time; sending SIGTERM")
                signal_process(child, signal.SIGTERM)
                termed = True
                stop_deadline = now + KILL_AFTER_TERM_S
            elif now > stop_deadline and termed and not killed:
                echo(f"{tag} chaos still running; killing it")
                signal_group(child, signal.SIGKILL)
                killed = True
        if now - last_shown > HEARTBEAT_S and child.poll() is None:
            doing = f"{progress.phase}" + (f": {progress.activity}" if progress.activity else "")
            echo(f"{tag} {mmss(t0)} still running ({doing})")
            last_shown = now
        if eof and child.poll() is None:
            time.sleep(0.1)
        if not eof and child.poll() is not None:
            # chaos exited but something it started still holds its output
            if cut_short() and not orphans_ended:
                signal_group(child, signal.SIGKILL)
                orphans_ended = True
            exited_at = exited_at or now
            if now - exited_at > ORPHAN_OUTPUT_S:
                echo(f"{tag} chaos exited; processes it started still run, not waited for")
                break
    child.wait()
    if cut_short() and not orphans_ended:
        signal_group(child, signal.SIGKILL)
    reader.join(timeout=5)
    return Ending(timed_out, "SIGKILL" if killed else "SIGTERM" if termed else "")
