"""How a drain sorts the pods on a node (rescue/drain.py). Pure logic, kubectl's rules."""

from __future__ import annotations

from typing import Any

import pytest

from blackstart.rescue.controller.drain import (
    DrainOptions,
    PodKind,
    classify_pod,
    plan_drain_round,
)
from blackstart.rescue.crd.actions import RescueAction, action_from_object


def pod(
    name: str,
    owner: str | None = "ReplicaSet",
    *,
    phase: str = "Running",
    annotations: dict[str, str] | None = None,
    emptydir: bool = False,
    grace: int | None = None,
    deleting: bool = False,
) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "namespace": "ml", "annotations": annotations or {}}
    if owner:
        metadata["ownerReferences"] = [{"kind": owner, "name": "x", "controller": True}]
    if deleting:
        metadata["deletionTimestamp"] = "2026-11-24T08:30:00Z"
    spec: dict[str, Any] = {"containers": [{"name": "c"}]}
    if emptydir:
        spec["volumes"] = [{"name": "scratch", "emptyDir": {}}]
    if grace is not None:
        spec["terminationGracePeriodSeconds"] = grace
    return {"metadata": metadata, "spec": spec, "status": {"phase": phase}}


@pytest.mark.parametrize(
    ("obj", "kind"),
    [
        (pod("web"), PodKind.MANAGED),
        (pod("agent", owner="DaemonSet"), PodKind.DAEMONSET),
        (
            pod("etcd", owner="Node", annotations={"kubernetes.io/config.mirror": "x"}),
            PodKind.MIRROR,
        ),
        (pod("bare", owner=None), PodKind.UNMANAGED),
        (pod("cache", emptydir=True), PodKind.EMPTYDIR),
        (pod("job", phase="Succeeded", owner=None), PodKind.FINISHED),
        (pod("going", deleting=True), PodKind.TERMINATING),
    ],
)
def test_pods_are_classified_as_kubectl_drain_does(obj: dict[str, Any], kind: PodKind) -> None:
    assert classify_pod(obj).kind is kind


def test_a_daemonset_pod_with_emptydir_is_still_skipped_as_a_daemonset_pod() -> None:
    assert classify_pod(pod("ds", owner="DaemonSet", emptydir=True)).kind is PodKind.DAEMONSET


def test_grace_is_the_pods_own_but_at_least_one_second() -> None:
    assert classify_pod(pod("a")).grace_seconds == 30
    assert classify_pod(pod("b", grace=120)).grace_seconds == 120
    assert classify_pod(pod("c", grace=0)).grace_seconds == 1


def test_a_round_evicts_managed_and_finished_waits_for_terminating_skips_daemons() -> None:
    pods = [
        classify_pod(p)
        for p in (
            pod("web"),
            pod("done", phase="Failed"),
            pod("going", deleting=True),
            pod("agent", owner="DaemonSet"),
            pod("static", annotations={"kubernetes.io/config.mirror": "x"}),
        )
    ]
    round_ = plan_drain_round(pods, DrainOptions())
    assert [p.name for p in round_.evict] == ["web", "done"]
    assert [p.name for p in round_.waiting] == ["going"]
    assert [p.name for p, _ in round_.skipped] == ["agent", "static"]
    assert not round_.finished


def test_only_skipped_pods_left_means_the_drain_is_finished() -> None:
    pods = [classify_pod(pod("agent", owner="DaemonSet"))]
    assert plan_drain_round(pods, DrainOptions()).finished


@pytest.mark.parametrize(
    ("handling", "evicted", "skipped", "blocking"),
    [("evict", 2, 0, 0), ("skip", 0, 2, 0), ("fail", 0, 0, 2)],
)
def test_unmanaged_and_emptydir_pods_are_handled_as_told(
    handling: str, evicted: int, skipped: int, blocking: int
) -> None:
    pods = [classify_pod(pod("bare", owner=None)), classify_pod(pod("cache", emptydir=True))]
    options = DrainOptions(unmanaged=handling, emptydir=handling)  # type: ignore[arg-type]
    round_ = plan_drain_round(pods, options)
    assert (len(round_.evict), len(round_.skipped), len(round_.blocking)) == (
        evicted,
        skipped,
        blocking,
    )
    if blocking:
        assert not round_.finished
        assert "no controller will recreate it" in round_.blocking[0][1]


def test_by_default_unmanaged_and_emptydir_pods_stop_the_drain_as_in_kubectl() -> None:
    # kubectl drain refuses both without --force / --delete-emptydir-data: a bare pod
    # evicted is gone for good, an emptyDir's data with it
    pods = [classify_pod(pod("bare", owner=None)), classify_pod(pod("cache", emptydir=True))]
    round_ = plan_drain_round(pods, DrainOptions())
    assert [p.name for p, _ in round_.blocking] == ["bare", "cache"]
    assert not round_.evict


def test_the_drain_action_opts_in_to_evicting_them_as_kubectls_flags_do() -> None:
    forced = RescueAction("drain", force=True)
    both = RescueAction("drain", force=True, delete_emptydir_data=True)
    assert DrainOptions().for_action(forced) == DrainOptions(unmanaged="evict", emptydir="fail")
    assert DrainOptions().for_action(both) == DrainOptions(unmanaged="evict", emptydir="evict")
    assert DrainOptions(unmanaged="skip").for_action(None) == DrainOptions(unmanaged="skip")
    assert (
        action_from_object(
            {"name": "drain", "attribute": {"force": "true", "deleteEmptyDirData": "true"}}
        )
        == both
    )
    assert both.to_object()["attribute"] == {"force": "true", "deleteEmptyDirData": "true"}


def test_drain_rounds_recheck_soon_after_evicting_then_every_two_seconds() -> None:
    from itertools import islice

    from blackstart.rescue.controller.drain import recheck_pauses

    # a pod gone in a moment ends the drain in a moment; a budget that holds is asked
    # again every 2 s (before: 2 s from the first round on, so no drain took under 2 s)
    assert list(islice(recheck_pauses(), 6)) == [0.25, 0.5, 1.0, 2.0, 2.0, 2.0]
    assert list(islice(recheck_pauses(0.5), 3)) == [0.25, 0.5, 0.5]
    assert list(islice(recheck_pauses(0.1), 2)) == [0.1, 0.1]
