"""A process that exited and is not yet reaped must not pass for a running one.

kwokctl probes a component's pid with signal 0, which a zombie still takes: a start
right after an OOM kill found kube-apiserver "running", started nothing, and the
rollback that asked for it failed (seen in CI).
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

from blackstart.clusters.processes import forget_unreaped, is_alive, is_unreaped


def exited_child() -> subprocess.Popen[bytes]:
    """A child that has exited and that nobody has reaped yet."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 10
    while not is_unreaped(child.pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    return child


def test_an_exited_unreaped_child_is_neither_alive_nor_gone() -> None:
    child = exited_child()
    assert is_unreaped(child.pid)
    assert not is_alive(child.pid)
    child.wait()
    assert not is_unreaped(child.pid)


def test_a_pid_file_whose_process_is_never_reaped_is_removed_after_the_wait(
    tmp_path: Path,
) -> None:
    child = exited_child()
    pid_file = tmp_path / "kube-apiserver.pid"
    pid_file.write_text(f"{child.pid}\n")
    try:
        assert forget_unreaped(pid_file, wait_s=0.3)
        assert not pid_file.exists()
    finally:
        child.wait()


def test_a_pid_file_whose_process_is_reaped_meanwhile_is_kept(tmp_path: Path) -> None:
    child = exited_child()
    pid_file = tmp_path / "kube-apiserver.pid"
    pid_file.write_text(f"{child.pid}\n")
    reaper = threading.Timer(0.3, child.wait)
    reaper.start()
    started = time.monotonic()
    assert not forget_unreaped(pid_file, wait_s=10)
    reaper.join()
    assert time.monotonic() - started < 5  # it returned once the process was reaped
    assert pid_file.exists()


def test_a_pid_file_of_a_running_process_or_none_at_all_is_left_alone(tmp_path: Path) -> None:
    pid_file = tmp_path / "etcd.pid"
    assert not forget_unreaped(pid_file, wait_s=0.1)
    running = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        pid_file.write_text(f"{running.pid}\n")
        assert not forget_unreaped(pid_file, wait_s=0.1)
        assert pid_file.exists()
    finally:
        running.kill()
        running.wait()
