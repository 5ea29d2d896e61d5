"""Given the local fleet and the GPU self-heal controller (in this process, with its own
least-privilege identity and gates on its requests), every way it could reboot a healthy
node, strand a cordon or undo a person's cordon is shown not to happen (issue 11).

Where a scenario needs the API server to be away longer than the controller's client
retries, the test holds the one request at a gate, stops the API server with the
provider, lets the request meet the outage, and starts the API server again.
"""

from __future__ import annotations

import datetime as dt
import json
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from prometheus_client.parser import text_string_to_metric_families

from blackstart.clusters.local.kwok_nodes import node_is_ready
from blackstart.clusters.local.provider import LocalProvider
from blackstart.clusters.net import free_port
from blackstart.clusters.state import ClusterState
from blackstart.kube import api_client
from blackstart.rescue.install import apply_documents, deploy_documents, wait_established

from .conftest import eventually, repo_root
from .rescue_inprocess import (
    CONTROLLER_USER,
    GROUP,
    NOT_READY_LABEL,
    VERSION,
    api_server_outage,
    ended_plan,
    node_events,
    phases,
    plans,
    policy,
    reset_nodes,
    running_controller,
    touched_nodes,
    write_xid,
)

pytestmark = pytest.mark.e2e

CORDONED_BY = "rescue.blackstart.dev/cordoned-by"
REBOOT_REQUESTED = "rescue.blackstart.dev/reboot-requested"


@pytest.fixture(scope="module")
def admin(cluster: ClusterState) -> client.ApiClient:
    api = api_client(cluster.kubeconfig)
    documents = deploy_documents(["crds.yaml", "controller-rbac.yaml"])
    apply_documents(api, documents, progress=lambda _: None)
    crds = [d["metadata"]["name"] for d in documents if d["kind"] == "CustomResourceDefinition"]
    wait_established(api, crds)
    return api


@pytest.fixture(scope="module")
def custom(admin: client.ApiClient) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(admin)


@pytest.fixture(autouse=True)
def clean(custom: client.CustomObjectsApi, core: client.CoreV1Api) -> Iterator[None]:
    """Every test starts and ends with no plans, no policies, no Xid signal, no cordons."""
    _clean(custom, core)
    yield
    _clean(custom, core)


def _clean(custom: client.CustomObjectsApi, core: client.CoreV1Api) -> None:
    for plan in custom.list_cluster_custom_object(GROUP, VERSION, "rescueplans")["items"]:
        name = plan["metadata"]["name"]
        if plan["metadata"].get("finalizers"):  # no controller runs between tests
            custom.patch_cluster_custom_object(
                GROUP, VERSION, "rescueplans", name, {"metadata": {"finalizers": None}}
            )
    for plural in ("rescueplans", "rescuepolicies"):
        custom.delete_collection_cluster_custom_object(GROUP, VERSION, plural)
    reset_nodes(core, touched_nodes(core))


def cordoned(core: client.CoreV1Api, node: str) -> bool:
    return bool(core.read_node(node).spec.unschedulable)


def annotations(core: client.CoreV1Api, node: str) -> dict[str, str]:
    return dict(core.read_node(node).metadata.annotations or {})


CORDON_THEN_UNCORDON = {
    "priority": 10,
    "errorCode": ["62"],
    "actions": [{"name": "cordon"}, {"name": "unCordon"}],
}


