"""Creating RescuePlans, running them, persisting their status, posting Events."""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

from kubernetes.client.exceptions import ApiException

from blackstart.names import CONTROLLER_REPORTER as REPORTING_CONTROLLER
from blackstart.rescue.controller.incident import (
    Incident,
    now_utc,
)
from blackstart.rescue.controller.kube_api import ACT, CONTAIN, RECORD
from blackstart.rescue.controller.memory import ControllerMemory
from blackstart.rescue.controller.node_actions import (
    CordonTaken,
    EarlyCordon,
    cordon,
    cordoned_by_someone_else,
)
from blackstart.rescue.controller.plan_runner import PlanGone, PlanRunner
from blackstart.rescue.crd.plans import (
    PlanRecord,
    Step,
    format_time,
    next_step,
    plan_body,
)

EVENT_COMPONENT = "blackstart-rescue-controller"

log = logging.getLogger("blackstart.rescue.controller")


class PlanExecution(ControllerMemory):
    """Plans from record to end: created once, run by a :class:`PlanRunner`, persisted."""

    async def _retry_deferred(self) -> None:
        """Admit incidents that waited for room; :class:`.admission.Admission` does it."""

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _create_and_run(self, plan: PlanRecord, incident: Incident | None) -> None:
        body = plan_body(
            plan.name,
            plan.node,
            plan.xids,
            plan.actions,
            source="policy" if plan.source == "policy" else "decision-api",
            dry_run=plan.dry_run,
            node_was_cordoned=bool(plan.node_was_cordoned_hint),
            report_ids=plan.report_ids,
            first_seen_at=plan.first_seen_at,
            rule=incident.rule if incident is not None else None,
            escalate_time=plan.escalate_time,
            validation=plan.validation,
        )
        await self._cordon_ahead(plan)
        try:
            created = await self.api.create_plan(body)
        except ApiException as err:
            self._early_cordons.pop(plan.name, None)
            if err.status == 409:
                # made before (by us, before a restart): the stored plan is the truth
                self._forget_plan(plan.name)
                existing = self._set_plan(await self.api.get_plan(plan.name))
                if existing is not None and existing.active:
                    self._start_runner(existing)
                return
            self._forget_plan(plan.name)
            raise
        except BaseException:
            self._early_cordons.pop(plan.name, None)
            self._forget_plan(plan.name)
            raise
        plan.saw_version(created)
        self.metrics.plans_started.labels(plan.source).inc()
        self.metrics.plans_active.set(sum(1 for p in self.plans.values() if p.active))
        self._start_runner(plan)

    async def _cordon_ahead(self, plan: PlanRecord) -> None:
        """Cordon the node of a new plan whose first step is the cordon, before the plan
        is created: the cordon is what stops the spread, so it goes first (at
        :data:`CONTAIN` priority, deciding on the watch cache's view: one request in
        the common case); the plan's record and its Events follow.

        Restart safety: the cordon names the plan, whose name follows from the node and
        its first Xid report. A controller that dies before the plan is created finds,
        when it starts again, the same report unplanned and the node cordoned in that
        plan's name; it makes the same plan, takes the cordon for the plan's own
        (:meth:`.admission.Admission._reserve_plan`) and carries on; if it stayed down
        longer than the maximum report age, the report is ignored as too old and the
        node stays cordoned in the name of a plan never made, for a person to look at,
        as a Failed plan leaves it. When this cordon fails, nothing is recorded and the
        plan's cordon step does it as usual.
        """
        first = next_step(plan.actions, plan.status, plan.validation is not None)
        if plan.dry_run or first is not Step.CORDON:
            return
        view = self.nodes.get(plan.node)
        if view is None or cordoned_by_someone_else(view, (plan.name,)):
            return  # someone else's cordon: the cordon step reads the node and records it
        try:
            cordoned = await cordon(self.api, plan.node, plan.name, known=view, priority=CONTAIN)
            early = EarlyCordon(cordoned, taken=False, at=now_utc())
        except CordonTaken as found:
            early = EarlyCordon(found.view, taken=True, at=now_utc())
        except asyncio.CancelledError:
            raise
        except Exception as err:
            log.warning(
                "could not cordon %s ahead of plan %s (its cordon step tries again): %s",
                plan.node,
                plan.name,
                err,
            )
            return
        self.remember(early.view)
        self._early_cordons[plan.name] = early

    def _start_runner(self, plan: PlanRecord) -> None:
        if plan.name in self._running or not plan.active:
            return
        task = asyncio.create_task(self._run(plan), name=f"plan {plan.name}")
        self._running[plan.name] = task

    async def _run(self, plan: PlanRecord) -> None:
        try:
            await PlanRunner(self, plan).run()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("plan %s stopped on an unexpected error", plan.name)
        finally:
            self._running.pop(plan.name, None)
            self.metrics.plans_active.set(sum(1 for p in self.plans.values() if p.active))
            if plan.status.terminal:
                self.metrics.plans.labels(plan.status.phase).inc()
                self._spawn(self._retry_deferred())

    async def persist(self, plan: PlanRecord, before_acting: bool = False) -> None:
        """Write the plan's status (one write at a time per plan).

        ``before_acting``: the write records what must be known before a step acts
        (it then goes out with the actions, ahead of other records).
        """
        lock = self._persist_locks.setdefault(plan.name, asyncio.Lock())
        async with lock:
            try:
                written = await self.api.patch_plan_status(
                    plan.name, plan.status.to_object(), ACT if before_acting else RECORD
                )
                plan.saw_version(written)
                plan.saved_phase = str((written.get("status") or {}).get("phase") or "")
            except ApiException as err:
                if err.status == 404:
                    raise PlanGone(plan.name) from err
                raise
        if plan.status.terminal:
            self._persist_locks.pop(plan.name, None)

    def transitioned(self, plan: PlanRecord) -> None:
        """Record the plan's latest transition in the journal."""
        last = plan.status.transitions[-1] if plan.status.transitions else {}
        self.journal.record(
            {
                "time": last.get("time"),
                "plan": plan.name,
                "node": plan.node,
                "phase": last.get("phase"),
                "message": last.get("message", ""),
                "xids": list(plan.xids),
                "source": plan.source,
                "dryRun": plan.dry_run,
            }
        )

    def post_event(self, node: str, reason: str, message: str, warning: bool = False) -> None:
        """Post an Event on ``node`` in the background (it never holds up a plan)."""
        self._spawn(self._post_event(node, reason, message, warning))

    async def _post_event(self, node: str, reason: str, message: str, warning: bool) -> None:
        view = self.nodes.get(node)
        now = now_utc()
        involved: dict[str, Any] = {"apiVersion": "v1", "kind": "Node", "name": node}
        if view is not None and view.uid:
            involved["uid"] = view.uid
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "name": f"{node[:200]}.rescue.{uuid.uuid4().hex[:12]}",
                "namespace": self.config.namespace,
            },
            "involvedObject": involved,
            "type": "Warning" if warning else "Normal",
            "reason": reason,
            "message": message[:1024],
            "source": {"component": EVENT_COMPONENT},
            "reportingComponent": REPORTING_CONTROLLER,
            "reportingInstance": self.config.instance[:128],
            "action": reason,
            "count": 1,
            "firstTimestamp": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "lastTimestamp": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "eventTime": format_time(now),
        }
        try:
            await self.api.create_event(self.config.namespace, body)
        except Exception as err:
            log.warning("could not post Event %s on %s: %s", reason, node, err)
