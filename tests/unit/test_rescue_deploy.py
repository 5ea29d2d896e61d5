"""The manifests in rescue/deploy/ and the local identity's RBAC agree with what the
controller does. Reads files only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from blackstart.rescue.install import (
    DEPLOY_FILES,
    LOCAL_REBOOT_FILE,
    admission_policy_support,
    deploy_documents,
)

REPO = Path(__file__).resolve().parents[2]


def rules_of(documents: list[dict[str, Any]], kind: str, name: str) -> list[dict[str, Any]]:
    [role] = [d for d in documents if d["kind"] == kind and d["metadata"]["name"] == name]
    rules: list[dict[str, Any]] = role["rules"]
    return rules


def test_the_packaged_manifests_load_with_crds_first() -> None:
    documents = deploy_documents()
    kinds = [d["kind"] for d in documents]
    assert kinds[:3] == ["CustomResourceDefinition"] * 3
    assert "ClusterRole" in kinds and "ServiceAccount" in kinds


def test_the_local_identity_may_do_what_the_deployed_controller_with_the_local_driver_may() -> None:
    deployed = deploy_documents(["controller-rbac.yaml", LOCAL_REBOOT_FILE])
    local = [d for d in yaml.safe_load_all((REPO / "clusters/local/rbac.yaml").read_text()) if d]
    expected = rules_of(deployed, "ClusterRole", "blackstart-rescue-controller")
    expected += rules_of(deployed, "ClusterRole", "blackstart-rescue-controller-local-reboot")
    assert sorted(map(str, rules_of(local, "ClusterRole", "blackstart:rescue-controller"))) == (
        sorted(map(str, expected))
    )
    assert rules_of(local, "Role", "blackstart:rescue-controller") == rules_of(
        deployed, "Role", "blackstart-rescue-controller"
    )


def test_the_controller_never_deletes_pods_or_touches_workloads() -> None:
    rules = rules_of(
        deploy_documents(["controller-rbac.yaml"]), "ClusterRole", "blackstart-rescue-controller"
    )
    for rule in rules:
        assert "*" not in rule["verbs"] and "*" not in rule["resources"]
        if "pods" in rule["resources"]:
            assert rule["verbs"] == ["list"]
        assert not {"deployments", "daemonsets", "secrets"} & set(rule["resources"])


def test_the_deployment_prefers_cpu_nodes_and_runs_one_replica() -> None:
    [deployment] = yaml.safe_load_all(
        (REPO / "rescue/deploy/controller-deployment.yaml").read_text()
    )
    spec = deployment["spec"]
    assert spec["replicas"] == 1 and spec["strategy"]["type"] == "Recreate"
    preferred = spec["template"]["spec"]["affinity"]["nodeAffinity"][
        "preferredDuringSchedulingIgnoredDuringExecution"
    ]
    expressions = [e for p in preferred for e in p["preference"]["matchExpressions"]]
    assert {"key": "nvidia.com/gpu.present", "operator": "DoesNotExist"} in expressions
    assert spec["template"]["spec"]["serviceAccountName"] == "rescue-controller"


# --- issue 11, scenario 20 -------------------------------------------------------------------
def test_the_deployed_controller_may_not_write_node_status_by_default() -> None:
    documents = deploy_documents(DEPLOY_FILES)
    for document in documents:
        if document["kind"] in ("ClusterRole", "Role") and "controller" in str(
            document["metadata"]["name"]
        ):
            for rule in document["rules"]:
                assert "nodes/status" not in rule["resources"], document["metadata"]["name"]
    [extra] = [d for d in deploy_documents([LOCAL_REBOOT_FILE]) if d["kind"] == "ClusterRole"]
    assert extra["rules"] == [
        {"apiGroups": [""], "resources": ["nodes/status"], "verbs": ["patch"]}
    ]


def test_the_agents_admission_policy_is_installed_only_where_it_can_work() -> None:
    assert admission_policy_support(True, (1, 33)) == (True, None)
    assert admission_policy_support(True, None) == (True, None)
    skipped, why = admission_policy_support(False, (1, 29))
    assert not skipped and why is not None and "does not serve" in why
    skipped, why = admission_policy_support(True, (1, 31))
    assert not skipped and why is not None and "node name" in why
