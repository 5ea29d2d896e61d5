"""Carry out one RescuePlan, step by step, persisting its state machine as it goes.

:mod:`blackstart.rescue.crd.plans` says what comes next; this module does it. What must
not happen twice is written to the plan's status before it is done (see there),
so :meth:`PlanRunner.run` can be called again on a plan a killed controller left
half done: it continues from the first step not recorded as done, never orders a
second reboot, and keeps the drain's and the reboot's deadlines.

Errors the API server may recover from (429, 5xx, no connection) pause the plan
and retry the step; anything else fails the plan, visibly, with the error.
In dry-run plans every step is recorded with what it would do; nothing changes.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Iterable
from typing import Protocol

from kubernetes.client.exceptions import ApiException

from blackstart.rescue.controller.config import ControllerConfig
from blackstart.rescue.controller.drain import classify_pod, drain_node, plan_drain_round
from blackstart.rescue.controller.kube_api import KubeApi, is_retryable
from blackstart.rescue.controller.metrics import ControllerMetrics
from blackstart.rescue.controller.node_actions import (
    NodeView,
    cordon,
    cordoned_by_someone_else,
    uncordon,
)
from blackstart.rescue.controller.reboot import RebootDriver, RebootError, rebooted_and_ready
from blackstart.rescue.controller.standby import enable_standby, matched_labels, pick_standby
from blackstart.rescue.controller.storm_guard import StormGuard
from blackstart.rescue.crd.plans import (
    Phase,
    PlanRecord,
    Step,
    after_drain_timeout,
    format_time,
    next_step,
    parse_time,
    should_uncordon,
    steps_for,
)
from blackstart.rescue.crd.policy import NodeSelector, WarmStandbyPolicy
from blackstart.rescue.crd.waittime import format_waittime

__all__ = ["PlanContext", "PlanGone", "PlanRunner"]

log = logging.getLogger("blackstart.rescue.crd.plans")


class PlanGone(Exception):
    """The RescuePlan was deleted while it ran; the runner stops."""


class PlanContext(Protocol):
    """What a runner needs from the controller."""

    config: ControllerConfig
    api: KubeApi
    metrics: ControllerMetrics
    driver: RebootDriver
    storm_guard: StormGuard

    def node(self, name: str) -> NodeView | None: ...

    def remember(self, view: NodeView) -> None: ...

    def all_nodes(self) -> Iterable[NodeView]: ...

    async def wait_node_change(self, name: str, timeout: float) -> None: ...

    async def persist(self, plan: PlanRecord, before_acting: bool = False) -> None: ...

    def post_event(self, node: str, reason: str, message: str, warning: bool = False) -> None: ...

    def transitioned(self, plan: PlanRecord) -> None: ...

    def plans_for_node(self, node: str) -> list[PlanRecord]: ...

    def claimed_standbys(self) -> set[str]: ...

    def standby_policies(self) -> list[WarmStandbyPolicy]: ...

    def rule_selector(self, plan: PlanRecord) -> NodeSelector | None: ...


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class PlanRunner:
    """Runs one plan to its end (or until cancelled)."""

    def __init__(self, ctx: PlanContext, plan: PlanRecord) -> None:
        self.ctx = ctx
        self.plan = plan
        self.status = plan.status

    # --- helpers ----------------------------------------------------------------------------

    def _dry(self, text: str) -> str:
        return f"dry run: would {text}" if self.plan.dry_run else text

    def _enter(self, phase: Phase, message: str) -> None:
        self.status.enter(phase, _now(), message)
        self.ctx.transitioned(self.plan)
        log.info("plan %s (%s): %s: %s", self.plan.name, self.plan.node, phase, message)

    def _event(self, reason: str, message: str, warning: bool = False) -> None:
        prefix = "[dry run] " if self.plan.dry_run else ""
        self.ctx.post_event(
            self.plan.node, reason, f"{prefix}RescuePlan {self.plan.name}: {message}", warning
        )

    async def _fail(self, message: str) -> None:
        self._enter("Failed", message)
        await self.ctx.persist(self.plan)
        self._event("RescueFailed", message, warning=True)

    def _node(self) -> NodeView:
        node = self.ctx.node(self.plan.node)
        if node is None:
            raise _StepFailed(f"node {self.plan.node} no longer exists")
        return node

    def _waittime(self, action: str, default: dt.timedelta) -> dt.timedelta:
        ordered = self.plan.action(action)
        return ordered.waittime if ordered and ordered.waittime is not None else default

    # --- the run ----------------------------------------------------------------------------

    async def run(self) -> None:
        """Carry the plan out from where it stands; returns when it has ended."""
        delay = 1.0
        while not self.status.terminal:
            try:
                await self._run_steps()
                return
            except asyncio.CancelledError:
                raise
            except PlanGone:
                log.warning("plan %s was deleted while it ran; stopping", self.plan.name)
                return
            except _StepFailed as failure:
                await self._fail(str(failure))
                return
            except Exception as err:
                if not is_retryable(err):
                    await self._fail(f"the controller hit an error it cannot retry: {_brief(err)}")
                    return
                log.warning("plan %s: %s; retrying in %.0f s", self.plan.name, _brief(err), delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)

    async def _run_steps(self) -> None:
        status = self.status
        if not status.phase:
            await self._start()
        if status.node_was_cordoned is None:
            status.node_was_cordoned = cordoned_by_someone_else(self._node())
            await self.ctx.persist(self.plan, before_acting=True)
        while (step := next_step(self.plan.actions, status)) is not None:
            carried_on = await self._step(step)
            if not carried_on:
                return
            if next_step(self.plan.actions, status) is not None:
                await self.ctx.persist(self.plan)
        if status.standby_missing:
            self._enter(
                "Failed",
                "every action was carried out except enableWarmStandby: no warm standby node "
                "was available",
            )
            await self.ctx.persist(self.plan)
            self._event("RescueFailed", self.status.message, warning=True)
            return
        self._enter("Succeeded", self._dry("carry out " + self._actions_text()))
        await self.ctx.persist(self.plan)
        if len(steps_for(self.plan.actions)) > 1:  # one step: its own Event says it all
            self._event("RescueSucceeded", f"done: {self._actions_text()}")

    def _actions_text(self) -> str:
        parts = []
        for action in self.plan.actions:
            text: str = action.name
            if action.waittime is not None:
                text += f" (waittime {format_waittime(action.waittime)})"
            parts.append(text)
        return ", ".join(parts)

    async def _start(self) -> None:
        node = self.ctx.node(self.plan.node)
        hint = self.plan.node_was_cordoned_hint
        if hint is None and node is not None:
            hint = cordoned_by_someone_else(node)
        self.status.node_was_cordoned = hint
        xids = ", ".join(str(x) for x in self.plan.xids)
        self._enter(
            "Pending",
            f"Xid {xids} on {self.plan.node} ({self.plan.source}): {self._actions_text()}",
        )
        if self.plan.node_was_cordoned_hint is None:
            # nothing else recorded whether the node was cordoned before: write it first
            await self.ctx.persist(self.plan, before_acting=True)

    async def _step(self, step: Step) -> bool:
        if step is Step.CORDON:
            return await self._cordon()
        if step is Step.STANDBY:
            return await self._standby()
        if step is Step.DRAIN:
            return await self._drain()
        if step is Step.REBOOT:
            return await self._reboot()
        if step is Step.WAIT_READY:
            return await self._wait_ready()
        return await self._uncordon()

    # --- the steps --------------------------------------------------------------------------

    async def _cordon(self) -> bool:
        node = self._node()
        status = self.status
        if status.node_was_cordoned:
            message = (
                f"{node.name} was already cordoned by someone else; left as it is, and it will "
                "not be uncordoned by this plan"
            )
        else:
            if not self.plan.dry_run:
                self.ctx.remember(await cordon(self.ctx.api, node.name, self.plan.name))
            message = self._dry(f"cordon {node.name}")
        now = _now()
        status.cordoned_at = format_time(now)
        if not self.plan.dry_run and self.plan.source == "policy":
            first = parse_time(self.plan.first_seen_at)
            if first is not None:
                self.ctx.metrics.xid_to_cordon.observe(max(0.0, (now - first).total_seconds()))
        status.complete(Step.CORDON)
        self._enter("Cordoned", message)
        self._event("Cordoned", message)
        return True

    async def _standby(self) -> bool:
        status = self.status
        failed = self._node()
        if status.standby_node is None:
            choice = pick_standby(
                failed,
                self.ctx.all_nodes(),
                self.ctx.config.standby,
                self.ctx.claimed_standbys(),
                self.ctx.standby_policies(),
            )
            if choice is None:
                status.standby_missing = True
                status.complete(Step.STANDBY)
                status.message = f"no warm standby node is available to replace {failed.name}"
                self._event("NoWarmStandby", status.message, warning=True)
                return True
            status.standby_node = choice
            status.standby_labels = matched_labels(
                failed, self.ctx.rule_selector(self.plan), self.ctx.standby_policies()
            )
            await self.ctx.persist(self.plan, before_acting=True)  # the choice, before the swap
        assert status.standby_node is not None
        if not self.plan.dry_run:
            swapped = await enable_standby(
                self.ctx.api,
                status.standby_node,
                failed.name,
                status.standby_labels,
                self.ctx.config.standby,
                self.plan.name,
            )
            self.ctx.remember(swapped)
        status.complete(Step.STANDBY)
        labels = ", ".join(f"{k}={v}" for k, v in sorted(status.standby_labels.items()))
        message = self._dry(
            f"make warm standby {status.standby_node} schedulable in place of {failed.name}"
            + (f" with labels {labels}" if labels else "")
        )
        self._enter("Replaced", message)
        self._event("WarmStandbyEnabled", message)
        return True

    async def _drain(self) -> bool:
        status = self.status
        node = self._node()
        waittime = self._waittime("drain", self.ctx.config.default_drain_waittime)
        if status.drain_started_at is None:
            status.drain_started_at = format_time(_now())
            self._enter(
                "Draining", self._dry(f"drain {node.name} (waittime {format_waittime(waittime)})")
            )
            await self.ctx.persist(self.plan, before_acting=True)  # the start, before evicting
        started = parse_time(status.drain_started_at) or _now()
        deadline = started + waittime
        escalate = parse_time(self.plan.escalate_time)
        if escalate is not None:
            deadline = min(deadline, escalate)
        if self.plan.dry_run:
            pods = [classify_pod(p) for p in await self.ctx.api.list_pods_on_node(node.name)]
            round_ = plan_drain_round(pods, self.ctx.config.drain)
            refs = ", ".join(p.ref for p in round_.evict[:10]) or "none"
            status.message = f"dry run: would evict {len(round_.evict)} pods ({refs})"
            status.complete(Step.DRAIN)
            self._event("Drained", status.message)
            return True

        async def notify(message: str) -> None:
            self._event("EvictingUnprotectedPod", message, warning=True)

        result = await drain_node(
            self.ctx.api,
            node.name,
            deadline,
            self.ctx.config.drain,
            notify=notify,
            retry_seconds=self.ctx.config.drain_retry_seconds,
        )
        status.evicted_pods += result.evicted
        status.eviction_retries += result.retries
        if result.done:
            status.drained_at = format_time(_now())
            status.message = (
                f"drained {node.name}: {status.evicted_pods} pods evicted, "
                f"{status.eviction_retries} evictions retried after a PodDisruptionBudget refused"
            )
            status.complete(Step.DRAIN)
            self._event("Drained", status.message)
            return True
        if after_drain_timeout(self.plan.actions) == "escalate":
            status.complete(Step.DRAIN)
            status.message = f"{result.reason}; escalating to the reboot"
            self._event("DrainEscalated", status.message, warning=True)
            return True
        await self._fail(f"{result.reason}; {node.name} stays cordoned")
        return False

    async def _reboot(self) -> bool:
        status = self.status
        node = self._node()
        driver = self.ctx.driver
        if status.reboot_issued_at is None:
            now = _now()
            earlier = [
                moment
                for other in self.ctx.plans_for_node(node.name)
                if other.name != self.plan.name and not other.dry_run
                for moment in [parse_time(other.status.reboot_issued_at)]
                if moment is not None
            ]
            refusal = (
                None if self.plan.dry_run else self.ctx.storm_guard.reboot_allowed(earlier, now)
            )
            if refusal is not None:
                self.ctx.metrics.refusals.labels("reboot-cap").inc()
                await self._fail(refusal)
                return False
            status.reboot_issued_at = format_time(now)
            status.boot_id_before_reboot = node.boot_id
            self._enter(
                "Rebooting", self._dry(f"reboot {node.name} through the {driver.name} driver")
            )
            await self.ctx.persist(self.plan, before_acting=True)  # never ordered twice
            if not self.plan.dry_run:
                try:
                    await driver.issue(node, self.plan.name)
                except RebootError as err:
                    raise _StepFailed(str(err)) from None
                self.ctx.metrics.reboots.labels(driver.name).inc()
            self._event("Rebooting", status.message)
        status.complete(Step.REBOOT)
        return True

    async def _wait_ready(self) -> bool:
        status = self.status
        issued = parse_time(status.reboot_issued_at) or _now()
        waittime = self._waittime("reboot", self.ctx.config.default_reboot_waittime)
        deadline = issued + waittime
        if status.phase != "WaitingReady":
            self._enter(
                "WaitingReady",
                self._dry(
                    f"wait up to {format_waittime(waittime)} for {self.plan.node} to be Ready"
                ),
            )
            await self.ctx.persist(self.plan)
        if self.plan.dry_run:
            status.complete(Step.WAIT_READY)
            return True
        while True:
            node = self._node()
            now = _now()
            if rebooted_and_ready(
                node,
                status.boot_id_before_reboot,
                issued,
                now,
                self.ctx.driver.restart_is_synchronous,
            ):
                break
            if now >= deadline:
                await self._fail(
                    f"{node.name} was not Ready again within {format_waittime(waittime)} of the "
                    "reboot order; it stays cordoned (the reboot is never ordered twice)"
                )
                return False
            await self.ctx.driver.progress(node, issued, now)
            remaining = (deadline - now).total_seconds()
            await self.ctx.wait_node_change(node.name, timeout=min(1.0, max(0.05, remaining)))
        status.ready_at = format_time(_now())
        status.complete(Step.WAIT_READY)
        await self.ctx.driver.finish(node)
        took = (parse_time(status.ready_at) or issued) - issued
        status.message = f"{node.name} is Ready again, {took.total_seconds():.1f} s after the order"
        self._event("NodeReady", status.message)
        return True

    async def _uncordon(self) -> bool:
        status = self.status
        node = self._node()
        status.complete(Step.UNCORDON)
        if not should_uncordon(status):
            status.message = (
                f"{node.name} left cordoned: it was cordoned before the plan began (by an "
                "administrator or another tool); the controller never uncordons such a node"
            )
            self._event("LeftCordoned", status.message)
            return True
        if not self.plan.dry_run:
            self.ctx.remember(await uncordon(self.ctx.api, node.name))
        message = self._dry(f"uncordon {node.name}")
        self._enter("Uncordoned", message)
        self._event("Uncordoned", message)
        return True


class _StepFailed(Exception):
    """A step cannot be carried out; the plan fails with this message."""


def _brief(err: BaseException) -> str:
    if isinstance(err, ApiException):
        return f"API server answered {err.status} {err.reason}"
    return f"{type(err).__name__}: {err}"[:300]
