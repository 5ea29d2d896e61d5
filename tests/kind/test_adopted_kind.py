"""A kind cluster blackstart did not create: adopted, refused until allow-listed, then run.

The path users take against their own clusters: a plain `kind create cluster`
from blackstart's node image (no blackstart config: no kernel-log mounts, no
labels, its kubeconfig in the user's own file), `blackstart cluster adopt
--with-rescue`, then `blackstart gameday --context kind-<name>` through the
user's kubeconfig. The guard refuses the context until it is allow-listed; then
the entries run on kind act on the adopted cluster (the Xid through a kernel-log
file in the worker's /var volume, read by the agent pod; CoreDNS is the
cluster's Deployment). `cluster down` forgets the cluster and leaves it running.

This module runs first among the kind tests (file order) and deletes its cluster
before the shared kind cluster is made, so the two are never up together.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from kubernetes import client

from blackstart.clusters.kind_provider import KindProvider
from blackstart.clusters.state import load_state, state_dir_for
from blackstart.controls.guard import ALLOWED_ENV
from blackstart.kube import api_client
from blackstart.names import ROLE_LABEL

from .conftest import repo_root

pytestmark = pytest.mark.kind

FOREIGN = os.environ.get("BLACKSTART_KIND_FOREIGN_CLUSTER", "bs-foreign")
#: two GPU workers: one Xid on one of them is half the fleet, which the storm guard allows
SPEC = """\
apiVersion: blackstart.dev/v1
kind: ClusterSpec
metadata:
  name: foreign-gpu
spec:
  serviceCIDR: 10.96.0.0/16
  pools:
  - name: gpu
    role: gpu
    count: 2
    labels:
      nvidia.com/gpu.present: "true"
      nvidia.com/gpu.product: NVIDIA-H100-80GB-HBM3
    capacity:
      nvidia.com/gpu: "4"
"""
ENTRIES = ("xid-62-cordon", "coredns-outage")
NOT_ON_KIND = "remedy-block-network"


def _run(argv: list[str], env: dict[str, str] | None = None, timeout: float = 900) -> str:
    done = subprocess.run(
        argv, capture_output=True, text=True, timeout=timeout, env=env, cwd=repo_root()
    )
    assert done.returncode == 0, f"{argv[:4]} exit {done.returncode}:\n{done.stderr[-4000:]}"
    return done.stderr


@pytest.fixture(scope="module")
def foreign(kind: KindProvider, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A plain kind cluster (the user's kubeconfig file is yielded), deleted afterwards."""
    home = tmp_path_factory.mktemp("foreign")
    config = home / "kind.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "kind": "Cluster",
                "apiVersion": "kind.x-k8s.io/v1alpha4",
                "nodes": [{"role": "control-plane"}, {"role": "worker"}, {"role": "worker"}],
            }
        )
    )
    user_kubeconfig = home / "config"
    kind.down(FOREIGN)  # what an interrupted run left (no state: its containers)
    subprocess.run([kind.kind, "delete", "cluster", "--name", FOREIGN], capture_output=True)
    started = time.monotonic()
    _run(
        [
            kind.kind, "create", "cluster", "--name", FOREIGN, "--image", str(kind.node_image),
            "--config", str(config), "--kubeconfig", str(user_kubeconfig), "--wait", "0s",
        ]
    )  # fmt: skip
    print(f"FIGURE plain kind cluster created in {time.monotonic() - started:.0f} s")
    try:
        yield user_kubeconfig
    finally:
        if (state_dir_for(FOREIGN) / "cluster.json").exists():
            kind.down(FOREIGN)
        subprocess.run(
            [kind.kind, "delete", "cluster", "--name", FOREIGN], capture_output=True, check=False
        )


