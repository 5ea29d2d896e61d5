"""The RescuePlan state machine (rescue/plans.py): steps, resume, records. Pure logic."""

from __future__ import annotations

import datetime as dt
import re

import pytest

from blackstart.rescue.crd.plans import (
    MAX_TRANSITIONS,
    PlanRecord,
    PlanStatus,
    Step,
    after_drain_timeout,
    api_plan_name,
    next_step,
    parse_time,
    plan_body,
    plan_name,
    should_uncordon,
    steps_for,
)
from blackstart.rescue.crd.policy import PolicyError, RescueAction
from blackstart.rescue.crd.validation import validation_from_object

T0 = dt.datetime(2026, 11, 24, 8, 30, tzinfo=dt.UTC)
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")


def actions(*names: str, uncordon_after_reboot: bool = False) -> tuple[RescueAction, ...]:
    return tuple(
        RescueAction(name, uncordon=uncordon_after_reboot and name == "reboot")  # type: ignore[arg-type]
        for name in names
    )


def test_the_vendor_demo_plan_only_cordons() -> None:
    assert steps_for(actions("cordon")) == (Step.CORDON,)


def test_drain_and_reboot_cordon_first_and_reboot_waits_for_ready() -> None:
    assert steps_for(actions("drain")) == (Step.CORDON, Step.DRAIN)
    assert steps_for(actions("reboot")) == (Step.CORDON, Step.REBOOT, Step.WAIT_READY)


def test_steps_follow_execution_order_whatever_order_the_actions_are_written_in() -> None:
    written = actions("unCordon", "reboot", "enableWarmStandby", "drain", "cordon")
    assert steps_for(written) == (
        Step.CORDON,
        Step.STANDBY,
        Step.DRAIN,
        Step.REBOOT,
        Step.WAIT_READY,
        Step.UNCORDON,
    )


def test_reboot_uncordons_only_when_its_attribute_says_so() -> None:
    assert Step.UNCORDON not in steps_for(actions("reboot"))
    assert steps_for(actions("reboot", uncordon_after_reboot=True))[-1] is Step.UNCORDON


def test_uncordon_alone_takes_no_cordon() -> None:
    assert steps_for(actions("unCordon")) == (Step.UNCORDON,)


def test_next_step_resumes_after_the_last_step_recorded_as_done() -> None:
    plan = actions("cordon", "drain", "reboot")
    status = PlanStatus()
    assert next_step(plan, status) is Step.CORDON
    status.complete(Step.CORDON)
    assert next_step(plan, status) is Step.DRAIN
    # a controller killed mid-drain: the drain is not done, so it is resumed, not skipped
    status.drain_started_at = "2026-11-24T08:30:00.000000Z"
    assert next_step(plan, status) is Step.DRAIN
    status.complete(Step.DRAIN)
    status.complete(Step.REBOOT)
    assert next_step(plan, status) is Step.WAIT_READY
    status.complete(Step.WAIT_READY)
    assert next_step(plan, status) is None


def test_an_ended_plan_has_no_next_step() -> None:
    status = PlanStatus()
    status.enter("Failed", T0, "drain timed out")
    assert next_step(actions("cordon", "drain"), status) is None


def test_status_survives_a_round_trip_through_the_api_server() -> None:
    status = PlanStatus(node_was_cordoned=False)
    status.enter("Pending", T0, "picked up")
    status.complete(Step.CORDON)
    status.enter("Cordoned", T0 + dt.timedelta(seconds=1), "cordon gpu-3")
    status.reboot_issued_at = "2026-11-24T08:31:00.000000Z"
    status.boot_id_before_reboot = "boot-1"
    status.standby_labels = {"app": "demo"}
    status.absorbed_report_ids = ["b:7"]
    again = PlanStatus.from_object(status.to_object())
    assert again == status
    assert again.to_object()["transitions"][0] == {
        "phase": "Pending",
        "time": "2026-11-24T08:30:00.000000Z",
        "message": "picked up",
    }


def test_entering_records_start_and_finish_times_and_counts_entries() -> None:
    status = PlanStatus()
    status.enter("Pending", T0)
    status.enter("Draining", T0)
    status.enter("Succeeded", T0 + dt.timedelta(minutes=2))
    assert status.started_at == "2026-11-24T08:30:00.000000Z"
    assert status.finished_at == "2026-11-24T08:32:00.000000Z"
    assert status.terminal
    assert status.entered("Draining") == 1


def test_transitions_stay_within_the_crd_bound_keeping_the_first() -> None:
    status = PlanStatus()
    status.enter("Pending", T0)
    for i in range(100):
        status.enter("Draining", T0 + dt.timedelta(seconds=i))
    assert len(status.transitions) == MAX_TRANSITIONS
    assert status.transitions[0]["phase"] == "Pending"


def test_an_administrators_cordon_is_never_undone() -> None:
    assert should_uncordon(PlanStatus(node_was_cordoned=False))
    assert not should_uncordon(PlanStatus(node_was_cordoned=True))
    assert not should_uncordon(PlanStatus(node_was_cordoned=None))  # unknown: keep cordoned


