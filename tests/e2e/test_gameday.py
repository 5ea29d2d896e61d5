"""`blackstart gameday` end to end on a real local cluster.

Each test runs the real command as a subprocess: it brings up its own local
cluster (etcd, kube-apiserver, KWOK GPU fleet, CoreDNS, Prometheus, the rescue
controller), runs experiments with `chaos run` against it, writes the reports
and tears the cluster down. The first runs two quick experiments of the
catalogue suite (experiments/gameday.yaml); the Ctrl-C test uses a small
self-made suite (tests/fixtures/gameday/: kubectl cordons a GPU node so the
hypothesis deviates as expected, then a method that sleeps until interrupted).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from blackstart.clusters.state import state_dir_for
from blackstart.clusters.toolchain import resolve
from blackstart.paths import cache_dir

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures"
BLACKSTART = Path(sys.executable).with_name("blackstart")
BASE_NAME = os.environ.get("BLACKSTART_E2E_CLUSTER", "e2e") + "-gd"


def write_suite(folder: Path, marker: Path) -> Path:
    suite = folder / "suite.yaml"
    suite.write_text(
        f"""
suite: e2e-gameday
experiments:
  - name: cordon-gpu-node
    file: {FIXTURES / "gameday" / "cordon-gpu-node.json"}
    expect: deviated
    timeout: 120
    variables: {{node: gpu-3}}
  - name: slow
    file: {FIXTURES / "gameday" / "slow.json"}
    timeout: 120
    variables: {{marker: "{marker}"}}
"""
    )
    return suite


def gameday_env(name: str) -> dict[str, str]:
    """kubectl on PATH and KUBECONFIG at the admin kubeconfig the cluster will have."""
    toolchain, missing = resolve(cache_dir())
    if missing:
        pytest.fail(
            "e2e tests need the toolchain: run `blackstart toolchain install` "
            f"(missing: {', '.join(n for _, n in missing)})",
            pytrace=False,
        )
    kubectl = Path(toolchain.binary("kubectl"))
    return {
        **os.environ,
        "PATH": f"{kubectl.parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "KUBECONFIG": str(state_dir_for(name) / "admin.kubeconfig"),
    }


def leftovers(name: str) -> list[str]:
    """Command lines of live processes that belong to cluster ``name``."""
    needles = [
        str(state_dir_for(name)),
        str(cache_dir() / "kwok" / "clusters" / name),
        f"--cluster {name} ",
    ]
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if any(n in cmdline for n in needles):
            found.append(f"{entry.name}: {cmdline[:200]}")
    return found


def cleanup(name: str) -> None:
    if state_dir_for(name).exists():
        subprocess.run([str(BLACKSTART), "cluster", "down", "--name", name], check=False)


def test_gameday_runs_catalogue_experiments_on_a_fresh_cluster_and_tears_it_down(
    tmp_path: Path,
) -> None:
    """The first README command, limited to two quick catalogue experiments."""
    name = f"{BASE_NAME}1"
    cleanup(name)
    out = tmp_path / "out"
    started = time.monotonic()
    try:
        result = subprocess.run(
            [
                str(BLACKSTART),
                "gameday",
                "--suite",
                str(REPO / "experiments" / "gameday.yaml"),
                "--only",
                "xid-62-cordon",
                "--only",
                "coredns-outage",
                "--name",
                name,
                "--out",
                str(out),
            ],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
    finally:
        cleanup(name)
    wall = time.monotonic() - started
    print(result.stderr[-3000:], result.stdout, f"wall {wall:.1f} s", sep="\n")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "rescue controller and node agents started" in result.stderr
    assert "[1/2 xid-62-cordon]" in result.stderr and "[2/2 coredns-outage]" in result.stderr
    assert "xid-62-cordon   completed  completed    ok" in result.stdout
    assert "coredns-outage  completed  completed    ok" in result.stdout
    for experiment in ("xid-62-cordon", "coredns-outage"):
        report = (out / experiment / "report.html").read_text()
        assert "as expected (completed)" in report
        assert report.count('class="chart"') >= 4  # timeline + the sampled metrics
        assert "This journal is incomplete" not in report
    xid_report = (out / "xid-62-cordon" / "report.html").read_text()
    rescue = xid_report[xid_report.index('id="rescue"') : xid_report.index('id="environment"')]
    assert "Cordoned" in rescue and "gpu-" in rescue  # the controller's plan and transitions
    root = ET.parse(out / "junit.xml").getroot()
    assert (root.get("tests"), root.get("failures"), root.get("errors")) == ("2", "0", "0")
    index = (out / "index.html").read_text()
    assert 'href="xid-62-cordon/report.html"' in index
    assert 'href="coredns-outage/journal.json"' in index
    assert not state_dir_for(name).exists(), "the cluster was not torn down"
    assert leftovers(name) == []


def test_ctrl_c_runs_the_rollbacks_tears_down_and_leaves_nothing_running(tmp_path: Path) -> None:
    name = f"{BASE_NAME}2"
    cleanup(name)
    out = tmp_path / "out"
    marker = tmp_path / "marker"
    suite = write_suite(tmp_path, marker)
    lines: list[str] = []
    proc = subprocess.Popen(
        [str(BLACKSTART), "gameday", "--suite", str(suite), "--name", name, "--out", str(out)],
        env=gameday_env(name),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 300
        for line in proc.stdout:
            lines.append(line)
            if "[2/2 slow]" in line and "method: action sleep-long" in line:
                proc.send_signal(signal.SIGINT)  # what Ctrl-C in the terminal does
                break
            assert time.monotonic() < deadline, "".join(lines[-20:])
        rest, _ = proc.communicate(timeout=240)
        lines.append(rest)
    finally:
        if proc.poll() is None:
            proc.kill()
        cleanup(name)
    text = "".join(lines)
    print(text[-4000:])
    assert proc.returncode == 130, text[-2000:]
    assert "interrupting the running experiment" in text
    assert marker.exists(), "the rollback of the interrupted experiment did not run"
    assert '"status": "interrupted"' in (out / "slow" / "journal.json").read_text()
    assert "cordon-gpu-node  deviated   deviated     ok" in text  # what ran before is kept
    index = (out / "index.html").read_text()
    assert "The game day was interrupted" in index
    assert not state_dir_for(name).exists(), "the cluster was not torn down"
    assert leftovers(name) == []


SMALL_SPEC = """
kind: ClusterSpec
metadata: {name: keep}
spec:
  pools:
    - {name: gpu, role: gpu, count: 2, capacity: {nvidia.com/gpu: "8"}}
