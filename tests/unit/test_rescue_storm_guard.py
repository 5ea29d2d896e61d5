"""The storm guard's arithmetic (rescue/storm_guard.py). Pure logic."""

from __future__ import annotations

import datetime as dt
import random
from typing import Any

import pytest
from kubernetes.client import ApiClient, Configuration

from blackstart.rescue.controller.config import ControllerConfig
from blackstart.rescue.controller.kube_api import KubeApi
from blackstart.rescue.controller.metrics import ControllerMetrics
from blackstart.rescue.controller.node_actions import NodeView
from blackstart.rescue.controller.operator import Controller
from blackstart.rescue.controller.storm_guard import StormGuard, parse_reboot_cap
from blackstart.rescue.crd.actions import RescueAction
from blackstart.rescue.crd.plans import PlanRecord, plan_body

NOW = dt.datetime(2026, 11, 24, 12, 0, tzinfo=dt.UTC)


def test_half_the_fleet_reporting_xids_gets_only_its_share_remediated() -> None:
    guard = StormGuard(max_concurrent_plans=100, max_unavailable_share=0.25)
    held = 0
    admitted = 0
    for _ in range(24):  # 24 of 48 GPU nodes report Xid 48
        if guard.admit(active_plans=held, held_matching=held, matching_nodes=48) is None:
            held += 1
            admitted += 1
    assert admitted == 12


def test_the_share_limit_rounds_down_but_never_below_one() -> None:
    guard = StormGuard(max_unavailable_share=0.2)
    assert guard.share_limit(48) == 9
    assert guard.share_limit(50) == 10
    assert guard.share_limit(3) == 1
    assert guard.share_limit(0) == 1


def test_max_concurrent_plans_binds_first_with_the_vendors_message() -> None:
    guard = StormGuard(max_concurrent_plans=3, max_unavailable_share=1.0)
    assert guard.admit(2, 0, 48) is None
    refusal = guard.admit(3, 0, 48)
    assert refusal is not None
    assert refusal.reason == "max-concurrent-plans"
    assert refusal.api_message == "Exceed the maximum plans limit 3"


def test_the_share_refusal_names_the_numbers() -> None:
    refusal = StormGuard(max_unavailable_share=0.25).admit(0, 12, 48)
    assert refusal is not None
    assert refusal.reason == "max-unavailable-share"
    assert refusal.limit == 12
    assert "12 of the 48 matching nodes" in refusal.detail
    assert refusal.api_message == "Exceed the maximum plans limit 12"


def test_the_reboot_cap_counts_only_reboots_inside_the_window() -> None:
    guard = StormGuard(reboot_cap=2, reboot_window=dt.timedelta(hours=1))
    old = NOW - dt.timedelta(hours=2)
    recent = [NOW - dt.timedelta(minutes=50), NOW - dt.timedelta(minutes=5)]
    assert guard.reboot_allowed([old, recent[0]], NOW) is None
    refusal = guard.reboot_allowed([old, *recent], NOW)
    assert refusal is not None and "rebooted 2 times in the last 1h" in refusal


@pytest.mark.parametrize(
    ("text", "count", "window"),
    [
        ("3/1day", 3, dt.timedelta(days=1)),
        ("2/30min", 2, dt.timedelta(minutes=30)),
        ("1/1h30m", 1, dt.timedelta(minutes=90)),
    ],
)
def test_reboot_caps_parse(text: str, count: int, window: dt.timedelta) -> None:
    assert parse_reboot_cap(text) == (count, window)


@pytest.mark.parametrize("text", ["3", "0/1h", "x/1h", "3/", "3/soon", "3/0s"])
def test_malformed_reboot_caps_say_how_to_write_them(text: str) -> None:
    with pytest.raises(ValueError, match="reboot cap"):
        parse_reboot_cap(text)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_concurrent_plans": 0},
        {"max_unavailable_share": 0.0},
        {"max_unavailable_share": 1.5},
        {"reboot_cap": 0},
    ],
)
def test_nonsense_limits_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        StormGuard(**kwargs)  # type: ignore[arg-type]


# --- 11: the pool is counted by what does not move under remediation ---------------------------


def gpu_node(name: str, capacity: int = 8, allocatable: int = 8, **kwargs: object) -> NodeView:
    return NodeView.from_object(
        {
            "metadata": {"name": name, "labels": kwargs.get("labels", {})},
            "spec": {"unschedulable": kwargs.get("unschedulable", False)},
            "status": {
                "capacity": {"nvidia.com/gpu": str(capacity)},
                "allocatable": {"nvidia.com/gpu": str(allocatable)},
            },
        }
    )


def test_a_node_whose_device_plugin_dropped_allocatable_gpus_stays_a_gpu_node() -> None:
    # the device plugin drops allocatable for unhealthy GPUs, and to nothing while it
    # registers again after a reboot: the nodes under remediation
    assert gpu_node("gpu-1", allocatable=0).gpus == 8
    assert (
        gpu_node("gpu-1", capacity=0, allocatable=0, labels={"nvidia.com/gpu.count": "8"}).gpus == 8
    )
    assert gpu_node("gpu-1", capacity=0, allocatable=0).gpus == 0


def controller_with(nodes: list[NodeView], **guard: Any) -> Controller:
    config = ControllerConfig(storm_guard=StormGuard(**guard))
    api = KubeApi(ApiClient(Configuration()), ControllerMetrics())
    controller = Controller(config, api, ControllerMetrics())
    for node in nodes:
        controller.remember(node)
    return controller


