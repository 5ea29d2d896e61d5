"""On kind the telemetry service is what it was in the incident: its DaemonSet's pods,
one per node, make the cluster-wide LISTs themselves, as a non-admin ServiceAccount;
deleting the DaemonSet (the rollback) ends the calls."""

from __future__ import annotations

import subprocess
import time
from typing import Any

import pytest
from chaoslib.exceptions import ActivityFailed
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from blackstart.actions import rollout
from blackstart.actions._telemetry_pods import FIGURES_DIR, IMAGE_KEY, SERVICE_ACCOUNT, STAGE_LABEL
from blackstart.clusters.kind_provider import KindProvider
from blackstart.clusters.spec import ControlPlaneSize, host_resources
from blackstart.clusters.state import ClusterState, load_state
from blackstart.kube import api_client
from blackstart.probes.lockout import control_plane_restarts, control_plane_usage
from blackstart.probes.telemetry_storm import telemetry_storm_figures
from blackstart.rescue.image import RescueImage

from .conftest import eventually

pytestmark = pytest.mark.kind

IDENTITY = f"system:serviceaccount:{rollout.NAMESPACE}:{SERVICE_ACCOUNT}"


def _allowed(kind_cluster: ClusterState, verb: str, resource: str, group: str = "") -> bool:
    review = {
        "spec": {
            "user": IDENTITY,
            "groups": ["system:serviceaccounts", f"system:serviceaccounts:{rollout.NAMESPACE}"],
            "resourceAttributes": {"verb": verb, "resource": resource, "group": group},
        }
    }
    api = client.AuthorizationV1Api(api_client(kind_cluster.kubeconfig))
    answer = api.create_subject_access_review(review)  # type: ignore[arg-type]
    return bool(answer.status and answer.status.allowed)


def _daemonset_exists(apps: client.AppsV1Api) -> bool:
    try:
        apps.read_namespaced_daemon_set(rollout.DAEMONSET, rollout.NAMESPACE)
        return True
    except ApiException as err:
        if err.status == 404:
            return False
        raise


def test_the_control_plane_node_container_takes_the_size_it_is_given(
    kind: KindProvider, kind_cluster: ClusterState
) -> None:
    # what `spec.controlPlane` does at `cluster up`; generous here, so the cluster is as
    # usable as before (bench/kind_storm.py gives it 1 GiB and a storm collapses it)
    node = f"{kind_cluster.name}-control-plane"

    def limits() -> list[str]:
        template = "{{.HostConfig.Memory}} {{.HostConfig.NanoCpus}}"
        argv = ["docker", "inspect", "-f", template, node]
        return subprocess.run(argv, capture_output=True, text=True, check=True).stdout.split()

    kind.limit_control_plane(kind_cluster.name, ControlPlaneSize(cpus=1.5, memory=6 << 30))
    try:
        assert limits() == [str(6 << 30), str(1_500_000_000)]
        assert load_state(kind_cluster.name).extra["control_plane_limits"] == {
            "cpus": 1.5,
            "memory": 6 << 30,
        }
        # what the storm experiments read: the node container's cgroup, kubelet's restarts
        configuration = {"blackstart_cluster": kind_cluster.name}
        used = control_plane_usage(configuration=configuration)
        print(f"kind control plane usage: {used}")
        assert used["size"] == {"cpus": 1.5, "memory": 6 << 30}
        assert used["usage"]["memory_limit_bytes"] == 6 << 30
        assert used["usage"]["cpu_quota"] == 1.5
        assert 100 << 20 < used["usage"]["memory_bytes"] < 6 << 30  # etcd, API server, ...
        assert used["usage"]["cpu_seconds"] > 1.0
        assert set(used["components"]) == {
            "etcd",
            "kube-apiserver",
            "kube-controller-manager",
            "kube-scheduler",
        }
        assert (
            control_plane_restarts(configuration=configuration)
            == (used["components"]["kube-apiserver"]["restarts"])
        )
    finally:
        cores, memory = host_resources()
        kind.limit_control_plane(kind_cluster.name, ControlPlaneSize(cpus=cores, memory=memory))
    assert limits() == [str(memory), str(cores * 1_000_000_000)]


