"""`blackstart gameday --provider kind` on the kind tests' cluster, as a user runs it.

The catalogue's entries that run on kind act on real parts: kube-apiserver is
stopped by parking its static-pod manifest (kubelet removes the pod), CoreDNS is
the cluster's Deployment whose containers are killed while the API server is
down (kubelet starts them again, and they cannot sync), the data-plane DNS probes
resolve through kube-proxy and the CoreDNS pods, and the Xid is acted on by the
controller and agent pods installed with the Helm chart. An entry the suite keeps
off kind is reported as not run with its reason, never as passed.
"""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from blackstart.clusters.state import ClusterState, load_state
from blackstart.rescue.image import RescueImage

from .conftest import remove_rescue, repo_root

pytestmark = pytest.mark.kind

ENTRIES = (
    "xid-62-cordon",
    "xid-48-drain-reboot",
    "xid-79-warm-standby",
    "control-plane-outage-dns",
    "coredns-restart-during-outage",
    "staged-rollout-guard",
    # the fix; the unmitigated storm is left to the hand runs: on kind it deviates by a
    # margin too small for a test to count on (system p99 1.02 to 1.09 s against 1 s)
    "telemetry-storm-apf",
)
NOT_ON_KIND = "remedy-block-network"


def test_the_catalogue_on_kind_ends_as_the_suite_expects_and_says_what_did_not_run(
    kind_cluster: ClusterState,
    images: dict[str, RescueImage],
    core: client.CoreV1Api,
    tmp_path: Path,
) -> None:
    cordoned_before = {n.metadata.name for n in core.list_node().items if n.spec.unschedulable}
    out = tmp_path / "gameday"
    argv = [sys.executable, "-m", "blackstart.cli", "gameday", "--provider", "kind"]
    argv += ["--name", kind_cluster.name, "--out", str(out)]
    for name in (*ENTRIES, NOT_ON_KIND):
        argv += ["--only", name]
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=2700, cwd=repo_root(), check=False
        )
    finally:
        remove_rescue(kind_cluster, core, cordoned_before)
    assert done.returncode == 0, f"exit {done.returncode}:\n{done.stdout}\n{done.stderr[-6000:]}"
    assert f"reusing the running kind cluster {kind_cluster.name!r}" in done.stderr

    cases = {c.get("name"): c for c in ET.parse(out / "junit.xml").getroot().iter("testcase")}
    assert set(cases) == {*ENTRIES, NOT_ON_KIND}
    skipped = cases[NOT_ON_KIND].find("skipped")
    assert skipped is not None, "an entry kept off kind must be reported as not run"
    assert "not run on kind: the storm itself runs on kind" in (skipped.get("message") or "")
    assert not (out / NOT_ON_KIND / "journal.json").exists()
    for name in ENTRIES:
        assert cases[name].find("failure") is None and cases[name].find("error") is None, name

    def journal(name: str) -> dict[str, Any]:
        loaded: dict[str, Any] = json.loads((out / name / "journal.json").read_text())
        return loaded

    assert journal("xid-62-cordon")["status"] == "completed"
    # the cordon is the Xid's, not left over from an earlier test
    [inject] = [
        r
        for r in journal("xid-62-cordon")["run"]
        if r["activity"]["name"].startswith("inject-xid-62")
    ]
    assert inject["output"]["was_cordoned"] is False, inject["output"]
    # the drain, the reboot (the node container restarted from inside) and the uncordon,
    # with the evicted 4-GPU pod back and the fleet's 8 GPUs schedulable again
    drained = journal("xid-48-drain-reboot")
    assert drained["status"] == "completed" and drained.get("deviated") is False
    # the warm standby swapped in for the Xid 79 node, and put back by the rollback
    swapped = journal("xid-79-warm-standby")
    assert swapped["status"] == "completed" and swapped.get("deviated") is False
    [promoted] = [r for r in swapped["run"] if r["activity"]["name"] == "standby-promoted"]
    assert promoted["output"], promoted
    [restored] = [r for r in swapped["rollbacks"] if r["activity"]["name"] == "restore-xid-nodes"]
    assert restored["output"]["standbys_restored"], restored["output"]
    assert journal("control-plane-outage-dns")["status"] == "completed"
    # the December 2024 coupling on a real cluster: CoreDNS restarted while the API server
    # is down cannot sync and answers SERVFAIL through the cluster's own Service
    restarted = journal("coredns-restart-during-outage")
    assert restarted.get("deviated") is True
    after = restarted["steady_states"]["after"]["probes"]
    [dns] = [p for p in after if p["activity"]["name"] == "data-plane-dns-answers"]
    assert dns["output"]["success_ratio"] < 0.5, dns["output"]
    assert "SERVFAIL" in dns["output"]["failures"] or "timeout" in dns["output"]["failures"]
    # the staged roll-out as the DaemonSet's real pods: each stage more of them, a guard
    # on system traffic (as blackstart:coredns) between them
    staged = journal("staged-rollout-guard")
    assert staged["status"] == "completed" and staged.get("deviated") is False
    [rolled] = [r for r in staged["run"] if r["activity"]["name"] == "staged-roll-out"]
    result = rolled["output"]
    assert result["where"] == "pods", result
    assert [s["pods"] for s in result["stages"]] == [1, 2, 4][: len(result["stages"])]
    assert all(s["p99_s"] is not None for s in result["stages"]), result["stages"]
    print(f"FIGURE kind staged roll-out: {result['reason']}; kept {result['kept_pods']} pods")
    # the December 2024 storm on kind with its fix: the DaemonSet's pods LIST as their
    # ServiceAccount on a control-plane node container the experiment limited, API Priority
    # and Fairness confines that ServiceAccount, the API server stays and the admin gets in;
    # the rollback lifts the limit
    confined = journal("telemetry-storm-apf")
    assert confined["status"] == "completed" and confined.get("deviated") is False
    apf_runs = {r["activity"]["name"]: r for r in confined["run"]}
    assert apf_runs["size-the-control-plane"]["output"]["after"] == {"cpus": 2, "memory": "1536Mi"}
    rolled_out = apf_runs["roll-out-telemetry-service-to-every-node"]["output"]
    assert rolled_out["where"] == "pods", rolled_out
    assert rolled_out["identity"] == "system:serviceaccount:blackstart-telemetry:telemetry-agent"
    figures = apf_runs["storm-figures"]["output"]
    assert figures["throttled_429"] > figures["ok"] > 0, figures  # confined, not stopped
    assert apf_runs["seconds-from-storm-start-to-api-unavailable"]["output"] > 40
    [lifted] = [r for r in confined["rollbacks"] if r["activity"]["name"].startswith("lift-the")]
    assert lifted["output"]["restored"] is True, lifted
    assert "control_plane_limits" not in load_state(kind_cluster.name).extra
    admin_s = apf_runs["admin-rollback-latency-with-apf"]["output"]
    rejected = f"{figures['throttled_429']} of {figures['requests']} LISTs rejected"
    print(f"FIGURE kind storm with APF: the admin in after {admin_s} s; {rejected}")
    for name in (*ENTRIES, NOT_ON_KIND):
        print(f"FIGURE kind game day {name}: {cases[name].get('time')} s")
    print(f"FIGURE kind game day: {done.stdout.strip().splitlines()[-3]}")
