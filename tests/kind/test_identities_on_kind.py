"""A kind cluster blackstart made has the non-admin identities a local cluster has: real
users the kind API server authenticates by certificate, outside system:masters, held to
their RBAC, so the lockout's system traffic and the roll-out's guard run here as there."""

from __future__ import annotations

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from blackstart.clusters.local.credentials import COREDNS, IDENTITIES, TELEMETRY
from blackstart.clusters.state import ClusterState
from blackstart.probes.lockout import rollout_health
from blackstart.target import resolve_target

pytestmark = pytest.mark.kind


def test_every_identity_is_its_own_user_held_to_its_rbac(kind_cluster: ClusterState) -> None:
    assert set(kind_cluster.identities) == {identity.user for identity in IDENTITIES}
    target = resolve_target({"blackstart_cluster": kind_cluster.name}, None)
    assert target.provider == "kind"
    for identity in (TELEMETRY, COREDNS):
        api = target.identity_api(identity.user, 1)
        review = client.AuthenticationV1Api(api).create_self_subject_review(
            {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}  # type: ignore[arg-type]
        )
        user = review.status.user_info
        assert user.username == identity.user
        assert set(identity.groups) <= set(user.groups or [])
        assert "system:masters" not in (user.groups or [])
        core = client.CoreV1Api(api)
        assert core.list_pod_for_all_namespaces(limit=1).items is not None
        with pytest.raises(ApiException) as refused:
            core.list_namespaced_secret("kube-system", limit=1)
        assert refused.value.status == 403


def test_the_roll_outs_guard_times_requests_as_system_traffic_on_kind(
    kind_cluster: ClusterState,
) -> None:
    health = rollout_health(5.0, 5.0, 3, configuration={"blackstart_cluster": kind_cluster.name})
    assert health["errors"] == 0, health
    assert health["healthy"], health
    assert 0 < health["p99_s"] < 5.0
