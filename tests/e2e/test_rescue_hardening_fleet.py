"""Given the local fleet and the GPU self-heal controller, the fleet-wide hardening of
issue 11: bounded waittimes (13), one acting controller of two (14), a validation
gate before uncordon (24), a drain that never escalates over PodDisruptionBudgets
unless told and lists pods from the watch cache (8, 10).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from prometheus_client.parser import text_string_to_metric_families

from blackstart.clusters.local.provider import LocalProvider
from blackstart.clusters.net import free_port
from blackstart.clusters.state import ClusterState
from blackstart.kube import api_client

from . import rescue_inprocess as shared
from .conftest import controllers_back_after_an_outage, eventually, repo_root
from .rescue_inprocess import (
    CONTROLLER_USER,
    api_server_outage,
    cordoned,
    ended_plan,
    node_events,
    phases,
    policy,
    reboot_rule,
    running_controller,
    write_xid,
)

pytestmark = pytest.mark.e2e

# the shared fixtures: the CRDs installed (admin, custom), every test clean (autouse)
admin = shared.admin
custom = shared.custom
clean = shared.clean


# --- 13: a waittime too long to write is refused by the API server ------------------------------


@pytest.mark.parametrize("field", ["waittime", "window"])
def test_a_waittime_longer_than_365_days_is_refused_by_the_api_server(
    custom: client.CustomObjectsApi, field: str
) -> None:
    def rule(text: str) -> dict[str, Any]:
        if field == "waittime":
            return {
                "priority": 10,
                "errorCode": ["62"],
                "actions": [{"name": "drain", "attribute": {"waittime": text}}],
            }
        return {
            "priority": 10,
            "errorCode": ["62"],
            "actions": [{"name": "cordon"}],
            "threshold": {"count": 2, "window": text},
        }

    # fits the pattern and the length; before the bound it broke the controller's intake
    with pytest.raises(ApiException) as caught:
        policy(custom, "too-long", rule("999999d999999d"))
    assert caught.value.status == 422
    assert "must be at most 365day" in json.loads(caught.value.body)["message"]
    policy(custom, "just-right", rule("365day"))


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

    def samples(self, name: str) -> list[tuple[dict[str, str], float]]:
        """Every sample of ``name`` with its labels (the metrics endpoint must answer)."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as r:
            text = r.read().decode()
        return [
            (dict(s.labels), s.value)
            for family in text_string_to_metric_families(text)
            for s in family.samples
            if s.name == name
        ]

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


def first_requests(controller: ControllerProcess, verb: str) -> float:
    return sum(
        value
        for labels, value in controller.samples("blackstart_rescue_controller_api_requests_total")
        if labels["verb"] == verb
    )


def test_of_two_controllers_running_at_once_only_the_lease_holder_acts(
    cluster: ClusterState,
    core: client.CoreV1Api,
    custom: client.CustomObjectsApi,
    tmp_path: Path,
) -> None:
    policy(custom, "cordon", {"priority": 10, "errorCode": ["62"], "actions": [{"name": "cordon"}]})
    coordination = client.CoordinationV1Api(api_client(cluster.kubeconfig))
    try:  # earlier tests' controllers may have held and handed over the Lease already
        before = coordination.read_namespaced_lease("blackstart-rescue-controller", "default")
        # the first's start takes it over (+1), then the second's takeover (+1)
        transitions_expected = (before.spec.lease_transitions or 0) + 2
    except ApiException as err:
        assert err.status == 404
        transitions_expected = 1  # created by the first (0), taken over by the second
    first = start_process(cluster, tmp_path, "first")
    second = None
    try:
        eventually(
            lambda: first.metric("blackstart_rescue_controller_ready") == 1, 30, "first ready"
        )
        # holding the Lease costs one write per renewal (2 s), no read: the idle leader's
        # requests are Lease renewals only (before: a GET and a PUT each time)
        gets, updates = first_requests(first, "get"), first_requests(first, "update")
        time.sleep(7)
        assert first_requests(first, "get") == gets
        assert first_requests(first, "update") - updates >= 3
        second = start_process(cluster, tmp_path, "second")
        assert second.metric("blackstart_rescue_controller_leader") == 0  # it waits
        write_xid(core, "gpu-4", 62)
        plan = ended_plan(custom, "gpu-4")
        assert plan["status"]["phase"] == "Succeeded"
        # the standby only reads the Lease (verb get): no list, no write, nothing acted on.
        # Its first read may come after the plan ended (the cordon takes well under a
        # second now): wait for it, every 2 s
        requests = eventually(
            lambda: second.samples("blackstart_rescue_controller_api_requests_total"),
            10,
            "the standby's first read of the Lease",
        )
        assert isinstance(requests, list)
        assert requests and {labels["verb"] for labels, _ in requests} == {"get"}, requests
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
        assert lease.spec.lease_transitions == transitions_expected
    finally:
        first.stop()
        if second is not None:
            second.stop()
    assert second.process.returncode == 0
    released = client.CoordinationV1Api(api_client(cluster.kubeconfig)).read_namespaced_lease(
        "blackstart-rescue-controller", "default"
    )
    assert released.spec.holder_identity is None  # a clean stop gives the Lease up


def test_a_controller_that_lost_its_lease_in_an_outage_acts_again_once_the_api_server_is_back(
    cluster: ClusterState,
    core: client.CoreV1Api,
    custom: client.CustomObjectsApi,
    local: LocalProvider,
    tmp_path: Path,
) -> None:
    # the Lease (6 s) cannot be renewed for 4 s while kube-apiserver is down: the controller
    # stops acting; it used to exit there, and a supervisor's back-off (kubelet's, on a real
    # cluster) then kept it away for minutes after the API server was back
    policy(custom, "cordon", {"priority": 10, "errorCode": ["62"], "actions": [{"name": "cordon"}]})
    controller = start_process(cluster, tmp_path, "outage")
    try:
        eventually(
            lambda: controller.metric("blackstart_rescue_controller_ready") == 1, 30, "ready"
        )
        back = api_server_outage(local, cluster)
        eventually(
            lambda: "waiting for the Lease again" in controller.log.read_text(),
            30,
            "the controller to stop acting on its lost Lease",
        )
        back()
        controllers_back_after_an_outage(cluster, local)
        assert controller.process.poll() is None, controller.log.read_text()[-3000:]
        eventually(
            lambda: controller.metric("blackstart_rescue_controller_leader") == 1,
            30,
            "the Lease held again",
        )
        write_xid(core, "gpu-6", 62)
        assert ended_plan(custom, "gpu-6")["status"]["phase"] == "Succeeded"
        assert cordoned(core, "gpu-6")
    finally:
        controller.stop()
    assert controller.process.returncode == 0


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