def test_nodes_under_remediation_stay_in_the_pool_and_in_the_held_count() -> None:
    nodes = [gpu_node(f"gpu-{i}") for i in range(10)]
    controller = controller_with(nodes, max_concurrent_plans=100, max_unavailable_share=0.2)
    assert len(controller._pool(None)) == 10
    # two nodes were cordoned by plans; while rebooting they report no GPUs at all
    for name in ("gpu-0", "gpu-1"):
        controller.plans[f"{name}-plan"] = PlanRecord.from_object(
            plan_body(
                f"{name}-plan",
                name,
                [62],
                (RescueAction("cordon"),),
                source="policy",
                dry_run=False,
                node_was_cordoned=False,
            )
        )
        controller.remember(
            NodeView.from_object(
                {
                    "metadata": {
                        "name": name,
                        "resourceVersion": "99",
                        "annotations": {"rescue.blackstart.dev/cordoned-by": f"{name}-plan"},
                    },
                    "spec": {"unschedulable": True},
                    "status": {"capacity": {}, "allocatable": {}},
                }
            )
        )
    assert len(controller._pool(None)) == 10  # before: 8, and 0 held: a third admitted
    refusal = controller._admission_refusal(None)
    assert refusal is not None and refusal.reason == "max-unavailable-share"


def test_when_too_much_of_the_fleet_reports_xids_at_once_the_controller_stops_acting() -> None:
    guard = StormGuard(max_reporting_share=0.3)
    assert guard.fleet_refusal(reporting=3, pool=10) is None
    refusal = guard.fleet_refusal(reporting=4, pool=10)
    assert refusal is not None and refusal.reason == "fleet-xid-storm"
    assert "4 of the 10 GPU nodes" in refusal.detail
    assert "driver roll-out or a bad job" in refusal.detail


def test_the_fleet_rule_counts_nodes_with_recent_xid_reports() -> None:
    nodes = [gpu_node(f"gpu-{i}") for i in range(10)]
    controller = controller_with(
        nodes, max_concurrent_plans=100, max_unavailable_share=1.0, max_reporting_share=0.3
    )
    now = dt.datetime.now(dt.UTC)
    for i in range(3):
        controller.saw_xid(f"gpu-{i}", now)
    controller.saw_xid("gpu-9", now - dt.timedelta(hours=2))  # long ago: not "at once"
    assert controller._admission_refusal(None) is None
    controller.saw_xid("gpu-3", now)
    refusal = controller._admission_refusal(None)
    assert refusal is not None and refusal.reason == "fleet-xid-storm"
    assert controller.metrics.fleet_xid_storm._value.get() == 1


# --- 14: the guard counts without a pass over the fleet ----------------------------------------


def _scanned_counts(controller: Controller, since: dt.datetime) -> tuple[int, int, int, int]:
    """The counts as a pass over every node gives them (how the guard counted before)."""
    pool = controller._pool(None)
    reporting = sum(1 for node in pool if controller._xid_at.get(node.name, since) > since)
    held = sum(1 for node in pool if controller._held(node))
    return len(pool), reporting, held, sum(1 for p in controller.plans.values() if p.active)


def _plan(name: str, node: str, phase: str) -> PlanRecord:
    body = plan_body(
        name, node, [62], (RescueAction("cordon"),), source="policy", dry_run=False,
        node_was_cordoned=False,
    )  # fmt: skip
    body["status"] = {"phase": phase}
    return PlanRecord.from_object(body)


@pytest.mark.parametrize("seed", range(12))
def test_the_guards_kept_counts_match_a_pass_over_the_fleet(seed: int) -> None:
    rng = random.Random(seed)
    controller = controller_with([], max_concurrent_plans=1000, max_unavailable_share=1.0)
    key, value = controller.config.standby
    now = dt.datetime.now(dt.UTC)
    since = now - dt.timedelta(minutes=5)
    names = [f"node-{i}" for i in range(60)]
    for version in range(1, 5):  # nodes seen again: relabelled, cordoned, uncordoned, deleted
        for name in names:
            if rng.random() < 0.5:
                continue
            if rng.random() < 0.08:
                controller.forget_node(name)
                continue
            labels = {key: value} if rng.random() < 0.15 else {"pool": "a"}
            annotations = {}
            if rng.random() < 0.4:
                annotations = {"rescue.blackstart.dev/cordoned-by": f"plan-{rng.randrange(30)}"}
            gpus = str(rng.choice([0, 0, 8, 8, 8]))
            controller.remember(
                NodeView.from_object(
                    {
                        "metadata": {"name": name, "resourceVersion": str(version),
                                     "labels": labels, "annotations": annotations},
                        "spec": {"unschedulable": rng.random() < 0.5},
                        "status": {"capacity": {"nvidia.com/gpu": gpus},
                                   "allocatable": {"nvidia.com/gpu": gpus}},
                    }
                )
            )  # fmt: skip
            if rng.random() < 0.3:
                controller.saw_xid(name, now - dt.timedelta(minutes=rng.choice([1, 10])))
        for index in rng.sample(range(30), 6):
            phase = rng.choice(["Pending", "Cordoning", "Succeeded", "Failed"])
            # a plan's name is its node's for life: plan-i is node-2i's
            controller._hold(_plan(f"plan-{index}", names[2 * index], phase))
        if rng.random() < 0.5:
            controller._forget_plan(f"plan-{rng.randrange(30)}")
        assert controller._gpu_pool_counts(since) == _scanned_counts(controller, since)
