"""The Xid rollback knows how a node was before from the controller's first plan when the
injection could not read it (the API server was down when the Xid line was written)."""

from typing import Any

from blackstart.actions._xid_rollback import cordoned_before_plans, injected_reports_removed


def plan(node: str, created: str, was_cordoned: object) -> dict[str, Any]:
    status = {} if was_cordoned is None else {"nodeWasCordoned": was_cordoned}
    return {
        "metadata": {"creationTimestamp": created},
        "spec": {"nodeName": node},
        "status": status,
    }


def test_the_first_plan_of_the_node_tells_how_it_was_before() -> None:
    plans = [
        plan("gpu-5", "2026-11-30T19:21:30Z", True),  # a later plan: the node was ours then
        plan("gpu-5", "2026-11-30T19:21:19Z", False),
        plan("gpu-6", "2026-11-30T19:21:10Z", True),
    ]
    assert cordoned_before_plans(plans, "gpu-5") is False
    assert cordoned_before_plans(plans, "gpu-6") is True


def test_no_plan_or_a_plan_that_does_not_say_leaves_it_unknown() -> None:
    assert cordoned_before_plans([], "gpu-5") is None
    assert cordoned_before_plans([plan("gpu-5", "2026-11-30T19:21:19Z", None)], "gpu-5") is None
    assert cordoned_before_plans([plan("gpu-5", "2026-11-30T19:21:19Z", "no")], "gpu-5") is None


def report(xid: int, pci: str, last_seen: str) -> dict[str, Any]:
    return {"id": f"boot:{xid}", "xid": xid, "pci": pci, "lastSeen": last_seen}


def test_the_rollback_takes_out_the_xids_its_injections_made_and_no_other() -> None:
    injection = {"xid": 62, "pci": "0000:03:00", "written_at": "2026-11-30T19:42:13Z"}
    injected = report(62, "0000:03:00", "2026-11-30T19:42:13.6Z")
    older = report(62, "0000:03:00", "2026-11-30T18:00:00Z")  # seen before this run
    other_gpu = report(62, "0000:41:00", "2026-11-30T19:42:14Z")
    other_xid = report(79, "0000:03:00", "2026-11-30T19:42:14Z")
    reports = [injected, older, other_gpu, other_xid]
    assert injected_reports_removed(reports, [injection]) == [older, other_gpu, other_xid]
    assert injected_reports_removed(reports, []) == reports


def test_a_standby_on_kind_gets_back_the_labels_of_its_spec_node_by_its_kind_name() -> None:
    from pathlib import Path

    from blackstart.actions._xid_rollback import _spec_labels
    from blackstart.clusters.state import ClusterState
    from blackstart.names import STANDBY_LABEL
    from blackstart.target import Target

    spec = Path(__file__).resolve().parents[2] / "clusters" / "kind-gpu.yaml"
    node_map = {"gpu-0": "gd-worker", "gpu-1": "gd-worker2", "cpu-0": "gd-worker3"}
    node_map["standby-0"] = "gd-worker4"
    state = ClusterState(
        name="gd",
        provider="kind",
        state_dir="/nonexistent",
        spec_path=str(spec),
        kubeconfig="",
        context="kind-gd",
        extra={"node_map": node_map},
    )
    labels = _spec_labels(Target(provider="kind", kubeconfig=None, context=None, state=state))
    # the rollback reads Nodes by their names; a spec name would never match one
    assert set(labels) == set(node_map.values())
    assert labels["gd-worker4"][STANDBY_LABEL] == "true"
    assert "nvidia.com/gpu.present" in labels["gd-worker4"]
