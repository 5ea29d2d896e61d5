"""The agent's node-side rebooter (rescue/agent/host_reboot.py): when it reboots its host.

`reboot_due` is pure logic; `HostRebooter.consider` is driven here with the plan
lookup and the command replaced (the watch and the real command run on kind, in
tests/kind/test_chart_on_kind.py). The option checks run the real CLI.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from click.testing import CliRunner
from kubernetes import client

from blackstart.cli import main
from blackstart.names import REBOOT_REQUESTED_ANNOTATION
from blackstart.rescue.agent.host_reboot import MAX_RETRY_S, HostRebooter, reboot_due, retry_delay

BOOT = "0b9c5c43-0000-4000-8000-000000000001"


def node(annotation: str | None = "plan-1", boot: str = BOOT, name: str = "gpu-3") -> dict:
    annotations = {REBOOT_REQUESTED_ANNOTATION: annotation} if annotation else {}
    return {
        "metadata": {"name": name, "annotations": annotations},
        "status": {"nodeInfo": {"bootID": boot}},
    }


def plan(
    node_name: str = "gpu-3", phase: str = "Rebooting", boot: str | None = BOOT, dry: bool = False
) -> dict[str, Any]:
    status: dict[str, Any] = {"phase": phase}
    if boot:
        status["bootIdBeforeReboot"] = boot
    return {"spec": {"nodeName": node_name, "dryRun": dry}, "status": status}


def test_a_plan_waiting_for_this_boot_to_end_reboots_the_node() -> None:
    decision = reboot_due(node(), plan())
    assert decision.reboot and decision.plan == "plan-1"
    assert reboot_due(node(), plan(phase="WaitingReady")).reboot


@pytest.mark.parametrize(
    ("the_node", "the_plan", "reason"),
    [
        (node(annotation=None), plan(), "no reboot requested"),
        (node(), None, "does not exist"),
        (node(), plan(node_name="gpu-4"), "is for node 'gpu-4'"),
        (node(), plan(dry=True), "dry run"),
        (node(), plan(phase="Succeeded"), "is Succeeded"),
        (node(), plan(phase="Failed"), "is Failed"),
        (node(), plan(phase="Draining"), "is Draining"),
        (node(), plan(boot=None), "recorded no boot ID"),
        # the reboot already happened: the annotation stays until the controller sees Ready
        (node(boot="a-new-boot"), plan(), "has booted since"),
    ],
)
def test_nothing_else_reboots_the_node(the_node: dict, the_plan: dict | None, reason: str) -> None:
    decision = reboot_due(the_node, the_plan)
    assert not decision.reboot
    assert reason in decision.reason


class Rebooter(HostRebooter):
    """The plan lookup from a dict; the command recorded, not run."""

    def __init__(self, plans: dict[str, dict[str, Any]], exit_code: int = 0) -> None:
        self.ran: list[tuple[str, ...]] = []
        self.events: list[str] = []

        def runner(command: Sequence[str]) -> tuple[int, str]:
            self.ran.append(tuple(command))
            return exit_code, "Failed to connect to bus" if exit_code else ""

        super().__init__(client.ApiClient(), "gpu-3", ["reboot-it"], runner=runner)
        self.plans = plans

    def _plan(self, name: str) -> dict[str, Any] | None:
        return self.plans.get(name)

    def _event(self, message: str) -> None:
        self.events.append(message)


def test_the_command_runs_once_per_plan_however_often_the_node_is_seen() -> None:
    rebooter = Rebooter({"plan-1": plan()})
    for _ in range(3):  # a watch sees the node again on every change (a status heartbeat)
        rebooter.consider(node())
    assert rebooter.ran == [("reboot-it",)]
    rebooter.plans["plan-2"] = plan()
    rebooter.consider(node(annotation="plan-2"))  # a later plan for the same boot
    assert len(rebooter.ran) == 2


def test_a_failed_command_is_reported_on_the_node_and_not_run_again() -> None:
    rebooter = Rebooter({"plan-1": plan()}, exit_code=1)
    rebooter.consider(node())
    rebooter.consider(node())
    assert len(rebooter.ran) == 1  # the controller fails the plan when its waittime is out
    [event] = rebooter.events
    assert "reboot-it" in event and "exit 1" in event and "Failed to connect to bus" in event


def test_a_node_back_under_a_new_boot_is_not_rebooted_again() -> None:
    rebooter = Rebooter({"plan-1": plan(phase="WaitingReady")})
    rebooter.consider(node(boot="the-next-boot"))  # the agent's first look after the reboot
    assert rebooter.ran == []


def invoke(*args: str) -> Any:
    return CliRunner().invoke(main, ["rescue", "agent", *args])


def test_host_reboot_refuses_a_local_clusters_many_nodes() -> None:
    result = invoke("--cluster", "e2e", "--host-reboot")
    assert result.exit_code == 2, result.output
    assert "never with --cluster" in result.output


def test_host_reboot_needs_exactly_one_node(tmp_path: Any) -> None:
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    for log in logs:
        log.write_text("")
    result = invoke(
        "--node",
        f"gpu-1={logs[0]}",
        "--node",
        f"gpu-2={logs[1]}",
        "--host-reboot",
        "--kubeconfig",
        str(tmp_path / "none"),
    )
    assert result.exit_code == 2, result.output
    assert "--host-reboot reboots the host the agent runs on" in result.output


def test_an_unparsable_reboot_command_is_named(tmp_path: Any) -> None:
    log = tmp_path / "a.log"
    log.write_text("")
    result = invoke(
        "--node",
        f"gpu-1={log}",
        "--host-reboot",
        "--reboot-command",
        "systemctl 'reboot",
        "--kubeconfig",
        str(tmp_path / "none"),
    )
    assert result.exit_code == 2, result.output
    assert "--reboot-command" in result.output and "No closing quotation" in result.output


def test_the_plan_is_read_again_only_when_the_request_or_the_boot_changes() -> None:
    reads: list[str] = []
    rebooter = Rebooter({"plan-1": plan(phase="Succeeded")})
    lookup = rebooter._plan

    def counted(name: str) -> dict[str, Any] | None:
        reads.append(name)
        return lookup(name)

    rebooter._plan = counted  # type: ignore[method-assign]
    for _ in range(5):  # heartbeats of a node whose plan has ended
        rebooter.consider(node())
    assert reads == ["plan-1"]
    rebooter.consider(node(boot="another"))
    assert reads == ["plan-1", "plan-1"]


def test_a_plan_still_draining_is_read_again_until_it_waits_for_the_reboot() -> None:
    rebooter = Rebooter({"plan-1": plan(phase="Draining")})
    rebooter.consider(node())
    assert rebooter.ran == []
    rebooter.plans["plan-1"] = plan(phase="Rebooting")
    rebooter.consider(node())  # the same node state, the plan moved on
    assert rebooter.ran == [("reboot-it",)]


def test_a_failing_watch_is_opened_again_later_and_later() -> None:
    # every agent of a fleet whose identity may not read plans would otherwise LIST and
    # GET every 2 s, forever
    delays = [retry_delay(n) for n in range(1, 10)]
    assert delays[:4] == [1.0, 2.0, 4.0, 8.0]
    assert delays == sorted(delays) and delays[-1] == MAX_RETRY_S == 60.0
