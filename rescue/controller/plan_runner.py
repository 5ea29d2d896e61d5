"""Carry out one RescuePlan, step by step, persisting its state machine as it goes.

:mod:`blackstart.rescue.crd.plans` says what comes next; this module does it. What must
not happen twice is written to the plan's status before it is done (see there),
so :meth:`PlanRunner.run` can be called again on a plan a killed controller left
half done: it continues from the first step not recorded as done, never orders a
second reboot, and keeps the drain's and the reboot's deadlines. The steps are in
:mod:`.node_steps`, :mod:`.drain_step` and :mod:`.reboot_steps`.

Whatever way a plan ends, what it asked of the node for the reboot (the
``reboot-requested`` annotation, the local driver's not-ready stage) is taken back.

Errors the API server may recover from (429, 5xx, no connection) pause the plan
and retry the step; anything else fails the plan, visibly, with the error.
In dry-run plans every step is recorded with what it would do; nothing changes.
"""

from __future__ import annotations

import asyncio
import logging
import time

from blackstart.rescue.controller.drain_step import DrainStep
from blackstart.rescue.controller.kube_api import is_denied, is_retryable
from blackstart.rescue.controller.node_actions import NodeView, cordoned_by_someone_else
from blackstart.rescue.controller.node_steps import NodeSteps
from blackstart.rescue.controller.reboot_steps import RebootSteps
from blackstart.rescue.controller.runner_base import (
    PlanContext,
    PlanGone,
    StepFailed,
    brief,
)
from blackstart.rescue.controller.validate_step import ValidateStep
from blackstart.rescue.crd.plans import Step, next_step, steps_for
from blackstart.rescue.crd.waittime import format_waittime

__all__ = ["PlanContext", "PlanGone", "PlanRunner"]

log = logging.getLogger("blackstart.rescue.crd.plans")

DENIED_GRACE = 60.0
"""Seconds a plan retries permission errors (401, 403) before it fails on them."""


class PlanRunner(NodeSteps, DrainStep, RebootSteps, ValidateStep):
    """Runs one plan to its end (or until cancelled)."""

    async def run(self) -> None:
        """Carry the plan out from where it stands; returns when it has ended.

        Errors the API server may recover from are retried with backoff; so are
        permission errors for :data:`DENIED_GRACE` (an API server that just restarted
        answers 403 until its authorizer has synced). The plan's last state is written
        even when the API server was away at the moment it ended.
        """
        delay = 1.0
        denied_since: float | None = None
        while not self.status.terminal:
            failure = None
            try:
                await self._run_steps()
                break
            except asyncio.CancelledError:
                raise
            except PlanGone:
                log.warning("plan %s was deleted while it ran; stopping", self.plan.name)
                return
            except StepFailed as step:
                failure = str(step)
            except Exception as err:
                if self.status.terminal:
                    break  # it ended; its last write is retried below
                now = time.monotonic()
                if is_denied(err):
                    denied_since = denied_since if denied_since is not None else now
                if is_retryable(err) or (
                    is_denied(err) and now - (denied_since or now) < DENIED_GRACE
                ):
                    self.last_error = brief(err)
                    log.warning(
                        "plan %s: %s; retrying in %.0f s", self.plan.name, brief(err), delay
                    )
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 30.0)
                    continue
                failure = f"the controller hit an error it cannot retry: {brief(err)}"
            if failure is not None and not self.status.terminal:
                self._enter("Failed", failure)
                self._event("RescueFailed", failure, warning=True)
        if self.status.terminal:
            await self._write_end()
            await self.release_node()

    async def _write_end(self) -> None:
        """Write the ended plan until the API server has it (or the plan is gone)."""
        delay = 1.0
        while self.plan.saved_phase != self.status.phase:
            try:
                await self.ctx.persist(self.plan)
            except PlanGone:
                return
            except asyncio.CancelledError:
                raise
            except Exception as err:
                if not (is_retryable(err) or is_denied(err)):
                    log.error(
                        "plan %s ended %s and the API server refuses the record: %s",
                        self.plan.name,
                        self.status.phase,
                        brief(err),
                    )
                    return
                log.warning(
                    "plan %s ended %s, not written yet: %s; retrying in %.0f s",
                    self.plan.name,
                    self.status.phase,
                    brief(err),
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)

    async def release_node(self, attempts: int = 5) -> None:
        """Take back what the plan asked of the node for its reboot (any ending; best effort).

        The controller's sweep clears a ``reboot-requested`` annotation this misses.
        """
        if self.plan.dry_run or self.status.reboot_issued_at is None:
            return
        delay = 0.5
        for attempt in range(attempts):
            node = self.ctx.node(self.plan.node)
            if node is None:
                return
            try:
                await self.ctx.driver.finish(node)
                return
            except Exception as err:
                if attempt + 1 == attempts or not is_retryable(err):
                    log.warning(
                        "plan %s: could not take back the reboot request on %s: %s",
                        self.plan.name,
                        node.name,
                        brief(err),
                    )
                    return
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    async def _run_steps(self) -> None:
        status = self.status
        if not status.phase:
            await self._start()
        if status.node_was_cordoned is None:
            fresh = NodeView.from_object(await self.ctx.api.get_node(self.plan.node))
            status.node_was_cordoned = cordoned_by_someone_else(fresh, {self.plan.name})
            await self.ctx.persist(self.plan, before_acting=True)
        validate = self.plan.validation is not None
        while (step := next_step(self.plan.actions, status, validate)) is not None:
            carried_on = await self._step(step)
            if not carried_on:
                return
            if next_step(self.plan.actions, status, validate) is not None:
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
        self.status.node_was_cordoned = self.plan.node_was_cordoned_hint
        xids = ", ".join(str(x) for x in self.plan.xids)
        self._enter(
            "Pending",
            f"Xid {xids} on {self.plan.node} ({self.plan.source}): {self._actions_text()}",
        )
        # no write yet: the hint is on the plan, or (none) _run_steps reads the node and
        # writes whether it was cordoned, before any step acts

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
        if step is Step.VALIDATE:
            return await self._validate()
        return await self._uncordon()