def reboot_rule(waittime: str, *, uncordon: bool = True) -> dict[str, Any]:
    attribute = {"waittime": waittime}
    if uncordon:
        attribute["unCordon"] = "true"
    return {
        "priority": 10,
        "errorCode": ["62"],
        "actions": [{"name": "cordon"}, {"name": "reboot", "attribute": attribute}],
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


def test_a_persons_cordon_made_while_the_plan_is_created_is_not_undone(
    cluster: ClusterState, core: client.CoreV1Api, custom: client.CustomObjectsApi
) -> None:
    node = "gpu-3"
    policy(custom, "cordon-uncordon", CORDON_THEN_UNCORDON)

    def is_plan_create(verb: str, function: str, args: tuple[Any, ...]) -> bool:
        return function == "create_cluster_custom_object"

    with running_controller(cluster) as controller:
        gate = controller.gate(is_plan_create)
        write_xid(core, node, 62)
        gate.wait_reached(20, "the plan's creation")
        core.patch_node(node, {"spec": {"unschedulable": True}})  # kubectl cordon, meanwhile
        gate.open()
        plan = ended_plan(custom, node)
    assert plan["status"]["phase"] == "Succeeded", plan["status"]
    assert plan["status"]["nodeWasCordoned"] is True
    assert cordoned(core, node)  # before: the cordon patch took it over, the plan undid it
    assert CORDONED_BY not in annotations(core, node)


# --- 13: a waittime too long to write is refused by the API server ------------------------------


@pytest.mark.parametrize("field", ["waittime", "window"])
def test_a_waittime_longer_than_365_days_is_refused_by_the_api_server(
    custom: client.CustomObjectsApi, field: str
) -> None:
    rule: dict[str, Any] = {"priority": 10, "errorCode": ["62"]}
    if field == "waittime":
        rule["actions"] = [{"name": "drain", "attribute": {"waittime": "999999d999999d"}}]
    else:
        rule["actions"] = [{"name": "cordon"}]
        rule["threshold"] = {"count": 2, "window": "366day"}
    with pytest.raises(ApiException) as caught:
        policy(custom, "too-long", rule)
    assert caught.value.status == 422
    assert "must be at most 365day" in json.loads(caught.value.body)["message"]
    policy(
        custom,
        "just-right",
        {**rule, "actions": [{"name": "drain", "attribute": {"waittime": "365day"}}]}
        if field == "waittime"
        else {**rule, "threshold": {"count": 2, "window": "365day"}},
    )


# --- 14: of two controllers running at once, only the Lease holder acts -------------------------


@dataclass
class ControllerProcess:
    process: subprocess.Popen[bytes]
    log: Path
    port: int

    def metric(self, name: str) -> float | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as r:
                text = r.read().decode()
        except (urllib.error.URLError, ConnectionError):
            return None
        return sum(
            s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
            if s.name == name
        )

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def start_process(cluster: ClusterState, folder: Path, label: str) -> ControllerProcess:
    port = free_port()
    log = folder / f"controller-{label}.log"
    argv = [
        sys.executable, "-m", "blackstart.cli", "rescue", "controller",
        "--kubeconfig", cluster.identity_kubeconfig(CONTROLLER_USER),
        "--metrics-port", str(port), "--leader-lease-seconds", "6",
    ]  # fmt: skip
    with log.open("ab") as stream:
        process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=stream, cwd=repo_root())
    started = ControllerProcess(process, log, port)
    eventually(
        lambda: started.metric("blackstart_rescue_controller_leader") is not None,
        30,
        f"controller {label} up",
    )
    return started


def test_of_two_controllers_running_at_once_only_the_lease_holder_acts(
    cluster: ClusterState,
    core: client.CoreV1Api,
    custom: client.CustomObjectsApi,
    tmp_path: Path,
) -> None:
    policy(custom, "cordon", {"priority": 10, "errorCode": ["62"], "actions": [{"name": "cordon"}]})
    first = start_process(cluster, tmp_path, "first")
    second = None
    try:
        eventually(
            lambda: first.metric("blackstart_rescue_controller_ready") == 1, 30, "first ready"
        )
        second = start_process(cluster, tmp_path, "second")
        assert second.metric("blackstart_rescue_controller_leader") == 0  # it waits
        write_xid(core, "gpu-4", 62)
        plan = ended_plan(custom, "gpu-4")
        assert plan["status"]["phase"] == "Succeeded"
        assert second.metric("blackstart_rescue_controller_api_requests_total") == 0
        assert "RescuePlan" not in second.log.read_text() and "gpu-4" not in second.log.read_text()

        first.stop(signal.SIGKILL)  # the leader dies without giving the Lease up
        eventually(
            lambda: second.metric("blackstart_rescue_controller_ready") == 1,
            30,
            "the second controller taking over",
        )
        write_xid(core, "gpu-5", 62)
        assert ended_plan(custom, "gpu-5")["status"]["phase"] == "Succeeded"
        lease = client.CoordinationV1Api(api_client(cluster.kubeconfig)).read_namespaced_lease(
            "blackstart-rescue-controller", "default"
        )
        assert lease.spec.lease_transitions == 1
    finally:
        first.stop()
        if second is not None:
            second.stop()
    assert second.process.returncode == 0
    released = client.CoordinationV1Api(api_client(cluster.kubeconfig)).read_namespaced_lease(
        "blackstart-rescue-controller", "default"
    )
    assert released.spec.holder_identity is None  # a clean stop gives the Lease up