def test_a_kind_cluster_blackstart_did_not_create_is_adopted_refused_then_run(
    kind: KindProvider, foreign: Path, tmp_path: Path
) -> None:
    spec = tmp_path / "foreign-gpu.yaml"
    spec.write_text(SPEC)
    blackstart = [sys.executable, "-m", "blackstart.cli"]
    # bad input is named and changes nothing: the default spec needs four workers
    wrong = subprocess.run(
        [*blackstart, "cluster", "adopt", "--name", FOREIGN],
        capture_output=True, text=True, timeout=300, cwd=repo_root(),
    )  # fmt: skip
    assert wrong.returncode == 1, wrong.stderr
    assert "has 2 worker(s)" in wrong.stderr and "needs 4" in wrong.stderr, wrong.stderr
    missing = subprocess.run(
        [*blackstart, "cluster", "adopt", "--name", "bs-no-such-cluster"],
        capture_output=True, text=True, timeout=300, cwd=repo_root(),
    )  # fmt: skip
    assert "there is no kind cluster 'bs-no-such-cluster' to adopt" in missing.stderr
    assert not (state_dir_for(FOREIGN) / "cluster.json").exists()
    started = time.monotonic()
    _run([*blackstart, "cluster", "adopt", "--name", FOREIGN, "--spec", str(spec), "--with-rescue"])
    print(f"FIGURE adopted with the rescue chart in {time.monotonic() - started:.0f} s")

    state = load_state(FOREIGN)
    assert state.provider == "kind" and state.extra["adopted"] is True
    # signed with the cluster's own CA, as `cluster up` does: the storms' system traffic
    # failed on an adopted cluster with "has no identity blackstart:coredns"
    assert {"blackstart:coredns", "blackstart:telemetry"} <= set(state.identities)
    core = client.CoreV1Api(api_client(str(foreign)))  # the user's own kubeconfig
    gpu_nodes = core.list_node(label_selector=f"{ROLE_LABEL}=gpu").items
    assert sorted(n.metadata.name for n in gpu_nodes) == [f"{FOREIGN}-worker", f"{FOREIGN}-worker2"]
    assert all(n.status.capacity.get("nvidia.com/gpu") == "4" for n in gpu_nodes)
    log = Path(KindProvider(kind.cache).kernel_log(FOREIGN, "gpu-0"))
    assert log.is_file() and "/volumes/" in str(log), log

    env = {**os.environ, "KUBECONFIG": str(foreign)}
    env.pop(ALLOWED_ENV, None)
    argv = [*blackstart, "gameday", "--context", f"kind-{FOREIGN}"]
    for name in (*ENTRIES, NOT_ON_KIND):
        argv += ["--only", name]
    refused = subprocess.run(
        [*argv, "--out", str(tmp_path / "refused")],
        capture_output=True, text=True, env=env, timeout=300, cwd=repo_root(),
    )  # fmt: skip
    assert refused.returncode == 3, refused.stderr[-3000:]
    assert f"kind-{FOREIGN}" in refused.stderr and ALLOWED_ENV in refused.stderr
    assert not list((tmp_path / "refused").glob("*/journal.json"))

    out = tmp_path / "run"
    env[ALLOWED_ENV] = f"kind-{FOREIGN}"
    done = subprocess.run(
        [*argv, "--out", str(out)],
        capture_output=True, text=True, env=env, timeout=1200, cwd=repo_root(),
    )  # fmt: skip
    assert done.returncode == 0, f"exit {done.returncode}:\n{done.stdout}\n{done.stderr[-6000:]}"
    cases = {c.get("name"): c for c in ET.parse(out / "junit.xml").getroot().iter("testcase")}
    skipped = cases[NOT_ON_KIND].find("skipped")
    assert skipped is not None and "not run on kind" in (skipped.get("message") or "")
    for name in ENTRIES:
        journal = json.loads((out / name / "journal.json").read_text())
        assert journal["status"] == "completed", (name, journal["status"])
        print(f"FIGURE adopted kind game day {name}: {cases[name].get('time')} s")
    xid = json.loads((out / "xid-62-cordon" / "journal.json").read_text())
    [cordon] = [r for r in xid["run"] if r["activity"]["name"] == "seconds-from-xid-to-cordon"]
    print(f"FIGURE adopted kind Xid 62 to cordon: {cordon['output']} s")

    removed = subprocess.run(
        [*blackstart, "cluster", "down", "--name", FOREIGN],
        capture_output=True, text=True, timeout=300, cwd=repo_root(),
    )  # fmt: skip
    assert removed.returncode == 0, removed.stderr
    assert not (state_dir_for(FOREIGN) / "cluster.json").exists()
    running = subprocess.run(
        [kind.kind, "get", "nodes", "--name", FOREIGN], capture_output=True, text=True
    ).stdout.split()
    assert len(running) == 3, running  # forgotten, not deleted: it is the user's cluster
