"""The GPU self-heal controller: Xid signals in, RescuePlans out, carried out to the end.

kopf runs the watches (:mod:`.kopf_wiring`); :class:`Controller` holds what they
show in memory and decides:

- **Nodes** (all of them: the storm guard needs the size of the fleet, the warm
  standby its standbys) are kept as small :class:`NodeView` records. A node whose
  ``GPUXidError`` condition holds Xid reports the controller has not handled is an
  incident (the condition is the agent's durable signal, see
  :mod:`blackstart.rescue.wire.signal`).
- **RescuePolicies and WarmStandbyPolicies** are parsed as they change; a malformed
  one (the API server's schema should have stopped it) is ignored with a Warning.
- **RescuePlans** are the memory of what was handled: a plan's name derives from the
  node and its first report id, its spec lists the report ids it covers, so a
  restarted controller neither acts twice nor loses an incident. Plans still running
  when the controller stopped are resumed at start
  (:mod:`blackstart.rescue.controller.plan_runner`).

For each new incident: the rule is chosen (:func:`blackstart.rescue.crd.policy.select_rule`,
thresholds applied), a node already under remediation absorbs the reports into its
running plan, the storm guard admits or refuses (a refused node is retried when a
plan ends), and an admitted incident becomes a RescuePlan that starts at once.

With the decision API on, Xid reports are only counted; plans come from HTTP orders.

The only LISTs are the ones at start-up (one per kind, in chunks) that fill the
memory before the watches run; everything after comes from kopf's watches.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

import kopf
from kubernetes.client.exceptions import ApiException

from blackstart.names import REBOOT_REQUESTED_ANNOTATION, RESCUE_POLICIES, WARM_STANDBY_POLICIES
from blackstart.rescue.controller.decision_api import OrderRefused, RescueOrder
from blackstart.rescue.controller.incident import (
    now_utc,
    resource_version,
)
from blackstart.rescue.controller.node_actions import NodeView, cordoned_by_someone_else
from blackstart.rescue.controller.plan_events import PlanEvents
from blackstart.rescue.controller.standby import available_standbys
from blackstart.rescue.crd.plans import (
    PLURAL,
    PlanRecord,
    api_plan_name,
    parse_time,
    plan_body,
)
from blackstart.rescue.crd.policy import (
    PRECONDITION_FAILURE,
    PolicyError,
    check_preconditions,
)

log = logging.getLogger("blackstart.rescue.controller")


class Controller(PlanEvents):
    """The controller: life cycle, watch events, background loops, decision-API orders.

    Its memory (:mod:`.memory`), plan execution (:mod:`.execution`) and intake with
    admission (:mod:`.admission`) are the classes it builds on.
    """

    async def start(self) -> None:
        """Fill the memory (one chunked LIST per kind), resume plans, start the sweepers.

        Raises :class:`kopf.PermanentError` (the operator stops) when the CRDs are not
        installed or the identity may not read what it needs.
        """
        try:
            await self._load()
        except ApiException as err:
            if err.status == 404:
                raise kopf.PermanentError(
                    "the rescue.blackstart.dev CRDs are not installed on this cluster: run "
                    "`blackstart rescue install --kubeconfig <admin kubeconfig>` first"
                ) from err
            if err.status in (401, 403):
                raise kopf.PermanentError(
                    f"the controller's identity may not read nodes, policies or plans "
                    f"({err.status} {err.reason}): apply rescue/deploy/controller-rbac.yaml "
                    "(`blackstart rescue install`)"
                ) from err
            raise
        resumed = []
        for plan in list(self.plans.values()):
            if plan.deleting:
                self._spawn(self._plan_deleting(plan))
            elif self._foreign(plan):
                self._admitting.add(plan.name)
                self._spawn(self._admit_foreign_once(plan))
            elif plan.active:
                resumed.append(plan)
                self._spawn(self._resume(plan))
        log.info(
            "controller ready: %d nodes, %d RescuePolicies, %d WarmStandbyPolicies, %d plans "
            "(%d resumed)%s%s",
            len(self.nodes),
            len(self.policies),
            len(self.warm_standby),
            len(self.plans),
            len(resumed),
            ", dry run" if self.config.dry_run else "",
            ", decision API mode" if self.config.decision_api else "",
        )
        self.metrics.plans_active.set(len(resumed))
        self._background.append(asyncio.create_task(self._sweep_loop()))
        self._background.append(asyncio.create_task(self._deferred_loop()))
        self.ready.set()
        self.metrics.ready.set(1)
        # Xids that came before the watches run: their first listing repeats them, harmlessly
        for name in list(self.nodes):
            if self.nodes[name].xid_message:
                self._spawn(self._intake(name))

    async def _load(self) -> None:
        for obj in await self.api.list_custom(RESCUE_POLICIES):
            self._set_policy(obj)
        for obj in await self.api.list_custom(WARM_STANDBY_POLICIES):
            self._set_warm_standby(obj)
        for obj in await self.api.list_nodes():
            self.remember(NodeView.from_object(obj))
        for obj in await self.api.list_custom(PLURAL):
            self._set_plan(obj)

    async def stop(self) -> None:
        """Cancel the sweepers and the running plans (they resume at the next start)."""
        for task in [*self._background, *self._running.values(), *self._tasks]:
            task.cancel()
        await asyncio.gather(
            *self._background, *self._running.values(), *self._tasks, return_exceptions=True
        )

    async def on_node(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        """A Node event from the watch: update the memory; act on new Xid reports."""
        name = str((body.get("metadata") or {}).get("name", ""))
        if event_type == "DELETED":
            self.forget_node(name)
            self._memory.pop(name, None)
            self._deferred.pop(name, None)
            self.tracker.forget(name)
        else:
            self.remember(NodeView.from_object(body))
        waiter = self._node_waiters.pop(name, None)
        if waiter is not None:
            waiter.set()
        if event_type != "DELETED" and self.ready.is_set() and self.nodes[name].xid_message:
            await self._intake(name)

    async def on_policy(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        """A RescuePolicy event."""
        if event_type == "DELETED":
            self.policies.pop(str(body["metadata"]["name"]), None)
        else:
            self._set_policy(body)

    async def on_warm_standby_policy(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        """A WarmStandbyPolicy event."""
        if event_type == "DELETED":
            self.warm_standby.pop(str(body["metadata"]["name"]), None)
        else:
            self._set_warm_standby(body)

    async def on_plan(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        """A RescuePlan event: keep the memory; gate plans made by someone else; release the
        node of a plan deleted while it ran (:mod:`.plan_events`)."""
        metadata = body.get("metadata") or {}
        name = str(metadata.get("name", ""))
        if event_type == "DELETED":
            known = self.plans.get(name)
            if known is not None and known.active and self.ready.is_set():
                await self._plan_deleting(known)  # it had no finalizer: release what we can
            task = self._running.pop(name, None)
            if task is not None:
                task.cancel()
            self._forget_plan(name)
            return
        if metadata.get("deletionTimestamp"):
            if self.ready.is_set() and name not in self._releasing:
                deleted: PlanRecord | None
                try:
                    deleted = PlanRecord.from_object(body)
                except (PolicyError, ValueError, TypeError):
                    deleted = self.plans.get(name)
                if deleted is not None:
                    self._spawn(self._plan_deleting(deleted))
            return
        if name in self._running or name in self._admitting:
            return  # the runner's own copy is the newer one
        known = self.plans.get(name)
        version = resource_version(body)
        if known is not None and version and known.resource_version >= version:
            return  # an event older than what our own writes returned: stale
        plan = self._set_plan(body)
        if plan is None or not plan.active or not self.ready.is_set():
            return
        if self._foreign(plan):
            self._admitting.add(name)
            self._spawn(self._admit_foreign_once(plan))
        else:
            self._start_runner(plan)

    async def _admit_foreign_once(self, plan: PlanRecord) -> None:
        try:
            await self._admit_foreign(plan)
        finally:
            self._admitting.discard(plan.name)

    async def _resume(self, plan: PlanRecord) -> None:
        try:
            await self._ensure_finalizer(plan)  # a plan made before plans had one
        except Exception as err:
            log.warning("could not put the finalizer on plan %s: %s", plan.name, err)
        self._start_runner(plan)

    async def _deferred_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.deferred_retry_seconds)
            try:
                await self._retry_deferred()
            except Exception:
                log.exception("retrying refused incidents failed")

    async def _sweep_loop(self) -> None:
        """Delete ended plans older than the TTL (from memory: no LIST)."""
        interval = max(1.0, min(60.0, self.config.plans_ttl.total_seconds() / 4))
        while True:
            await asyncio.sleep(interval)
            now = now_utc()
            await self._repair()
            for plan in list(self.plans.values()):
                if plan.active or plan.name in self._running or plan.deleting:
                    continue
                ended = parse_time(plan.status.finished_at) or parse_time(plan.created_at)
                if ended is None or now - ended < self.config.plans_ttl:
                    continue
                try:
                    await self.api.delete_plan(plan.name)
                except ApiException as err:
                    if err.status != 404:
                        log.warning("could not delete expired plan %s: %s", plan.name, err.reason)
                        continue
                except Exception as err:
                    log.warning("could not delete expired plan %s: %s", plan.name, err)
                    continue
                self._forget_plan(plan.name)

    async def _repair(self) -> None:
        """Finish what an outage interrupted: deleted plans still holding their node, and
        reboot requests of plans that are no longer running."""
        for plan in list(self.plans.values()):
            if plan.deleting and plan.name not in self._releasing:
                await self._plan_deleting(plan)
        active = self.active_plan_names()
        for node in list(self.nodes.values()):
            requested = node.annotations.get(REBOOT_REQUESTED_ANNOTATION)
            if requested is None or requested in active:
                continue
            try:
                self.remember(
                    NodeView.from_object(
                        await self.api.patch_node(
                            node.name,
                            {"metadata": {"annotations": {REBOOT_REQUESTED_ANNOTATION: None}}},
                        )
                    )
                )
                log.info(
                    "took back the reboot request of ended plan %s on %s", requested, node.name
                )
            except Exception as err:
                log.warning("could not take back the reboot request on %s: %s", node.name, err)

    async def order(self, order: RescueOrder, request_key: str) -> str:
        """Make and start a plan for a decision-API order; raise :class:`OrderRefused`."""
        failure = check_preconditions(order.actions)
        if failure is not None:
            raise OrderRefused(failure, 422)
        if any(a.name == "enableWarmStandby" for a in order.actions):
            claimed = self.claimed_standbys()
            if not available_standbys(self.nodes.values(), self.config.standby, claimed):
                raise OrderRefused(
                    f"{PRECONDITION_FAILURE} enableWarmStandby (no warm standby node is available)",
                    422,
                )
        async with self._admission:
            active = self._active_plan(order.node)
            if active is not None:
                raise OrderRefused(
                    f"{PRECONDITION_FAILURE} {order.node} (RescuePlan {active.name} is still "
                    "running on it)",
                    422,
                )
            refusal = self._admission_refusal(None)
            if refusal is not None:
                self.metrics.refusals.labels(refusal.reason).inc()
                self.post_event(
                    order.node,
                    "RescueRefused",
                    f"storm guard: {refusal.detail}; the decision API's order was refused",
                    warning=True,
                )
                raise OrderRefused(refusal.api_message, 429)
            node = self.nodes[order.node]
            name = api_plan_name(order.node, request_key)
            body = plan_body(
                name,
                order.node,
                [order.xid],
                order.actions,
                source="decision-api",
                dry_run=self.config.dry_run,
                # a cordon in this plan's name was made ahead of it (a retried order)
                node_was_cordoned=cordoned_by_someone_else(node, self.active_plan_names() | {name}),
                escalate_time=order.escalate_time,
            )
            plan = PlanRecord.from_object(body)
            self._hold(plan)
        try:
            await self._create_and_run(plan, None)
        except ApiException as err:
            raise OrderRefused(
                f"the RescuePlan could not be created: API server answered {err.status} "
                f"{err.reason}",
                503,
            ) from err
        return plan.name