# --- 24: a validation gate before uncordon ------------------------------------------------------


def validated_reboot(waittime: str = "60s") -> dict[str, Any]:
    return {
        **reboot_rule(waittime),
        "validation": {"image": "nvcr.io/nvidia/cuda:12.4.1-base", "command": ["nvidia-smi"]},
    }


def validation_pod(core: client.CoreV1Api) -> client.V1Pod | None:
    pods = core.list_namespaced_pod(
        "default", label_selector="app.kubernetes.io/managed-by=blackstart-rescue"
    ).items
    return pods[0] if pods and pods[0].status.phase == "Running" else None


@pytest.mark.parametrize("result", ["Succeeded", "Failed"])
def test_after_its_reboot_a_node_returns_to_service_only_if_its_check_passes(
    cluster: ClusterState, core: client.CoreV1Api, custom: client.CustomObjectsApi, result: str
) -> None:
    node = "gpu-6" if result == "Succeeded" else "gpu-7"
    policy(custom, "validated", validated_reboot())
    with running_controller(cluster, reboot_driver="local"):
        write_xid(core, node, 62)
        pod = eventually(lambda: validation_pod(core), 60, "the check's pod Running")
        assert isinstance(pod, client.V1Pod)
        assert pod.spec.node_name == node and cordoned(core, node)  # checked while cordoned
        # the simulated fleet runs nothing: the experiment decides how the check ends
        core.patch_namespaced_pod_status(
            pod.metadata.name, "default", {"status": {"phase": result}}
        )
        plan = ended_plan(custom, node, timeout=30)
    if result == "Succeeded":
        assert plan["status"]["phase"] == "Succeeded", plan["status"]
        assert phases(plan)[-3:] == ["Validating", "Uncordoned", "Succeeded"]
        assert not cordoned(core, node)
    else:
        assert plan["status"]["phase"] == "Failed", plan["status"]
        assert "failed its check before uncordon" in plan["status"]["message"]
        assert "Uncordoned" not in phases(plan)
        assert cordoned(core, node)
        assert plan["status"]["rebootIssuedAt"]  # counts toward the reboot cap
        [event] = node_events(core, node, "RescueFailed")
        assert "failed its check" in event.message
    core.delete_namespaced_pod(pod.metadata.name, "default")


# --- 8 and 10: the drain and PodDisruptionBudgets, from the watch cache ---------------------------


def pinned_with_budget(
    apps: client.AppsV1Api, admin: client.ApiClient, namespace: str, node: str
) -> None:
    """One replica pinned to ``node`` and a budget that allows no disruption of it."""
    labels = {"app": "quorum"}
    apps.create_namespaced_deployment(
        namespace,
        {
            "metadata": {"name": "quorum"},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "nodeSelector": {"kubernetes.io/hostname": node},
                        "containers": [{"name": "c", "image": "registry.invalid/q:1"}],
                    },
                },
            },
        },
    )
    budget = client.PolicyV1Api(admin)
    budget.create_namespaced_pod_disruption_budget(
        namespace,
        {
            "metadata": {"name": "quorum"},
            "spec": {"minAvailable": 1, "selector": {"matchLabels": labels}},
        },
    )
    eventually(
        lambda: (
            (
                budget.read_namespaced_pod_disruption_budget(
                    "quorum", namespace
                ).status.current_healthy
                or 0
            )
            == 1
        ),
        60,
        "the pinned replica healthy under its budget",
    )


