"""Given the local fleet: ``blackstart rescue install`` gives the deployed controller no write
to nodes/status unless its local reboot driver needs it, and gives the agent its per-node
admission policy where the API server can enforce it (issue 11, scenario 20)."""

from __future__ import annotations

import pytest
from kubernetes import client

from blackstart.clusters.state import ClusterState
from blackstart.kube import api_client
from blackstart.rescue.install import install

pytestmark = pytest.mark.e2e

CONTROLLER_SA = "system:serviceaccount:blackstart-rescue:rescue-controller"


def may(api: client.ApiClient, user: str, verb: str, resource: str, sub: str = "") -> bool:
    review = client.AuthorizationV1Api(api).create_subject_access_review(
        {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SubjectAccessReview",
            "spec": {
                "user": user,
                "groups": ["system:serviceaccounts", "system:serviceaccounts:blackstart-rescue"],
                "resourceAttributes": {"verb": verb, "resource": resource, "subresource": sub},
            },
        }
    )
    return bool(review.status.allowed)


def test_install_gives_the_controller_node_status_only_for_the_local_reboot_driver(
    cluster: ClusterState,
) -> None:
    api = api_client(cluster.kubeconfig)
    rbac = client.RbacAuthorizationV1Api(api)
    for name in ("blackstart-rescue-controller-local-reboot",):
        for delete in (rbac.delete_cluster_role_binding, rbac.delete_cluster_role):
            try:
                delete(name)
            except client.exceptions.ApiException as err:
                if err.status != 404:
                    raise
    messages: list[str] = []

    applied = install(api, progress=messages.append)

    assert "ValidatingAdmissionPolicy/blackstart-rescue-agent-own-node" in applied  # 1.33
    assert may(api, CONTROLLER_SA, "patch", "nodes")
    assert not may(api, CONTROLLER_SA, "patch", "nodes", "status")

    install(api, progress=messages.append, local_reboot=True)

    assert may(api, CONTROLLER_SA, "patch", "nodes", "status")
    assert not any("warning" in m for m in messages)
