"""Local processes of a cluster: start detached, find by pid file, stop, hang, resume.

Every process the local provider runs (the ones kwokctl starts and the ones
blackstart starts itself: CoreDNS, the rescue controller and agents) has a pid
file. These helpers act on one process by its pid file and never on anything
else on the machine.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path


class ProcessError(RuntimeError):
    """A local component could not be started, found or signalled."""


def read_pid(pid_file: Path) -> int | None:
    """The pid recorded in ``pid_file``, or None when there is no such file."""
    try:
        text = pid_file.read_text().strip()
    except FileNotFoundError:
        return None
    try:
        return int(text)
    except ValueError:
        raise ProcessError(f"{pid_file} does not hold a pid: {text[:40]!r}") from None


def _zombie_or_gone(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return True
    # the state is the field after the parenthesised command name
    return stat.rsplit(")", 1)[-1].split()[0] in ("Z", "X")


def _takes_signals(pid: int | None) -> bool | None:
    """Whether ``pid`` takes signal 0: True, False (no such process), None (not ours)."""
    if pid is None or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return None
    return True


def is_alive(pid: int | None) -> bool:
    """True when ``pid`` names a live (possibly stopped) process."""
    takes = _takes_signals(pid)
    if takes is None:  # someone else's process: alive
        return True
    return takes and not _zombie_or_gone(int(pid or 0))


def is_unreaped(pid: int | None) -> bool:
    """True when ``pid`` has exited but its parent has not reaped it yet (a zombie).

    Such a pid still takes signal 0, so a tool that probes with it (kwokctl does)
    takes the process for running.
    """
    return bool(_takes_signals(pid)) and _zombie_or_gone(int(pid or 0))


def forget_unreaped(pid_file: Path, wait_s: float = 10.0) -> bool:
    """Wait for the exited process of ``pid_file`` to be reaped; remove the file if it is not.

    A component killed a moment ago (an OOM kill, a liveness kill) stays a zombie
    until init reaps it, which takes up to a second here and longer on a loaded
    machine. kwokctl, asked to start it meanwhile, finds it "running" and starts
    nothing. True when the file was removed.
    """
    pid = read_pid(pid_file)
    deadline = time.monotonic() + wait_s
    while is_unreaped(pid):
        if time.monotonic() >= deadline:
            with contextlib.suppress(FileNotFoundError):
                if read_pid(pid_file) == pid:
                    pid_file.unlink()
                    return True
            return False
        time.sleep(0.05)
    return False


def is_stopped(pid: int | None) -> bool:
    """True when ``pid`` is hung by SIGSTOP (state T)."""
    if not is_alive(pid):
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] in ("T", "t")


def start_detached(
    argv: list[str], pid_file: Path, log_file: Path, env: dict[str, str] | None = None
) -> int:
    """Start ``argv`` in its own session (it outlives the CLI), log to ``log_file``."""
    return spawn_detached(argv, pid_file, log_file, env).pid


def spawn_detached(
    argv: list[str], pid_file: Path, log_file: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """:func:`start_detached`, returning the process (for a parent that reaps it)."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    if not Path(argv[0]).exists():
        raise ProcessError(f"cannot start {argv[0]}: no such binary")
    with open(log_file, "ab") as log:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
            close_fds=True,
        )
    pid_file.write_text(f"{proc.pid}\n")
    return proc


def signal_pid_file(pid_file: Path, sig: signal.Signals, what: str) -> int:
    """Send ``sig`` to the process of ``pid_file``; raise naming ``what`` when it is not running."""
    pid = read_pid(pid_file)
    if not is_alive(pid):
        raise ProcessError(f"{what} is not running (pid file {pid_file})")
    assert pid is not None
    os.kill(pid, sig)
    return pid


def stop_pid_file(pid_file: Path, what: str, timeout: float = 15.0) -> bool:
    """Stop the process of ``pid_file`` (SIGCONT, SIGTERM, then SIGKILL). False if not running."""
    pid = read_pid(pid_file)
    if not is_alive(pid):
        return False
    assert pid is not None
    for sig in (signal.SIGCONT, signal.SIGTERM):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return True
    if wait_gone(pid, timeout):
        return True
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return True
    if not wait_gone(pid, 5.0):
        raise ProcessError(f"{what} (pid {pid}) did not exit after SIGKILL")
    return True


def wait_gone(pid: int, timeout: float) -> bool:
    """Wait until ``pid`` has exited; reap it when it is our child."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        if not is_alive(pid):
            return True
        time.sleep(0.05)
    return not is_alive(pid)