def drain_then_reboot(*, escalate_over_pdb: bool) -> dict[str, Any]:
    drain: dict[str, Any] = {"name": "drain", "attribute": {"waittime": "4s"}}
    if escalate_over_pdb:
        drain["attribute"]["escalateOverPdb"] = "true"
    return {
        "priority": 10,
        "errorCode": ["62"],
        "actions": [
            {"name": "cordon"},
            drain,
            {"name": "reboot", "attribute": {"waittime": "60s"}},
        ],
    }


def storage_lists_of_pods(admin: client.ApiClient) -> tuple[float, float]:
    """The API server's LISTs of pods served from etcd, and from its watch cache."""
    url = f"{admin.configuration.host}/metrics"
    text = admin.rest_client.pool_manager.request("GET", url).data.decode()
    storage = cache = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "apiserver_storage_list_total" and sample.labels.get("resource") in (
                "pods",
            ):
                storage += sample.value
            if sample.name == "apiserver_cache_list_total" and sample.labels.get(
                "resource_prefix", ""
            ).endswith("/pods"):
                cache += sample.value
    return storage, cache


def test_a_drain_that_runs_out_of_time_on_a_pdb_protected_pod_does_not_escalate_to_reboot(
    cluster: ClusterState,
    core: client.CoreV1Api,
    apps: client.AppsV1Api,
    admin: client.ApiClient,
    custom: client.CustomObjectsApi,
    namespace: str,
) -> None:
    node = "gpu-8"
    boot_before = core.read_node(node).status.node_info.boot_id
    pinned_with_budget(apps, admin, namespace, node)
    policy(custom, "drain-reboot", drain_then_reboot(escalate_over_pdb=False))
    storage_before, cache_before = storage_lists_of_pods(admin)
    with running_controller(cluster, reboot_driver="local") as controller:
        write_xid(core, node, 62)
        plan = ended_plan(custom, node, timeout=60)
        reboots = controller.metric("blackstart_rescue_controller_reboots_total")
    storage_after, cache_after = storage_lists_of_pods(admin)
    assert plan["status"]["phase"] == "Failed", plan["status"]
    assert (
        "not escalating to the reboot: a PodDisruptionBudget protects" in plan["status"]["message"]
    )
    assert f"{namespace}/quorum-" in plan["status"]["message"]
    assert reboots == 0 and "Rebooting" not in phases(plan)  # before: escalated, rebooted
    assert core.read_node(node).status.node_info.boot_id == boot_before
    assert cordoned(core, node)
    # 10: every round of the drain listed the node's pods from the watch cache, not etcd
    assert plan["status"]["evictionRetries"] >= 2
    assert storage_after == storage_before
    assert cache_after - cache_before >= plan["status"]["evictionRetries"]


def test_a_drain_may_escalate_over_pdb_protected_pods_when_the_policy_says_so(
    cluster: ClusterState,
    core: client.CoreV1Api,
    apps: client.AppsV1Api,
    admin: client.ApiClient,
    custom: client.CustomObjectsApi,
    namespace: str,
) -> None:
    node = "gpu-9"
    pinned_with_budget(apps, admin, namespace, node)
    policy(custom, "drain-reboot", drain_then_reboot(escalate_over_pdb=True))
    with running_controller(cluster, reboot_driver="local"):
        write_xid(core, node, 62)
        plan = ended_plan(custom, node, timeout=60)
    assert plan["status"]["phase"] == "Succeeded", plan["status"]
    assert "Rebooting" in phases(plan)
    [left] = plan["status"]["escalatedOverPdb"]
    assert left.startswith(f"{namespace}/quorum-")
    [event] = node_events(core, node, "DrainEscalated")
    assert "PodDisruptionBudget" in event.message and "escalateOverPdb" in event.message
