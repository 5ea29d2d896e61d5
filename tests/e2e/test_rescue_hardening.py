"""Given the local fleet and the GPU self-heal controller (in this process, with its own
least-privilege identity and gates on its requests), every way it could reboot a healthy
node, strand a cordon or undo a person's cordon is shown not to happen (issue 11,
scenarios 1 to 7).

Where a scenario needs the API server to be away longer than the controller's client
retries, the test holds the one request at a gate, stops the API server with the
provider, lets the request meet the outage, and starts the API server again.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from kubernetes import client

from blackstart.clusters.local.kwok_nodes import node_is_ready
from blackstart.clusters.local.provider import LocalProvider
from blackstart.clusters.state import ClusterState

from . import rescue_inprocess as shared
from .conftest import eventually
from .rescue_inprocess import (
    GROUP,
    NOT_READY_LABEL,
    VERSION,
    annotations,
    api_server_outage,
    cordoned,
    ended_plan,
    node_events,
    phases,
    plans,
    policy,
    reboot_rule,
    running_controller,
    write_xid,
)

pytestmark = pytest.mark.e2e

CORDONED_BY = "rescue.blackstart.dev/cordoned-by"
REBOOT_REQUESTED = "rescue.blackstart.dev/reboot-requested"


# the shared fixtures: the CRDs installed (admin, custom), every test clean (autouse)
admin = shared.admin
custom = shared.custom
clean = shared.clean

CORDON_THEN_UNCORDON = {
    "priority": 10,
    "errorCode": ["62"],
    "actions": [{"name": "cordon"}, {"name": "unCordon"}],
}


def is_uncordon(verb: str, function: str, args: tuple[Any, ...]) -> bool:
    if function != "patch_node":
        return False
    if isinstance(args[1], list):  # the conditional JSON patch
        return any(op.get("path") == "/spec/unschedulable" for op in args[1])
    return "unschedulable" in (args[1].get("spec") or {}) and not args[1]["spec"]["unschedulable"]


# --- 1: a step is recorded only once it took effect ------------------------------------------


def test_an_uncordon_lost_to_an_api_server_outage_is_tried_again_not_recorded_as_done(
    cluster: ClusterState,
    local: LocalProvider,
    core: client.CoreV1Api,
    custom: client.CustomObjectsApi,
) -> None:
    node = "gpu-40"
    policy(custom, "cordon-uncordon", CORDON_THEN_UNCORDON)
    with running_controller(cluster, retry_for=1.0) as controller:
        gate = controller.gate(is_uncordon)
        write_xid(core, node, 62)
        gate.wait_reached(30, f"the uncordon of {node}")
        back = api_server_outage(local, cluster)
        try:
            gate.open()
            gate.wait_failed(60, "the uncordon, with the API server stopped")
        finally:
            back()
        plan = ended_plan(custom, node, timeout=120)
    assert plan["status"]["phase"] == "Succeeded", plan["status"]
    assert "unCordon" in plan["status"]["completedSteps"]
    assert not cordoned(core, node)  # before: Succeeded, with the node still cordoned
    assert CORDONED_BY not in annotations(core, node)


# --- 2: only a new boot ID proves a reboot; no Xid from the new boot before uncordon ---------


def test_a_ready_flap_under_the_same_boot_id_is_not_taken_for_the_reboot(
    cluster: ClusterState,
    local: LocalProvider,
    core: client.CoreV1Api,
    custom: client.CustomObjectsApi,
) -> None:
    node = "gpu-41"
    policy(custom, "reboot", reboot_rule("8s"))
    with running_controller(cluster, reboot_driver="annotation"):
        write_xid(core, node, 62)
        eventually(lambda: REBOOT_REQUESTED in annotations(core, node), 20, "the reboot request")
        # a kubelet restart, not a reboot: NotReady, then Ready, under the same boot ID
        local.mark_node_not_ready(cluster.name, node)
        eventually(lambda: not node_is_ready(core.read_node(node)), 20, f"{node} NotReady")
        local.mark_node_ready(cluster.name, node, new_boot_id=False)
        eventually(lambda: node_is_ready(core.read_node(node)), 20, f"{node} Ready again")
        # KWOK keeps the node's creation time as every condition's lastTransitionTime; a
        # kubelet reports the flap's time, as here
        now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        ready = {
            "type": "Ready",
            "status": "True",
            "reason": "KubeletReady",
            "message": "kubelet is posting ready status",
            "lastHeartbeatTime": now,
            "lastTransitionTime": now,
        }
        core.patch_node_status(node, {"status": {"conditions": [ready]}})
        plan = ended_plan(custom, node, timeout=30)
    assert plan["status"]["phase"] == "Failed", plan["status"]
    assert "under a new boot ID" in plan["status"]["message"]
    assert cordoned(core, node)  # before: uncordoned on the Ready flap, GPU still dead


def test_a_node_that_reports_an_xid_from_its_new_boot_stays_cordoned(
    cluster: ClusterState, core: client.CoreV1Api, custom: client.CustomObjectsApi
) -> None:
    node = "gpu-42"
    policy(custom, "reboot", reboot_rule("30s"))
    with running_controller(cluster, reboot_driver="annotation"):
        write_xid(core, node, 62)
        eventually(lambda: REBOOT_REQUESTED in annotations(core, node), 20, "the reboot request")
        # the host reboots (a new boot ID) and its GPU fails again at once
        new_boot = "b0b0b0b0-0000-4000-8000-000000000042"
        write_xid(core, node, 79, report_id=f"{new_boot}:17")
        core.patch_node_status(node, {"status": {"nodeInfo": {"bootID": new_boot}}})
        plan = ended_plan(custom, node, timeout=30)
    assert plan["status"]["phase"] == "Failed", plan["status"]
    assert "reported Xid 79 after its reboot" in plan["status"]["message"]
    assert cordoned(core, node)


# --- 3: a failed reboot order is ordered again, not waited out --------------------------------


def test_a_reboot_order_lost_to_an_api_server_outage_is_ordered_again(
    cluster: ClusterState,
    local: LocalProvider,
    core: client.CoreV1Api,
    custom: client.CustomObjectsApi,
) -> None:
    node = "gpu-43"
    boot_before = core.read_node(node).status.node_info.boot_id
    policy(custom, "reboot", reboot_rule("50s"))

    def is_reboot_order(verb: str, function: str, args: tuple[Any, ...]) -> bool:
        if function != "patch_node" or not isinstance(args[1], dict):
            return False
        return (args[1].get("metadata") or {}).get("labels", {}).get(NOT_READY_LABEL) == "true"

    with running_controller(cluster, retry_for=1.0, reboot_driver="local") as controller:
        gate = controller.gate(is_reboot_order)
        write_xid(core, node, 62)
        gate.wait_reached(30, f"the reboot order for {node}")
        back = api_server_outage(local, cluster)
        try:
            gate.open()
            gate.wait_failed(60, "the reboot order, with the API server stopped")
        finally:
            back()
        plan = ended_plan(custom, node, timeout=90)
        reboots = controller.metric("blackstart_rescue_controller_reboots_total")
    assert plan["status"]["phase"] == "Succeeded", plan["status"]  # before: Failed, never rebooted
    assert plan["status"]["rebootOrderedAt"] >= plan["status"]["rebootIssuedAt"]
    assert core.read_node(node).status.node_info.boot_id != boot_before
    assert reboots == 1
    assert not cordoned(core, node)


# --- 4: the reboot request is taken back whatever way the plan ends ---------------------------


def test_a_failed_plan_takes_back_its_reboot_request(
    cluster: ClusterState, core: client.CoreV1Api, custom: client.CustomObjectsApi
) -> None:
    node = "gpu-44"
    policy(custom, "reboot", reboot_rule("3s"))
    with running_controller(cluster, reboot_driver="annotation"):
        write_xid(core, node, 62)
        eventually(lambda: REBOOT_REQUESTED in annotations(core, node), 20, "the reboot request")
        plan = ended_plan(custom, node, timeout=30)  # nobody reboots it: the waittime ends
        assert plan["status"]["phase"] == "Failed", plan["status"]
        eventually(
            lambda: REBOOT_REQUESTED not in annotations(core, node),
            10,
            "the reboot request taken back",
            0.1,
        )
    assert cordoned(core, node)  # for a person to look at


# --- 5: plans made by someone else go through the same gate ------------------------------------


def foreign_plan(custom: client.CustomObjectsApi, name: str, node: str, **spec: Any) -> None:
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "RescuePlan",
        "metadata": {
            "name": name,
            # a lie the controller must not believe: it reads the node itself
            "annotations": {"rescue.blackstart.dev/node-was-cordoned": "false"},
        },
        "spec": {
            "nodeName": node,
            "xids": [62],
            "source": "policy",
            "actions": [{"name": "cordon"}],
            **spec,
        },
    }
    custom.create_cluster_custom_object(GROUP, VERSION, "rescueplans", body)


def plan_named(custom: client.CustomObjectsApi, name: str) -> dict[str, Any]:
    result: dict[str, Any] = custom.get_cluster_custom_object(GROUP, VERSION, "rescueplans", name)
    return result


def phase_of(custom: client.CustomObjectsApi, name: str) -> str:
    return str(plan_named(custom, name).get("status", {}).get("phase", ""))


def test_a_plan_made_by_someone_else_goes_through_the_storm_guard_and_one_plan_per_node(
    cluster: ClusterState, core: client.CoreV1Api, custom: client.CustomObjectsApi
) -> None:
    busy, other = "gpu-45", "gpu-46"
    policy(custom, "reboot", reboot_rule("2min"))
    with running_controller(cluster, reboot_driver="annotation", storm_guard=_guard(1)):
        write_xid(core, busy, 62)  # the controller's own plan, waiting for a reboot
        eventually(lambda: REBOOT_REQUESTED in annotations(core, busy), 20, "the reboot request")
        foreign_plan(custom, "by-hand-same-node", busy)
        foreign_plan(custom, "by-hand-other-node", other)
        eventually(lambda: phase_of(custom, "by-hand-same-node") == "Refused", 20, "refused")
        eventually(lambda: phase_of(custom, "by-hand-other-node") == "Refused", 20, "refused")
        same = plan_named(custom, "by-hand-same-node")["status"]["message"]
        full = plan_named(custom, "by-hand-other-node")["status"]["message"]
    assert "still running on gpu-45: one plan per node" in same
    assert "storm guard" in full and "1 plans are running, the maximum is 1" in full
    assert not cordoned(core, other)  # before: both ran, unchecked


def test_a_plan_made_by_someone_else_runs_when_the_gate_lets_it_and_reads_the_node_itself(
    cluster: ClusterState, core: client.CoreV1Api, custom: client.CustomObjectsApi
) -> None:
    node = "gpu-47"
    core.patch_node(node, {"spec": {"unschedulable": True}})  # a person's cordon
    with running_controller(cluster):
        foreign_plan(
            custom,
            "by-hand",
            node,
            actions=[{"name": "cordon"}, {"name": "unCordon"}],
        )
        eventually(lambda: phase_of(custom, "by-hand") == "Succeeded", 20, "the plan done")
        plan = plan_named(custom, "by-hand")
    assert plan["status"]["nodeWasCordoned"] is True  # not the annotation's "false"
    assert cordoned(core, node)  # the person's cordon stays
    assert "rescue.blackstart.dev/release-node" in plan["metadata"]["finalizers"]


def test_in_decision_api_mode_a_plan_made_by_someone_else_is_refused(
    cluster: ClusterState, core: client.CoreV1Api, custom: client.CustomObjectsApi
) -> None:
    with running_controller(cluster, decision_api=True):
        foreign_plan(custom, "by-hand", "gpu-0")
        eventually(lambda: phase_of(custom, "by-hand") == "Refused", 20, "refused")
        message = plan_named(custom, "by-hand")["status"]["message"]
    assert "decision API only" in message
    assert not cordoned(core, "gpu-0")


def _guard(max_plans: int) -> Any:
    from blackstart.rescue.controller.storm_guard import StormGuard

    return StormGuard(max_concurrent_plans=max_plans, max_unavailable_share=1.0)


# --- 6: deleting a running plan releases its node ----------------------------------------------


def test_deleting_a_running_plan_uncordons_its_node_and_takes_back_the_reboot_request(
    cluster: ClusterState, core: client.CoreV1Api, custom: client.CustomObjectsApi
) -> None:
    node = "gpu-1"
    policy(custom, "reboot", reboot_rule("5min"))
    with running_controller(cluster, reboot_driver="annotation") as controller:
        write_xid(core, node, 62)
        eventually(lambda: REBOOT_REQUESTED in annotations(core, node), 20, "the reboot request")
        [plan] = plans(custom, node)
        custom.delete_cluster_custom_object(GROUP, VERSION, "rescueplans", plan["metadata"]["name"])
        eventually(lambda: plans(custom, node) == [], 20, "the plan gone")
        held = [n for n in controller.controller.nodes.values() if controller.controller._held(n)]
    assert not cordoned(core, node)  # before: cordoned, annotated and held for ever
    assert not {CORDONED_BY, REBOOT_REQUESTED} & set(annotations(core, node))
    assert held == []
    [event] = node_events(core, node, "RescueAborted")
    assert "was deleted while it ran" in event.message


# --- 7: a person's cordon is never undone ------------------------------------------------------


def test_a_cordon_a_failed_plan_left_for_a_person_is_not_undone_by_the_next_plan(
    cluster: ClusterState, core: client.CoreV1Api, custom: client.CustomObjectsApi
) -> None:
    node = "gpu-2"
    # what a Failed plan leaves: the node cordoned, marked with the ended plan's name
    core.patch_node(
        node,
        {
            "metadata": {"annotations": {CORDONED_BY: "gpu-2-xid-0123456789ab"}},
            "spec": {"unschedulable": True},
        },
    )
    policy(custom, "cordon-uncordon", CORDON_THEN_UNCORDON)
    with running_controller(cluster):
        write_xid(core, node, 62)
        plan = ended_plan(custom, node)
    assert plan["status"]["phase"] == "Succeeded", plan["status"]
    assert plan["status"]["nodeWasCordoned"] is True
    assert "Uncordoned" not in phases(plan)
    assert cordoned(core, node)  # before: the next plan took the cordon for its own


def is_cordon(verb: str, function: str, args: tuple[Any, ...]) -> bool:
    return (
        function == "patch_node"
        and isinstance(args[1], dict)
        and bool((args[1].get("spec") or {}).get("unschedulable"))
    )


def test_a_persons_cordon_made_just_before_the_controllers_is_not_undone(
    cluster: ClusterState, core: client.CoreV1Api, custom: client.CustomObjectsApi
) -> None:
    node = "gpu-3"
    policy(custom, "cordon-uncordon", CORDON_THEN_UNCORDON)
    with running_controller(cluster) as controller:
        # the cordon goes first, before the plan is made: hold it once it was decided
        gate = controller.gate(is_cordon)
        write_xid(core, node, 62)
        gate.wait_reached(20, "the cordon")
        core.patch_node(node, {"spec": {"unschedulable": True}})  # kubectl cordon, meanwhile
        gate.open()
        plan = ended_plan(custom, node)
    assert plan["status"]["phase"] == "Succeeded", plan["status"]
    assert plan["status"]["nodeWasCordoned"] is True
    assert cordoned(core, node)  # before: the cordon patch took it over, the plan undid it
    assert CORDONED_BY not in annotations(core, node)


def test_a_controller_that_dies_between_its_cordon_and_the_plan_makes_the_plan_once_on_restart(
    cluster: ClusterState, core: client.CoreV1Api, custom: client.CustomObjectsApi
) -> None:
    """The cordon goes out before the plan is created (issue 14): a controller killed in
    between leaves the node cordoned in the plan's name and no plan. The next controller
    makes that plan, once, takes the cordon for the plan's own and later uncordons."""
    node = "gpu-4"
    policy(custom, "cordon-uncordon", CORDON_THEN_UNCORDON)

    def is_plan_create(verb: str, function: str, args: tuple[Any, ...]) -> bool:
        return function == "create_cluster_custom_object"

    first = shared.InProcessController(
        cluster, shared.ControllerConfig(drain_retry_seconds=0.5), retry_for=1.0
    ).start()
    try:
        gate = first.gate(is_plan_create)
        write_xid(core, node, 62)
        gate.wait_reached(20, "the plan's creation")
        assert cordoned(core, node)  # the cordon went first
        mark = annotations(core, node)[CORDONED_BY]
    finally:
        first.stop(open_gates=False)  # dies with the plan never created
    assert plans(custom, node) == []
    with running_controller(cluster):
        plan = ended_plan(custom, node)
    assert [p["metadata"]["name"] for p in plans(custom, node)] == [mark]
    assert plan["status"]["phase"] == "Succeeded", plan["status"]
    # before: the restarted controller took its own cordon for a person's and kept it
    assert plan["status"]["nodeWasCordoned"] is False
    assert "Uncordoned" in phases(plan)
    assert not cordoned(core, node)