def test_a_drain_past_its_waittime_escalates_to_a_reboot_or_fails() -> None:
    assert after_drain_timeout(actions("drain", "reboot")) == "escalate"
    assert after_drain_timeout(actions("cordon", "drain")) == "fail"


def test_plan_names_are_deterministic_valid_and_distinct() -> None:
    first = plan_name("gpu-3", "boot-a:1843")
    assert first == plan_name("gpu-3", "boot-a:1843")
    assert first != plan_name("gpu-3", "boot-a:1844")
    assert first != plan_name("gpu-4", "boot-a:1843")
    assert first.startswith("gpu-3-xid-")
    long_node = "n" * 250
    for name in (first, plan_name(long_node, "x"), api_plan_name("gpu-3", "k")):
        assert len(name) <= 253 and DNS_SUBDOMAIN.match(name), name
    assert plan_name(long_node, "x") != plan_name(long_node + "m", "x")


def test_a_plan_body_reads_back_into_the_same_record() -> None:
    body = plan_body(
        plan_name("gpu-3", "b:1"),
        "gpu-3",
        [62, 48, 62],
        actions("cordon", "drain"),
        source="policy",
        dry_run=False,
        node_was_cordoned=True,
        report_ids=["b:1", "b:2", "b:1"],
        first_seen_at="2026-11-24T08:30:00.000000Z",
    )
    assert body["spec"]["xids"] == [48, 62]
    assert body["spec"]["reportIds"] == ["b:1", "b:2"]
    record = PlanRecord.from_object(body)
    assert record.node == "gpu-3"
    assert record.actions == actions("cordon", "drain")
    assert record.node_was_cordoned_hint is True
    assert record.handled_report_ids() == {"b:1", "b:2"}
    assert record.active


def test_times_parse_as_the_api_server_and_the_agent_write_them() -> None:
    assert parse_time("2026-11-24T08:30:00Z") == T0
    assert parse_time("2026-11-24T08:30:00.000000Z") == T0
    assert parse_time("yesterday") is None
    assert parse_time(None) is None


@pytest.mark.parametrize("phase", ["Succeeded", "Failed", "Refused"])
def test_terminal_phases(phase: str) -> None:
    status = PlanStatus()
    status.enter(phase, T0)  # type: ignore[arg-type]
    assert status.terminal


def test_a_plan_for_more_than_64_reports_keeps_the_newest_ids() -> None:
    # The condition holds the newest reports; a restarted controller compares them with the
    # plan's ids: keeping the oldest 64 made the newest look unhandled (a second plan)
    ids = [f"b:{n}" for n in range(1, 71)]
    body = plan_body(
        plan_name("gpu-3", ids[0]),
        "gpu-3",
        [62],
        actions("cordon"),
        source="policy",
        dry_run=False,
        node_was_cordoned=False,
        report_ids=ids,
    )
    assert body["spec"]["reportIds"] == ids[-64:]
    assert "b:70" in PlanRecord.from_object(body).handled_report_ids()


def test_a_validation_gate_comes_after_the_reboot_and_before_the_uncordon() -> None:
    reboot = actions("cordon", "reboot", uncordon_after_reboot=True)
    assert steps_for(reboot, validate=True) == (
        Step.CORDON, Step.REBOOT, Step.WAIT_READY, Step.VALIDATE, Step.UNCORDON,
    )  # fmt: skip
    assert Step.VALIDATE not in steps_for(actions("cordon", "unCordon"), validate=True)
    status = PlanStatus(completed_steps=["cordon", "reboot", "waitReady"])
    assert next_step(reboot, status, validate=True) is Step.VALIDATE
    assert next_step(reboot, status) is Step.UNCORDON


def test_a_rules_validation_is_copied_to_the_plan_and_reads_back() -> None:
    obj = {"image": "nvcr.io/nvidia/cuda:12.4.1-base", "command": ["nvidia-smi", "-q"]}
    check = validation_from_object({**obj, "waittime": "5min"})
    body = plan_body(
        "p", "gpu-3", [79], actions("cordon", "reboot"), source="policy", dry_run=False,
        node_was_cordoned=False, validation=check,
    )  # fmt: skip
    assert body["spec"]["validation"] == {**obj, "waittime": "5min"}
    assert PlanRecord.from_object(body).validation == check
    assert validation_from_object(obj).waittime == dt.timedelta(minutes=10)


@pytest.mark.parametrize(
    ("obj", "says"),
    [
        ({"command": ["x"]}, "validation.image"),
        ({"image": "i", "command": []}, "validation.command"),
        ({"image": "i", "command": "nvidia-smi"}, "validation.command"),
        ({"image": "i", "command": ["x"], "waittime": "0s"}, "longer than zero"),
        ({"image": "i", "command": ["x"], "waittime": "999999d"}, "validation.waittime"),
    ],
)
def test_a_malformed_validation_names_the_field(obj: dict[str, object], says: str) -> None:
    with pytest.raises(PolicyError, match=says):
        validation_from_object(obj)
