"""The documented commands, run as a user runs them, on a local cluster of their own.

`blackstart cluster up --with-rescue` brings up the module's cluster (the default
GPU fleet with the rescue controller and agent); on it: `cluster list`, `cluster
status` exiting 1 while a component is down, `toolchain status`, and
`blackstart gameday --context` through a copy of the cluster's kubeconfig whose
context is renamed `staging-gpu`: refused until allow-listed, then every fault
lands on that cluster and no other cluster is created.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from blackstart.clusters.local.provider import LocalProvider
from blackstart.clusters.processes import is_alive, read_pid
from blackstart.clusters.state import ClusterState, load_state, state_dir_for
from blackstart.clusters.toolchain import load_pins
from blackstart.health import parse_iso
from blackstart.kube import api_client

from .conftest import E2E_CLUSTER, eventually, repo_root

pytestmark = pytest.mark.e2e

BLACKSTART = str(Path(sys.executable).with_name("blackstart"))
EXT = f"{E2E_CLUSTER}-ext"
XID_62_LINE = "NVRM: Xid (PCI:0000:03:00): 62,"


def blackstart(
    *args: str, env: dict[str, str] | None = None, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [BLACKSTART, *args],
        cwd=repo_root(),
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@dataclass
class UpCluster:
    state: ClusterState
    up: subprocess.CompletedProcess[str]


@pytest.fixture(scope="module")
def ext(local: LocalProvider) -> Iterator[UpCluster]:
    """`blackstart cluster up --with-rescue` (any leftover of that name removed first)."""
    if state_dir_for(EXT).exists():
        blackstart("cluster", "down", "--name", EXT)
    up = blackstart("cluster", "up", "--name", EXT, "--with-rescue")
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        yield UpCluster(load_state(EXT), up)
    finally:
        down = blackstart("cluster", "down", "--name", EXT)
        assert down.returncode == 0, down.stderr


def cluster_names() -> set[str]:
    listed = blackstart("cluster", "list")
    assert listed.returncode == 0, listed.stderr
    return {line.split()[0] for line in listed.stdout.splitlines() if line.strip()}


def rows(status_stdout: str) -> dict[str, list[str]]:
    """Component -> the columns of its row in `cluster status`/`cluster up` output."""
    table = status_stdout.split("COMPONENT", 1)[1].splitlines()[1:]
    return {line.split()[0]: line.split() for line in table if line.strip()}


def test_cluster_up_with_rescue_starts_the_controller_and_the_agent(
    ext: UpCluster, local: LocalProvider
) -> None:
    table = rows(ext.up.stdout)
    for component in ("rescue-controller", "rescue-agent"):
        assert component in table, ext.up.stdout
        assert table[component][2:4] == ["running", "ok"], table[component]
        pid = read_pid(local.pid_file(EXT, component))
        assert pid is not None and is_alive(pid), component
    crds = client.ApiextensionsV1Api(api_client(ext.state.kubeconfig))
    assert crds.read_custom_resource_definition("rescueplans.rescue.blackstart.dev")


def test_cluster_list_names_each_cluster_with_its_provider_nodes_and_kubeconfig(
    ext: UpCluster,
) -> None:
    listed = blackstart("cluster", "list")
    assert listed.returncode == 0, listed.stderr
    (line,) = [row for row in listed.stdout.splitlines() if row.split()[:1] == [EXT]]
    assert line.split() == [EXT, "local", str(ext.state.nodes), "nodes", ext.state.kubeconfig]


def test_cluster_status_exits_1_while_a_component_is_down_and_0_when_it_is_back(
    ext: UpCluster, local: LocalProvider
) -> None:
    healthy = blackstart("cluster", "status", "--name", EXT)
    assert healthy.returncode == 0, healthy.stdout
    local.stop_component(EXT, "coredns")
    try:
        down = blackstart("cluster", "status", "--name", EXT)
        assert down.returncode == 1, down.stdout
        assert rows(down.stdout)["coredns"][2:4] == ["stopped", "FAIL"]
        assert rows(down.stdout)["kube-apiserver"][3] == "ok"  # only the one that is down
    finally:
        local.start_component(EXT, "coredns")
    eventually(
        lambda: blackstart("cluster", "status", "--name", EXT).returncode == 0,
        60,
        "cluster status exiting 0 once CoreDNS is back",
    )


def test_toolchain_status_lists_every_pinned_binary_and_exits_1_when_one_is_missing(
    tmp_path: Path,
) -> None:
    status = blackstart("toolchain", "status")
    assert status.returncode == 0, status.stdout + status.stderr
    listed = {line.split()[0]: line.split() for line in status.stdout.splitlines() if line}
    for component in load_pins().values():
        for name in component.binaries or {component.name: ""}:
            assert name in listed, f"{name} missing from:\n{status.stdout}"
            assert Path(listed[name][-1]).is_file(), listed[name]
    empty = blackstart("--cache-dir", str(tmp_path / "empty-cache"), "toolchain", "status")
    assert empty.returncode == 1, empty.stdout
    missing = {line.split()[0] for line in empty.stdout.splitlines() if "MISSING" in line}
    assert {"kube-apiserver", "etcd", "kwok"} <= missing


def renamed_context_kubeconfig(state: ClusterState, folder: Path, context: str) -> Path:
    """A copy of the cluster's admin kubeconfig whose context is called ``context``."""
    config: dict[str, Any] = yaml.safe_load(Path(state.kubeconfig).read_text())
    (entry,) = config["contexts"]
    entry["name"] = context
    config["current-context"] = context
    path = folder / "staging.kubeconfig"
    path.write_text(yaml.safe_dump(config))
    return path


