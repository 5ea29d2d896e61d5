"""RescuePlans from the watch that the controller did not make, and plans being deleted.

**Plans made by someone else** (a person, a script, another tool: any plan this
process did not create and that no controller has started, its status still empty)
go through the gate the controller's own plans go through, or are refused with a
status that says why (phase ``Refused``): the decision-API mode (plans then come
only from its orders), dry-run mode (only dry-run plans), one plan per node, and
the storm guard. The ``node-was-cordoned`` annotation of such a plan is not
trusted: the runner reads the node itself. A user may create RescuePlans but not
write their status (``rescueplans/status`` is the controller's), so an empty
status is what marks a plan no controller has taken up.

**Deleting a running plan** must not strand its node cordoned and annotated: every
plan carries the finalizer ``rescue.blackstart.dev/release-node``. When a plan is
deleted the controller stops its runner, and if the plan was still running it
releases the node (uncordons it if the plan's cordon is on it, takes back the
reboot request), then removes the finalizer. An ended plan is let go as it is: what
it left (a node cordoned for a person) is the record a person acts on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from kubernetes.client.exceptions import ApiException

from blackstart.names import PLAN_FINALIZER
from blackstart.rescue.controller.admission import Admission
from blackstart.rescue.controller.incident import now_utc
from blackstart.rescue.controller.node_actions import uncordon
from blackstart.rescue.controller.runner_base import PlanGone, brief
from blackstart.rescue.crd.plans import PlanRecord

__all__ = ["PlanEvents"]

log = logging.getLogger("blackstart.rescue.controller")


class PlanEvents(Admission):
    """Foreign plans admitted or refused; deleted plans release their node."""

    def _foreign(self, plan: PlanRecord) -> bool:
        """A plan no controller has taken up and this process did not make."""
        return plan.active and not plan.status.phase and plan.name not in self._ours

    def _gate(self, plan: PlanRecord) -> str | None:
        """Why the plan may not run now (``None``: it may). Under the admission lock."""
        if plan.node not in self.nodes:
            return f"node {plan.node} is not a node of this cluster"
        if self.config.decision_api:
            return (
                "the controller takes its orders from the decision API only (--decision-api); "
                "it runs no RescuePlan made otherwise"
            )
        if self.config.dry_run and not plan.dry_run:
            return (
                "the controller runs in dry-run mode: it carries out no plan that is not a dry "
                "run (spec.dryRun: true)"
            )
        active = self._active_plan(plan.node)
        if active is not None:
            return f"RescuePlan {active.name} is still running on {plan.node}: one plan per node"
        refusal = self._admission_refusal(self.rule_selector(plan))
        if refusal is not None:
            self.metrics.refusals.labels(refusal.reason).inc()
            return f"storm guard: {refusal.detail}"
        return None

    async def _admit_foreign(self, plan: PlanRecord) -> None:
        """Run ``plan`` if the gate lets it through, else mark it Refused, saying why."""
        async with self._admission:
            self._forget_plan(plan.name)  # weighed as a newcomer, not as already running
            reason = self._gate(plan)
            plan.node_was_cordoned_hint = None  # not trusted: the runner reads the node
            self._hold(plan)
        if reason is not None:
            message = f"refused: {reason}"
            plan.status.enter("Refused", now_utc(), message)
            self.transitioned(plan)
            log.warning("RescuePlan %s made outside the controller %s", plan.name, message)
            self.post_event(plan.node, "RescueRefused", f"RescuePlan {plan.name} {message}", True)
            with contextlib.suppress(PlanGone):
                await self.persist(plan)
            return
        log.info("RescuePlan %s made outside the controller admitted on %s", plan.name, plan.node)
        try:
            await self._ensure_finalizer(plan)
        except ApiException as err:
            if err.status == 404:
                self._forget_plan(plan.name)
                return
            raise
        self._start_runner(plan)

    async def _ensure_finalizer(self, plan: PlanRecord) -> None:
        """Put the release finalizer on a plan that lacks it (made elsewhere, or before it)."""
        if PLAN_FINALIZER in plan.finalizers or plan.deleting:
            return
        operations: list[dict[str, Any]] = [
            {"op": "add", "path": "/metadata/finalizers/-", "value": PLAN_FINALIZER}
        ]
        if not plan.finalizers:
            operations = [{"op": "add", "path": "/metadata/finalizers", "value": [PLAN_FINALIZER]}]
        written = await self.api.json_patch_plan(plan.name, operations)
        plan.finalizers = (*plan.finalizers, PLAN_FINALIZER)
        plan.saw_version(written)

    async def _plan_deleting(self, plan: PlanRecord) -> None:
        """The plan was deleted: stop its runner, release its node if it ran, let it go."""
        if plan.name in self._releasing:
            return
        self._releasing.add(plan.name)
        try:
            task = self._running.pop(plan.name, None)
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            known = self.plans.get(plan.name, plan)
            if known.active and not known.dry_run:
                await self._release_deleted(known)
            await self._remove_finalizer(plan.name)
            self._forget_plan(plan.name)
        except Exception as err:
            # the finalizer stays: the sweep tries again
            log.warning("could not release the node of deleted plan %s: %s", plan.name, brief(err))
        finally:
            self._releasing.discard(plan.name)

    async def _release_deleted(self, plan: PlanRecord) -> None:
        node = self.nodes.get(plan.node)
        if node is None:
            return
        done = []
        if node.cordoned_by == plan.name and plan.status.node_was_cordoned is not True:
            view = await uncordon(self.api, node.name, plan.name)
            if view is not None:
                self.remember(view)
                done.append("uncordoned")
        if plan.status.reboot_issued_at is not None:
            await self.driver.finish(self.nodes.get(plan.node) or node)
            done.append("its reboot request taken back")
        message = (
            f"RescuePlan {plan.name} was deleted while it ran "
            f"({plan.status.phase or 'not started yet'}): {node.name} "
            + (", ".join(done) if done else "left as it was")
        )
        log.warning(message)
        self.post_event(node.name, "RescueAborted", message, warning=True)

    async def _remove_finalizer(self, name: str) -> None:
        for _ in range(3):
            try:
                current = await self.api.get_plan(name)
            except ApiException as err:
                if err.status == 404:
                    return
                raise
            finalizers = list((current.get("metadata") or {}).get("finalizers") or [])
            if PLAN_FINALIZER not in finalizers:
                return
            index = finalizers.index(PLAN_FINALIZER)
            path = f"/metadata/finalizers/{index}"
            try:
                await self.api.json_patch_plan(
                    name,
                    [
                        {"op": "test", "path": path, "value": PLAN_FINALIZER},
                        {"op": "remove", "path": path},
                    ],
                )
                return
            except ApiException as err:
                if err.status == 404:
                    return
                if err.status not in (409, 422):
                    raise
        raise RuntimeError(f"the finalizer of RescuePlan {name} kept changing")