def test_the_telemetry_pods_make_the_calls_as_their_own_identity_and_stop_when_deleted(
    kind: KindProvider,
    kind_cluster: ClusterState,
    images: dict[str, RescueImage],
    apps: client.AppsV1Api,
    core: client.CoreV1Api,
) -> None:
    configuration = {"blackstart_cluster": kind_cluster.name}
    # every node but the control plane's
    nodes = len(core.list_node(label_selector="!node-role.kubernetes.io/control-plane").items)
    assert nodes == len(core.list_node().items) - 1

    # bad input is refused before anything is created, naming what was wrong
    with pytest.raises(ActivityFailed, match="rate_per_client must be a number from"):
        rollout.deploy_telemetry_service(rate_per_client=50, configuration=configuration)
    assert not _daemonset_exists(apps)
    # an image the nodes do not have: named, the DaemonSet removed, nothing pulled from
    # outside (kind's pods never pull)
    with pytest.raises(ActivityFailed, match="ErrImageNeverPull for image blackstart/absent"):
        rollout.deploy_telemetry_service(
            duration_s=30,
            ready_timeout_s=60,
            configuration={**configuration, IMAGE_KEY: "blackstart/absent:0"},
        )
    eventually(lambda: not _daemonset_exists(apps), 30, "the failed roll-out's DaemonSet gone")

    try:
        started = time.monotonic()
        deployed = rollout.deploy_telemetry_service(
            duration_s=120,
            rate_per_client=2.0,
            resources=["pods", "nodes"],
            configuration=configuration,
        )
        print(f"telemetry pods running {time.monotonic() - started:.1f} s after the roll-out began")
        assert deployed["where"] == "pods"
        assert deployed["pods"] == nodes  # every taint tolerated: the standby's cordon too
        assert deployed["identity"] == IDENTITY
        # the identity lists what the agents list, and may do nothing else
        assert _allowed(kind_cluster, "list", "pods")
        assert _allowed(kind_cluster, "list", "nodes")
        assert not _allowed(kind_cluster, "delete", "pods")
        assert not _allowed(kind_cluster, "list", "secrets")
        assert not _allowed(kind_cluster, "delete", "daemonsets", "apps")

        def every_pod_calling() -> dict[str, Any]:
            figures = telemetry_storm_figures(configuration=configuration)
            ok = figures["pods_reporting"] == nodes and figures["ok"] >= 2 * nodes
            return figures if ok else {}

        figures: dict[str, Any] = eventually(
            every_pod_calling, 60, "every telemetry pod's LISTs answered"
        )
        print(f"telemetry pods' figures while they run: {figures}")
        assert figures["state"] == "running"
        assert figures["errors"] == 0 and figures["throttled_429"] == 0, figures["error_kinds"]
        assert figures["bytes_read"] > 0
    except BaseException:  # leave no telemetry service for the next test
        rollout.remove_telemetry_service(timeout_s=60, configuration=configuration)
        raise
    removed = rollout.remove_telemetry_service(timeout_s=60, configuration=configuration)
    print(f"removed: {removed['outcome']} in {removed['seconds_until_deleted']} s")
    assert removed["outcome"] == "deleted"
    assert removed["failed_tries"] == 0
    after = removed["storm"]
    assert after["state"] == "stopped" and after["requests"] >= figures["requests"]
    assert not core.list_namespaced_pod(rollout.NAMESPACE).items
    # the calls ended with the pods: the files on the nodes stop growing
    path = f"{FIGURES_DIR}/{deployed['storm_id']}.json"
    before = kind.read_node_files(kind_cluster.name, path)
    assert len(before) == nodes
    time.sleep(3)
    assert kind.read_node_files(kind_cluster.name, path) == before
    rbac = client.RbacAuthorizationV1Api(api_client(kind_cluster.kubeconfig))
    with pytest.raises(ApiException) as gone:
        rbac.read_cluster_role("blackstart:telemetry-agent")
    assert gone.value.status == 404


def _staged(core: client.CoreV1Api) -> list[str]:
    labelled = core.list_node(label_selector=STAGE_LABEL).items
    return sorted(str(n.metadata.name) for n in labelled)


def test_the_staged_roll_out_labels_its_share_of_nodes_stage_by_stage_and_the_rollback_unlabels(
    kind_cluster: ClusterState,
    images: dict[str, RescueImage],
    apps: client.AppsV1Api,
    core: client.CoreV1Api,
) -> None:
    configuration = {"blackstart_cluster": kind_cluster.name}
    order = sorted(
        str(n.metadata.name)
        for n in core.list_node(label_selector="!node-role.kubernetes.io/control-plane").items
    )
    assert len(order) == 4
    try:
        result = rollout.roll_out_telemetry_service(
            stages=[25, 50, 100],
            hold_s=3,
            check_every_s=1,
            max_p99_s=5.0,
            duration_s=120,
            configuration=configuration,
        )
        print(f"staged roll-out on kind: {result['reason']}; stages {result['stages']}")
        assert result["where"] == "pods"
        assert result["completed"], result["reason"]
        assert [s["pods"] for s in result["stages"]] == [1, 2, 4]
        assert all(s["healthy"] and s["p99_s"] < 5.0 for s in result["stages"])
        assert _staged(core) == order
        running = core.list_namespaced_pod(
            rollout.NAMESPACE, field_selector="status.phase=Running"
        ).items
        assert sorted(str(p.spec.node_name) for p in running) == order
    finally:
        removed = rollout.remove_telemetry_service(timeout_s=60, configuration=configuration)
    assert removed["outcome"] == "deleted"
    assert removed["storm"]["pods_reporting"] == 4
    assert _staged(core) == []
    assert not _daemonset_exists(apps)


def test_a_stage_that_is_not_running_in_time_halts_the_roll_out_with_no_node_left_in_it(
    kind_cluster: ClusterState,
    images: dict[str, RescueImage],
    apps: client.AppsV1Api,
    core: client.CoreV1Api,
) -> None:
    # the halt as the guard does it, made certain: the first stage's pod cannot run within
    # a second, so that stage counts as unhealthy and the roll-out goes back to no node
    configuration = {"blackstart_cluster": kind_cluster.name}
    try:
        result = rollout.roll_out_telemetry_service(
            stages=[50, 100], hold_s=3, ready_timeout_s=1, configuration=configuration
        )
        assert not result["completed"]
        assert result["stopped_at_percent"] == 50
        assert result["kept_pods"] == 0
        assert "telemetry pods running after 1 s" in result["reason"]
        assert _staged(core) == []  # the halt took the label off: its pod goes
        eventually(
            lambda: not core.list_namespaced_pod(rollout.NAMESPACE).items,
            60,
            "the halted stage's pods gone",
        )
        assert _daemonset_exists(apps)  # halted, not rolled back: that is the rollback's
    finally:
        removed = rollout.remove_telemetry_service(timeout_s=60, configuration=configuration)
    assert removed["outcome"] == "deleted"
    assert not _daemonset_exists(apps)