def journal_of(out: Path, name: str) -> dict[str, Any]:
    journal: dict[str, Any] = json.loads((out / name / "journal.json").read_text())
    return journal


def test_gameday_on_a_renamed_context_is_refused_until_allow_listed_then_runs_there_only(
    ext: UpCluster, local: LocalProvider, tmp_path: Path
) -> None:
    """The false green of issue 15: the game day used to create a cluster `blackstart`,
    run there and pass. Now the context is refused until allow-listed, even though
    blackstart made the cluster behind it, then the Xid lands on that cluster."""
    kubeconfig = renamed_context_kubeconfig(ext.state, tmp_path, "staging-gpu")
    env = {"KUBECONFIG": str(kubeconfig), "BLACKSTART_ALLOWED_CONTEXTS": ""}
    env["BLACKSTART_CLUSTER"] = "blackstart"  # the experiments' default: must not matter
    gpu_3_log = local.kernel_log(EXT, "gpu-3")
    log_before = gpu_3_log.read_text()
    clusters_before = cluster_names()
    command = ["gameday", "--context", "staging-gpu", "--only", "xid-62-cordon"]

    refused = blackstart(*command, "--out", str(tmp_path / "refused"), env=env)
    assert refused.returncode == 3, refused.stderr[-3000:]
    assert "refusing to inject faults through kubeconfig context 'staging-gpu'" in refused.stderr
    assert f"local cluster '{EXT}' is behind it" in refused.stderr
    assert not (tmp_path / "refused" / "xid-62-cordon" / "journal.json").exists()
    assert gpu_3_log.read_text() == log_before

    env["BLACKSTART_ALLOWED_CONTEXTS"] = "prod-eu,staging-gpu"
    started = time.time()
    out = tmp_path / "allowed"
    ran = blackstart(*command, "--out", str(out), env=env)
    assert ran.returncode == 0, ran.stderr[-3000:]
    assert "xid-62-cordon  completed  completed    ok" in ran.stdout
    chaos_log = (out / "xid-62-cordon" / "chaostoolkit.log").read_text()
    assert "pins the run to kubeconfig context 'staging-gpu'" in chaos_log
    assert "creating cluster" not in chaos_log
    # the fault landed on the cluster behind staging-gpu: its gpu-3 kernel log got the Xid
    new_lines = gpu_3_log.read_text()[len(log_before) :]
    assert XID_62_LINE in new_lines, new_lines[-500:]
    journal = journal_of(out, "xid-62-cordon")
    (entry,) = [e for e in journal["extensions"] if e["name"] == "blackstart"]
    assert entry["environment"]["cluster"] == EXT
    assert entry["environment"]["context"] == "staging-gpu"
    assert entry["guard"]["refused"] is None and entry["guard"]["tripped"] is False
    plans = client.CustomObjectsApi(api_client(ext.state.kubeconfig)).list_cluster_custom_object(
        "rescue.blackstart.dev", "v1", "rescueplans"
    )["items"]
    assert any(
        p["spec"]["nodeName"] == "gpu-3"
        and _timestamp(p["metadata"]["creationTimestamp"]) >= started - 1
        for p in plans
    ), [p["metadata"]["name"] for p in plans]
    # and no other cluster: none left behind, none created and deleted during the run
    assert cluster_names() - clusters_before == set()
    assert "blackstart" not in cluster_names() - clusters_before


def _timestamp(iso: str) -> float:
    return parse_iso(iso).timestamp()