"""


def test_keep_leaves_the_cluster_it_brought_up_running(tmp_path: Path) -> None:
    """`--keep`: the game day's own cluster stays up, healthy, with its rescue controller."""
    name = f"{BASE_NAME}-keep"
    cleanup(name)
    spec = tmp_path / "small.yaml"
    spec.write_text(SMALL_SPEC)
    suite = tmp_path / "suite.yaml"
    suite.write_text(
        "suite: keep\nexperiments:\n"
        f"  - name: probe-holds\n    file: {FIXTURES / 'experiments' / 'probe-holds.json'}\n"
    )
    out = tmp_path / "out"
    try:
        result = subprocess.run(
            [str(BLACKSTART), "gameday", "--suite", str(suite), "--name", name, "--spec",
             str(spec), "--keep", "--out", str(out)],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr[-3000:]
        assert f"--keep: local cluster {name} is left running" in result.stderr
        assert "probe-holds  completed  completed    ok" in result.stdout
        assert (state_dir_for(name) / "cluster.json").exists()
        status = subprocess.run(
            [str(BLACKSTART), "cluster", "status", "--name", name],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        # what it left running (the exit code says whether every component is healthy: on a
        # machine this loaded the controller-manager may have lost its lease; not --keep's)
        table = status.stdout.split("COMPONENT", 1)[1].splitlines()[1:]
        rows = {line.split()[0]: line.split() for line in table if line.strip()}
        for component in ("etcd", "kube-apiserver", "rescue-controller", "rescue-agent"):
            assert rows[component][2:4] == ["running", "ok"], status.stdout
        assert leftovers(name) != []  # its processes are still there
    finally:
        cleanup(name)
    assert leftovers(name) == []
