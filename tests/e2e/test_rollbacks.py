"""Given the local fleet: a rollback restores the cluster as it was, never less, never more
(issue 11, scenario 22). A policy or APF object an admin had is put back, not deleted; a
node an admin cordoned stays cordoned; a rollback run by another process still finds what
the action did."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest
from kubernetes import client

from blackstart.actions import apf, rescue_policy, xid
from blackstart.clusters.state import ClusterState
from blackstart.kube import api_client
from blackstart.names import ORIGINAL_ANNOTATION, RESCUE_GROUP, RESCUE_VERSION
from blackstart.rescue.install import apply_documents, deploy_documents, wait_established

from .conftest import repo_root

pytestmark = pytest.mark.e2e

RULE = {"priority": 5, "errorCode": ["48"], "actions": [{"name": "cordon"}]}


@pytest.fixture(scope="module")
def custom(cluster: ClusterState) -> client.CustomObjectsApi:
    api = api_client(cluster.kubeconfig)
    documents = deploy_documents(["crds.yaml"])
    apply_documents(api, documents, progress=lambda _: None)
    wait_established(api, [d["metadata"]["name"] for d in documents])
    return client.CustomObjectsApi(api)


@pytest.fixture
def configuration(cluster: ClusterState) -> dict[str, Any]:
    return {"blackstart_cluster": cluster.name}


def test_an_admins_rescue_policy_replaced_by_an_experiment_is_put_back_by_the_rollback(
    custom: client.CustomObjectsApi, configuration: dict[str, Any]
) -> None:
    name = "site-policy"
    admins = {"priority": 1, "errorCode": ["79"], "actions": [{"name": "cordon"}]}
    custom.create_cluster_custom_object(
        RESCUE_GROUP,
        RESCUE_VERSION,
        "rescuepolicies",
        {
            "apiVersion": f"{RESCUE_GROUP}/{RESCUE_VERSION}",
            "kind": "RescuePolicy",
            "metadata": {"name": name, "labels": {"owner": "sre"}},
            "spec": {"rules": [admins]},
        },
    )
    try:
        assert rescue_policy.apply_rescue_policy(name, [RULE], configuration)["done"] == "replaced"
        assert rescue_policy.apply_rescue_policy(name, [RULE], configuration)["done"] == "replaced"

        done = rescue_policy.delete_rescue_policy(name, configuration)

        assert (done["restored"], done["deleted"]) == (True, False)
        back = custom.get_cluster_custom_object(
            RESCUE_GROUP, RESCUE_VERSION, "rescuepolicies", name
        )
        assert back["spec"]["rules"] == [admins]
        assert back["metadata"]["labels"] == {"owner": "sre"}
        assert ORIGINAL_ANNOTATION not in (back["metadata"].get("annotations") or {})
    finally:
        custom.delete_cluster_custom_object(RESCUE_GROUP, RESCUE_VERSION, "rescuepolicies", name)


def test_a_rescue_policy_the_experiment_created_is_deleted_by_the_rollback(
    custom: client.CustomObjectsApi, configuration: dict[str, Any]
) -> None:
    name = "experiment-policy"
    assert rescue_policy.apply_rescue_policy(name, [RULE], configuration)["done"] == "created"

    done = rescue_policy.delete_rescue_policy(name, configuration)

    assert (done["restored"], done["deleted"]) == (False, True)
    assert rescue_policy.delete_rescue_policy(name, configuration)["deleted"] is False


def test_an_admins_apf_objects_replaced_by_the_mitigation_are_put_back_by_the_rollback(
    cluster: ClusterState, configuration: dict[str, Any]
) -> None:
    api = client.FlowcontrolApiserverV1Api(api_client(cluster.kubeconfig))
    name = "site-batch-jobs"
    level = apf.priority_level(name, 7, 8, 32, reject=False)
    level["metadata"]["labels"] = {"owner": "sre"}
    schema = apf.flow_schema(name, "Group", "site:batch", 800)
    schema["metadata"]["labels"] = {"owner": "sre"}
    api.create_priority_level_configuration(level)  # type: ignore[arg-type]
    api.create_flow_schema(schema)  # type: ignore[arg-type]
    try:
        applied = apf.apply_apf_mitigation(name=name, configuration=configuration)
        assert (applied["flow_schema"], applied["priority_level"]) == ("replaced", "replaced")

        done = apf.remove_apf_mitigation(name, configuration)

        assert sorted(done["restored"]) == ["FlowSchema", "PriorityLevelConfiguration"]
        assert done["deleted"] == []
        plc = api.read_priority_level_configuration(name)
        assert plc.spec.limited.nominal_concurrency_shares == 7
        assert plc.metadata.labels == {"owner": "sre"}
        fs = api.read_flow_schema(name)
        assert fs.spec.rules[0].subjects[0].group.name == "site:batch"
        assert fs.spec.matching_precedence == 800
    finally:
        api.delete_flow_schema(name)
        api.delete_priority_level_configuration(name)


def test_a_rollback_in_a_new_process_restores_injected_nodes_and_keeps_an_admins_cordon(
    cluster: ClusterState, core: client.CoreV1Api, configuration: dict[str, Any]
) -> None:
    injected, admins = "gpu-15", "gpu-16"
    core.patch_node(admins, {"spec": {"unschedulable": True}})
    try:
        xid.inject_xid(node=injected, xid=62, configuration=configuration)
        xid.inject_xid(node=admins, xid=62, configuration=configuration)
        # no rescue controller here: cordon the injected node as a plan would
        core.patch_node(injected, {"spec": {"unschedulable": True}})

        script = (
            "import json, sys\n"
            "from blackstart.actions.xid import restore_xid_nodes\n"
            "print(json.dumps(restore_xid_nodes(timeout_s=10, quiet_s=0, "
            "configuration=json.loads(sys.argv[1]))))\n"
        )
        run = subprocess.run(
            [sys.executable, "-c", script, json.dumps(configuration)],
            capture_output=True,
            text=True,
            cwd=repo_root(),
            timeout=120,
            check=False,
        )
        assert run.returncode == 0, run.stderr
        result = json.loads(run.stdout.strip().splitlines()[-1])

        assert result["uncordoned"] == [injected]
        assert result["left_cordoned"] == [admins]
        assert not core.read_node(injected).spec.unschedulable
        assert core.read_node(admins).spec.unschedulable
        # done: a second rollback finds nothing left to restore
        assert (
            xid.restore_xid_nodes(timeout_s=10, quiet_s=0, configuration=configuration)["nodes"]
            == []
        )
    finally:
        core.patch_node(admins, {"spec": {"unschedulable": None}})
        core.patch_node(injected, {"spec": {"unschedulable": None}})


def test_a_node_whose_state_before_is_unknown_stays_cordoned(
    core: client.CoreV1Api, configuration: dict[str, Any]
) -> None:
    node = "gpu-17"
    core.patch_node(node, {"spec": {"unschedulable": True}})  # someone's, not an injection's
    try:
        result = xid.restore_xid_nodes(
            timeout_s=10, quiet_s=0, nodes=[node], configuration=configuration
        )

        assert result["uncordoned"] == []
        assert result["left_cordoned"] == [node]
        assert core.read_node(node).spec.unschedulable
    finally:
        core.patch_node(node, {"spec": {"unschedulable": None}})
