"""Intake and admission: new Xid reports become an incident, the storm guard admits it.

A node already under remediation absorbs the reports into its running plan; a
refused incident waits (deferred) and is tried again when a plan ends.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping
from typing import Any

from blackstart.rescue.controller.execution import PlanExecution
from blackstart.rescue.controller.incident import (
    Incident,
    NodeMemory,
    now_utc,
    report_time,
)
from blackstart.rescue.controller.node_actions import NodeView, cordoned_by_someone_else
from blackstart.rescue.controller.storm_guard import Refusal
from blackstart.rescue.crd.plans import (
    PlanRecord,
    format_time,
    parse_time,
    plan_body,
    plan_name,
)
from blackstart.rescue.crd.policy import (
    MatchedRule,
    NodeSelector,
    select_rule,
)
from blackstart.rescue.wire.signal import parse_condition_message

log = logging.getLogger("blackstart.rescue.controller")


class Admission(PlanExecution):
    """Xid reports in, admitted RescuePlans out."""

    async def _intake(self, node_name: str) -> None:
        """Handle the reports on ``node_name``'s Xid condition that are new."""
        view = self.nodes.get(node_name)
        if view is None or not view.xid_message:
            return
        now = now_utc()
        handled = self._handled(node_name)
        memory = self._memory.setdefault(node_name, NodeMemory())
        reports = parse_condition_message(view.xid_message)
        # forget ids no longer on the condition (the agent keeps the last 20): bounded memory
        memory.seen &= {str(r["id"]) for r in reports}
        # boots a reboot of ours ended (the node came back with another boot id since),
        # each with when the node was Ready again after it
        rebooted_away: dict[str, dt.datetime | None] = {}
        for plan in self.plans_for_node(node_name):
            before = plan.status.boot_id_before_reboot
            if before and view.boot_id and before != view.boot_id:
                back = parse_time(plan.status.ready_at)
                known = rebooted_away.get(before)
                rebooted_away[before] = back if known is None or back is None else max(known, back)
        new: list[dict[str, Any]] = []
        for report in reports:
            report_id = str(report["id"])
            if report_id in handled:
                continue
            # the kernel's own time when the agent sends it: a line read late is still old
            moment = parse_time(report.get("loggedAt")) or report_time(report) or now
            memory.seen.add(report_id)
            if now - moment > self.config.max_report_age:
                log.info(
                    "ignoring Xid report %s on %s: logged at %s, older than the maximum report age",
                    report_id,
                    node_name,
                    format_time(moment),
                )
                continue
            boot = str(report.get("bootId") or report_id.rpartition(":")[0])
            if boot in rebooted_away and not read_after(report, rebooted_away[boot]):
                log.info(
                    "ignoring Xid report %s on %s: from boot %s, which a finished reboot ended",
                    report_id,
                    node_name,
                    boot,
                )
                continue
            new.append(report)
            self.saw_xid(node_name, moment)
            self.metrics.xids.labels(str(report.get("xid"))).inc(
                max(1, int(report.get("count") or 1))
            )
        if not new:
            return
        xids = ", ".join(str(r.get("xid")) for r in new)
        if self.config.decision_api:
            log.info("Xid %s on %s: decision API mode, waiting for an order", xids, node_name)
            return
        incident = self._decide(view, new, now)
        if incident is None:
            log.info("Xid %s on %s: no rule applies, or its threshold is not met", xids, node_name)
            return
        try:
            await self._admit_and_create(incident)
        except Exception:
            # let the next node event (or a restart) try again
            memory.seen -= set(incident.report_ids)
            raise

    def _decide(
        self, node: NodeView, reports: list[dict[str, Any]], now: dt.datetime
    ) -> Incident | None:
        """The rule to act on, across the new reports; ``None`` when none says act (yet)."""
        policies = list(self.policies.values())
        acting: list[tuple[dict[str, Any], MatchedRule]] = []
        for report in reports:
            try:
                xid = int(report.get("xid", -1))
            except (TypeError, ValueError):
                continue
            rule = select_rule(policies, xid, node.labels)
            if rule is None:
                continue
            occurrences = max(1, int(report.get("count") or 1))
            threshold = rule.rule.threshold
            if threshold is not None:
                occurrences = min(occurrences, threshold.count)
            moment = report_time(report) or now
            if any(
                self.tracker.should_act(node.name, rule, moment, xid) for _ in range(occurrences)
            ):
                acting.append((report, rule))
        if not acting:
            return None

        def rank(pair: tuple[dict[str, Any], MatchedRule]) -> tuple[int, str, int]:
            rule = pair[1]
            return (-rule.rule.priority, rule.policy_name or "", rule.rule_index)

        _, best = min(acting, key=rank)
        return Incident(node=node.name, reports=[r for r, _ in acting], rule=best)

    def _pool(self, selector: NodeSelector | None) -> list[NodeView]:
        """The nodes the storm guard weighs a plan against: the rule's, else the GPU nodes
        (a node once seen with GPUs stays one while the device plugin reports none)."""
        key, value = self.config.standby
        return [
            node
            for node in self.nodes.values()
            if node.labels.get(key) != value
            and (
                selector.matches(node.labels)
                if selector is not None
                else node.name in self._gpu_nodes or self._held(node)
            )
        ]

    def _held(self, node: NodeView) -> bool:
        """Held by the controller: a plan runs on it, or a plan's cordon is still on it.

        A cordon counts while its plan is on record (an ended plan leaves its node cordoned
        for a person); one naming a plan that no longer exists does not.
        """
        if self._active_plan(node.name) is not None:
            return True
        return (
            node.unschedulable and node.cordoned_by is not None and node.cordoned_by in self.plans
        )

    def _held_nodes(self) -> tuple[set[str], int]:
        """The names of the nodes :meth:`_held` is true of, from the plans and the cordon
        marks (no pass over the fleet), and how many plans are active (one pass over them)."""
        held: set[str] = set()
        active = 0
        for plan in self.plans.values():
            if plan.active:
                active += 1
                if plan.node in self.nodes:
                    held.add(plan.node)
        held.update(node for node, plan in self._cordon_marks.items() if plan in self.plans)
        return held, active

    def _gpu_pool_counts(self, since: dt.datetime) -> tuple[int, int, int, int]:
        """``(pool, reporting, held, active)`` for the GPU pool (:meth:`_pool` of ``None``):
        its size, its nodes with an Xid report after ``since``, its held nodes; and the
        active plans.

        Counted from the sets kept as nodes and plans change, in time that grows with
        the plans and the nodes reporting, not with the fleet: the guard weighs every
        admission, and a burst of 1,000 Xids on 10,000 nodes is 1,000 admissions.
        """
        standby = self._standby_nodes
        held_nodes, active = self._held_nodes()
        held = held_nodes - standby
        gpus = self._gpu_nodes
        size = len(gpus) - len(gpus & standby) + len(held - gpus)
        reporting = sum(
            1
            for node, moment in self._xid_at.items()
            if moment > since
            and node in self.nodes
            and node not in standby
            and (node in gpus or node in held)
        )
        return size, reporting, len(held), active

    def _admission_refusal(self, selector: NodeSelector | None) -> Refusal | None:
        since = now_utc() - self.storm_guard.reporting_window
        pool_size, reporting, held, active = self._gpu_pool_counts(since)
        fleet = self.storm_guard.fleet_refusal(reporting, pool_size)
        self.metrics.fleet_xid_storm.set(1 if fleet is not None else 0)
        if fleet is not None:
            log.error("storm guard: %s", fleet.detail)
            return fleet
        if selector is not None:  # a rule's own pool: a pass over the fleet
            pool = self._pool(selector)
            pool_size = len(pool)
            held = sum(1 for node in pool if self._held(node))
        return self.storm_guard.admit(active, held, pool_size)

    async def _admit_and_create(self, incident: Incident) -> None:
        absorbing: PlanRecord | None = None
        plan: PlanRecord | None = None
        async with self._admission:
            active = self._active_plan(incident.node)
            if active is not None:
                absorbing = active if self._absorb(active, incident) else None
            else:
                refusal = self._admission_refusal(incident.rule.rule.node_selector)
                if refusal is not None:
                    self._refuse(incident, refusal)
                    return
                self._deferred.pop(incident.node, None)
                plan = self._reserve_or_drop(incident)
        if absorbing is not None:
            await self.persist(absorbing)
        if plan is not None:
            await self._create_and_run(plan, incident)

    def _reserve_or_drop(self, incident: Incident) -> PlanRecord | None:
        """:meth:`_reserve_plan`, or ``None`` (logged, with a Warning Event) when the incident
        cannot become a plan: one bad value never blocks the intake of other incidents."""
        try:
            return self._reserve_plan(incident)
        except Exception as err:
            message = (
                f"no RescuePlan for Xid {', '.join(str(x) for x in incident.xids)} on "
                f"{incident.node}: the plan could not be made ({type(err).__name__}: {err})"
            )[:1024]
            log.exception(message)
            self.post_event(incident.node, "RescueFailed", message, warning=True)
            return None

    def _absorb(self, plan: PlanRecord, incident: Incident) -> bool:
        """Fold the incident's reports into the running ``plan``; True when it must be written."""
        ids = [i for i in incident.report_ids if i not in plan.handled_report_ids()]
        if not ids:
            return False
        plan.status.absorbed_report_ids.extend(ids)
        log.info("Xid reports %s on %s absorbed by running plan %s", ids, incident.node, plan.name)
        return True

    def _refuse(self, incident: Incident, refusal: Refusal) -> None:
        first_time = incident.node not in self._deferred
        previous = self._deferred.pop(incident.node, None)
        if previous is not None:
            incident.reports = [*previous.reports, *incident.reports]
            incident.refused_at = previous.refused_at
        incident.refused_at = incident.refused_at or now_utc()
        self._deferred[incident.node] = incident
        if not first_time:
            return
        self.metrics.refusals.labels(refusal.reason).inc()
        xids = ", ".join(str(x) for x in incident.xids)
        message = (
            f"storm guard: {refusal.detail}; no RescuePlan for Xid {xids} on {incident.node} "
            "now, it is tried again when a running plan ends"
        )
        log.warning(message)
        self.post_event(incident.node, "RescueRefused", message, warning=True)
        self.journal.record(
            {
                "time": format_time(now_utc()),
                "plan": None,
                "node": incident.node,
                "phase": "Refused",
                "message": message,
                "xids": incident.xids,
                "source": "policy",
                "dryRun": self.config.dry_run,
            }
        )

    def _reserve_plan(self, incident: Incident) -> PlanRecord:
        """Make the plan's record and hold its place in memory (under the admission lock)."""
        node = self.nodes.get(incident.node)
        name = plan_name(incident.node, incident.report_ids[0])
        # a cordon in this very plan's name is its own: made ahead of the plan by a
        # controller that died before it could create the plan (execution._cordon_ahead)
        was_cordoned = False
        if node is not None:
            mark = node.cordoned_by
            running = self.plans.get(mark) if mark else None
            ours = {name, running.name} if running is not None and running.active else {name}
            was_cordoned = cordoned_by_someone_else(node, ours)
        body = plan_body(
            name,
            incident.node,
            incident.xids,
            incident.rule.actions,
            source="policy",
            dry_run=self.config.dry_run,
            node_was_cordoned=was_cordoned,
            report_ids=incident.report_ids,
            first_seen_at=incident.first_written(),
            rule=incident.rule,
        )
        plan = PlanRecord.from_object(body)
        self._hold(plan)
        return plan

    async def _retry_deferred(self) -> None:
        """Admit refused incidents, oldest first, while the storm guard lets them in."""
        while self._deferred:
            node, incident = next(iter(self._deferred.items()))
            now = now_utc()
            handled = self._planned(node)
            incident.reports = [
                r
                for r in incident.reports
                if str(r["id"]) not in handled
                and now - (report_time(r) or now) <= self.config.max_report_age
            ]
            if node not in self.nodes or not incident.reports:
                self._deferred.pop(node, None)
                continue
            absorbing: PlanRecord | None = None
            plan: PlanRecord | None = None
            async with self._admission:
                active = self._active_plan(node)
                if active is not None:
                    self._deferred.pop(node, None)
                    absorbing = active if self._absorb(active, incident) else None
                elif self._admission_refusal(incident.rule.rule.node_selector) is not None:
                    return
                else:
                    self._deferred.pop(node, None)
                    plan = self._reserve_or_drop(incident)
            if absorbing is not None:
                await self.persist(absorbing)
            if plan is None:
                continue
            try:
                await self._create_and_run(plan, incident)
            except Exception as err:
                log.warning("could not make the plan for refused incident on %s: %s", node, err)
                self._deferred[node] = incident
                return


def read_after(report: Mapping[str, Any], back: dt.datetime | None) -> bool:
    """The agent read the report's first line after the node was Ready again from our reboot.

    No line of a boot that had ended can be read after it: such a report only carries the
    old boot id because its agent had not learned the new one yet (an agent that outlives
    the node's reboot, as the simulated fleet's one process does), so it is news.
    """
    first = parse_time(report.get("firstSeen"))
    return back is not None and first is not None and first > back
