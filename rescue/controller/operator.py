"""The GPU self-heal controller: Xid signals in, RescuePlans out, carried out to the end.

kopf runs the watches (:func:`build_registry`); :class:`Controller` holds what they
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
import contextlib
import datetime as dt
import logging
import uuid
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kopf
import yaml
from kubernetes.client.exceptions import ApiException

from blackstart.rescue.controller.config import ControllerConfig
from blackstart.rescue.controller.decision_api import OrderRefused, RescueOrder
from blackstart.rescue.controller.journal import Journal
from blackstart.rescue.controller.kube_api import ACT, RECORD, KubeApi
from blackstart.rescue.controller.metrics import ControllerMetrics
from blackstart.rescue.controller.node_actions import NodeView, cordoned_by_someone_else
from blackstart.rescue.controller.plan_runner import PlanGone, PlanRunner
from blackstart.rescue.controller.reboot import RebootDriver, make_driver
from blackstart.rescue.controller.standby import available_standbys
from blackstart.rescue.controller.storm_guard import Refusal, StormGuard
from blackstart.rescue.crd.plans import (
    PLURAL,
    PlanRecord,
    api_plan_name,
    format_time,
    parse_time,
    plan_body,
    plan_name,
)
from blackstart.rescue.crd.policy import (
    GROUP,
    PRECONDITION_FAILURE,
    VERSION,
    MatchedRule,
    NodeSelector,
    PolicyError,
    RescuePolicy,
    ThresholdTracker,
    WarmStandbyPolicy,
    check_preconditions,
    rescue_policy_from_object,
    select_rule,
    warm_standby_policy_from_object,
)
from blackstart.rescue.wire.signal import parse_condition_message

__all__ = ["Controller", "Incident", "build_registry", "connection_from_kubeconfig"]

log = logging.getLogger("blackstart.rescue.controller.operator")

EVENT_COMPONENT = "blackstart-rescue-controller"
REPORTING_CONTROLLER = f"{GROUP}/controller"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass
class Incident:
    """New Xid reports on a node that a rule says to act on."""

    node: str
    reports: list[dict[str, Any]]
    rule: MatchedRule
    refused_at: dt.datetime | None = None

    @property
    def report_ids(self) -> list[str]:
        return [str(r["id"]) for r in self.reports]

    @property
    def xids(self) -> list[int]:
        return sorted({int(r.get("xid", 0)) for r in self.reports})

    def first_written(self) -> str | None:
        """The earliest time the agent read one of the Xid lines (for the latency metric)."""
        times = [parse_time(r.get("writtenAt")) for r in self.reports]
        known = [t for t in times if t is not None]
        return format_time(min(known)) if known else None


@dataclass
class _NodeMemory:
    """Report ids of a node seen and dealt with outside any plan (counted, ignored...)."""

    seen: set[str] = field(default_factory=set)


def _resource_version(body: Mapping[str, Any]) -> int:
    try:
        return int(str((body.get("metadata") or {}).get("resourceVersion", 0)))
    except ValueError:
        return 0


def _report_time(report: Mapping[str, Any]) -> dt.datetime | None:
    for key in ("lastSeen", "writtenAt", "firstSeen"):
        moment = parse_time(report.get(key))
        if moment is not None:
            return moment
    return None


class Controller:
    """The controller's memory and decisions; kopf's handlers call into it."""

    def __init__(
        self,
        config: ControllerConfig,
        api: KubeApi,
        metrics: ControllerMetrics,
        journal: Journal | None = None,
        driver: RebootDriver | None = None,
    ) -> None:
        self.config = config
        self.api = api
        self.metrics = metrics
        self.journal = journal or Journal(None)
        self.storm_guard: StormGuard = config.storm_guard
        self.driver: RebootDriver = driver or make_driver(
            config.reboot_driver,
            api,
            webhook_url=config.webhook_url,
            webhook_token=config.webhook_token,
            local_boot_seconds=config.local_boot_seconds,
        )
        self.nodes: dict[str, NodeView] = {}
        self.policies: dict[str, RescuePolicy] = {}
        self.warm_standby: dict[str, WarmStandbyPolicy] = {}
        self.plans: dict[str, PlanRecord] = {}
        self._plans_by_node: dict[str, set[str]] = {}
        self._memory: dict[str, _NodeMemory] = {}
        self._deferred: OrderedDict[str, Incident] = OrderedDict()
        self._running: dict[str, asyncio.Task[None]] = {}
        self._persist_locks: dict[str, asyncio.Lock] = {}
        self._node_waiters: dict[str, asyncio.Event] = {}
        self._admission = asyncio.Lock()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._background: list[asyncio.Task[None]] = []
        self.tracker = ThresholdTracker()
        self.ready = asyncio.Event()

    # ================================================================ life cycle

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
        resumed = [p for p in self.plans.values() if p.active]
        for plan in resumed:
            self._start_runner(plan)
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
        for obj in await self.api.list_custom("rescuepolicies"):
            self._set_policy(obj)
        for obj in await self.api.list_custom("warmstandbypolicies"):
            self._set_warm_standby(obj)
        for obj in await self.api.list_nodes():
            view = NodeView.from_object(obj)
            self.nodes[view.name] = view
        for obj in await self.api.list_custom(PLURAL):
            self._set_plan(obj)

    async def stop(self) -> None:
        """Cancel the sweepers and the running plans (they resume at the next start)."""
        for task in [*self._background, *self._running.values(), *self._tasks]:
            task.cancel()
        await asyncio.gather(
            *self._background, *self._running.values(), *self._tasks, return_exceptions=True
        )

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ================================================================ watch events

    async def on_node(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        """A Node event from the watch: update the memory; act on new Xid reports."""
        name = str((body.get("metadata") or {}).get("name", ""))
        if event_type == "DELETED":
            self.nodes.pop(name, None)
            self._memory.pop(name, None)
            self._deferred.pop(name, None)
            self.tracker.forget(name)
        else:
            view = NodeView.from_object(body)
            known = self.nodes.get(name)
            if known is None or view.newer_than(known):
                self.nodes[name] = view
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
        """A RescuePlan event: keep the memory; run plans nobody runs (made by someone else)."""
        name = str((body.get("metadata") or {}).get("name", ""))
        if event_type == "DELETED":
            task = self._running.pop(name, None)
            if task is not None:
                task.cancel()
            self._forget_plan(name)
            return
        if name in self._running:
            return  # the runner's own copy is the newer one
        known = self.plans.get(name)
        version = _resource_version(body)
        if known is not None and version and known.resource_version >= version:
            return  # an event older than what our own writes returned: stale
        plan = self._set_plan(body)
        if plan is not None and plan.active and self.ready.is_set():
            self._start_runner(plan)

    def _set_policy(self, body: Mapping[str, Any]) -> None:
        name = str(body["metadata"]["name"])
        try:
            self.policies[name] = rescue_policy_from_object(body)
        except PolicyError as err:
            self.policies.pop(name, None)
            log.warning("ignoring RescuePolicy %s: %s", name, err)

    def _set_warm_standby(self, body: Mapping[str, Any]) -> None:
        name = str(body["metadata"]["name"])
        try:
            self.warm_standby[name] = warm_standby_policy_from_object(body)
        except PolicyError as err:
            self.warm_standby.pop(name, None)
            log.warning("ignoring WarmStandbyPolicy %s: %s", name, err)

    def _set_plan(self, body: Mapping[str, Any]) -> PlanRecord | None:
        try:
            plan = PlanRecord.from_object(body)
        except (PolicyError, ValueError, TypeError) as err:
            log.warning("ignoring malformed RescuePlan: %s", err)
            return None
        self.plans[plan.name] = plan
        self._plans_by_node.setdefault(plan.node, set()).add(plan.name)
        return plan

    def _forget_plan(self, name: str) -> None:
        plan = self.plans.pop(name, None)
        if plan is not None:
            self._plans_by_node.get(plan.node, set()).discard(name)

    # ================================================================ incidents

    def _planned(self, node: str) -> set[str]:
        """Report ids of ``node`` that a RescuePlan accounts for (the durable record)."""
        planned: set[str] = set()
        for name in self._plans_by_node.get(node, ()):
            plan = self.plans.get(name)
            if plan is not None:
                planned |= plan.handled_report_ids()
        return planned

    def _handled(self, node: str) -> set[str]:
        """Report ids of ``node`` already dealt with: planned, or seen by this process."""
        return self._planned(node) | self._memory.get(node, _NodeMemory()).seen

    def _active_plan(self, node: str) -> PlanRecord | None:
        for name in self._plans_by_node.get(node, ()):
            plan = self.plans.get(name)
            if plan is not None and plan.active:
                return plan
        return None

    async def _intake(self, node_name: str) -> None:
        """Handle the reports on ``node_name``'s Xid condition that are new."""
        view = self.nodes.get(node_name)
        if view is None or not view.xid_message:
            return
        now = _now()
        handled = self._handled(node_name)
        memory = self._memory.setdefault(node_name, _NodeMemory())
        reports = parse_condition_message(view.xid_message)
        # forget ids no longer on the condition (the agent keeps the last 20): bounded memory
        memory.seen &= {str(r["id"]) for r in reports}
        new: list[dict[str, Any]] = []
        for report in reports:
            report_id = str(report["id"])
            if report_id in handled:
                continue
            moment = _report_time(report) or now
            memory.seen.add(report_id)
            if now - moment > self.config.max_report_age:
                log.info(
                    "ignoring Xid report %s on %s: older than the maximum report age",
                    report_id,
                    node_name,
                )
                continue
            new.append(report)
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
            moment = _report_time(report) or now
            if any(self.tracker.should_act(node.name, rule, moment) for _ in range(occurrences)):
                acting.append((report, rule))
        if not acting:
            return None

        def rank(pair: tuple[dict[str, Any], MatchedRule]) -> tuple[int, str, int]:
            rule = pair[1]
            return (-rule.rule.priority, rule.policy_name or "", rule.rule_index)

        _, best = min(acting, key=rank)
        return Incident(node=node.name, reports=[r for r, _ in acting], rule=best)

    def _pool(self, selector: NodeSelector | None) -> list[NodeView]:
        """The nodes the storm guard weighs a plan against: the rule's, else the GPU nodes."""
        key, value = self.config.standby
        return [
            node
            for node in self.nodes.values()
            if node.labels.get(key) != value
            and (selector.matches(node.labels) if selector is not None else node.gpus > 0)
        ]

    def _held(self, node: NodeView) -> bool:
        """Held by the controller: a plan runs on it, or a plan's cordon is still on it."""
        if self._active_plan(node.name) is not None:
            return True
        return node.unschedulable and node.cordoned_by is not None

    def _admission_refusal(self, selector: NodeSelector | None) -> Refusal | None:
        pool = self._pool(selector)
        held = sum(1 for node in pool if self._held(node))
        active = sum(1 for plan in self.plans.values() if plan.active)
        return self.storm_guard.admit(active, held, len(pool))

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
                plan = self._reserve_plan(incident)
        if absorbing is not None:
            await self.persist(absorbing)
        if plan is not None:
            await self._create_and_run(plan, incident)

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
        incident.refused_at = incident.refused_at or _now()
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
                "time": format_time(_now()),
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
        was_cordoned = cordoned_by_someone_else(node) if node is not None else False
        body = plan_body(
            plan_name(incident.node, incident.report_ids[0]),
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

    def _hold(self, plan: PlanRecord) -> None:
        self.plans[plan.name] = plan
        self._plans_by_node.setdefault(plan.node, set()).add(plan.name)

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
        )
        try:
            created = await self.api.create_plan(body)
        except ApiException as err:
            if err.status == 409:
                # made before (by us, before a restart): the stored plan is the truth
                self._forget_plan(plan.name)
                existing = self._set_plan(await self.api.get_plan(plan.name))
                if existing is not None and existing.active:
                    self._start_runner(existing)
                return
            self._forget_plan(plan.name)
            raise
        except Exception:
            self._forget_plan(plan.name)
            raise
        plan.saw_version(created)
        self.metrics.plans_started.labels(plan.source).inc()
        self.metrics.plans_active.set(sum(1 for p in self.plans.values() if p.active))
        self._start_runner(plan)

    # ================================================================ running plans

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
        now = _now()
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

    # --- what runners ask ---------------------------------------------------------------------

    def node(self, name: str) -> NodeView | None:
        return self.nodes.get(name)

    def remember(self, view: NodeView) -> None:
        """Take a node as a write returned it: the watch may not have shown it yet."""
        known = self.nodes.get(view.name)
        if known is None or view.newer_than(known):
            self.nodes[view.name] = view

    def all_nodes(self) -> Iterable[NodeView]:
        return list(self.nodes.values())

    async def wait_node_change(self, name: str, timeout: float) -> None:
        """Wait until the watch shows a change of ``name`` or ``timeout`` seconds pass."""
        waiter = self._node_waiters.setdefault(name, asyncio.Event())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(waiter.wait(), timeout)

    def plans_for_node(self, node: str) -> list[PlanRecord]:
        return [self.plans[n] for n in self._plans_by_node.get(node, ()) if n in self.plans]

    def claimed_standbys(self) -> set[str]:
        return {
            p.status.standby_node for p in self.plans.values() if p.active and p.status.standby_node
        }

    def standby_policies(self) -> list[WarmStandbyPolicy]:
        return list(self.warm_standby.values())

    def rule_selector(self, plan: PlanRecord) -> NodeSelector | None:
        if not plan.rule:
            return None
        policy = self.policies.get(str(plan.rule.get("policy")))
        index = int(plan.rule.get("index", -1))
        if policy is None or not 0 <= index < len(policy.rules):
            return None
        return policy.rules[index].node_selector

    # ================================================================ background loops

    async def _deferred_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.deferred_retry_seconds)
            try:
                await self._retry_deferred()
            except Exception:
                log.exception("retrying refused incidents failed")

    async def _retry_deferred(self) -> None:
        """Admit refused incidents, oldest first, while the storm guard lets them in."""
        while self._deferred:
            node, incident = next(iter(self._deferred.items()))
            now = _now()
            handled = self._planned(node)
            incident.reports = [
                r
                for r in incident.reports
                if str(r["id"]) not in handled
                and now - (_report_time(r) or now) <= self.config.max_report_age
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
                    plan = self._reserve_plan(incident)
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

    async def _sweep_loop(self) -> None:
        """Delete ended plans older than the TTL (from memory: no LIST)."""
        interval = max(1.0, min(60.0, self.config.plans_ttl.total_seconds() / 4))
        while True:
            await asyncio.sleep(interval)
            now = _now()
            for plan in list(self.plans.values()):
                if plan.active or plan.name in self._running:
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

    # ================================================================ decision API

    def node_exists(self, name: str) -> bool:
        return name in self.nodes

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
            body = plan_body(
                api_plan_name(order.node, request_key),
                order.node,
                [order.xid],
                order.actions,
                source="decision-api",
                dry_run=self.config.dry_run,
                node_was_cordoned=cordoned_by_someone_else(node),
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

    def plan_summary(self, name: str) -> dict[str, Any] | None:
        plan = self.plans.get(name)
        return plan.summary() if plan is not None else None

    def plan_summaries(self, node: str) -> list[dict[str, Any]]:
        return [p.summary() for p in sorted(self.plans_for_node(node), key=lambda p: p.name)]


# ==================================================================== kopf wiring


def connection_from_kubeconfig(path: str, context: str | None = None) -> kopf.ConnectionInfo:
    """kopf's connection info from a kubeconfig file (certificates, token, CA, insecure)."""
    config = yaml.safe_load(Path(path).read_text()) or {}
    base = Path(path).resolve().parent
    context_name = context or config.get("current-context")
    contexts = {c["name"]: c.get("context") or {} for c in config.get("contexts") or []}
    if context_name not in contexts:
        raise kopf.LoginError(
            f"kubeconfig {path} has no context {context_name!r}; it has {', '.join(contexts)}"
        )
    ctx = contexts[context_name]
    clusters = {c["name"]: c.get("cluster") or {} for c in config.get("clusters") or []}
    users = {u["name"]: u.get("user") or {} for u in config.get("users") or []}
    cluster = clusters.get(ctx.get("cluster"), {})
    user = users.get(ctx.get("user"), {})
    server = cluster.get("server")
    if not isinstance(server, str) or not server:
        raise kopf.LoginError(f"kubeconfig {path}: cluster {ctx.get('cluster')!r} has no server")

    def file_of(value: str | None) -> str | None:
        return str(base / value) if value else None

    return kopf.ConnectionInfo(
        server=server,
        ca_path=file_of(cluster.get("certificate-authority")),
        ca_data=cluster.get("certificate-authority-data"),
        insecure=cluster.get("insecure-skip-tls-verify"),
        certificate_path=file_of(user.get("client-certificate")),
        certificate_data=user.get("client-certificate-data"),
        private_key_path=file_of(user.get("client-key")),
        private_key_data=user.get("client-key-data"),
        token=user.get("token"),
        default_namespace=ctx.get("namespace"),
    )


def configure_kopf(settings: kopf.OperatorSettings) -> None:
    """kopf settings that keep its own load on the API server small and bounded."""
    settings.posting.enabled = False  # the controller posts its own, rate-limited Events
    settings.scanning.disabled = True  # resources are known: no CRD or namespace watching
    settings.watching.chunk_size = 500  # the first listing of a large fleet, in pages
    settings.watching.reconnect_backoff = 1.0
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.networking.request_timeout = 60
    settings.networking.error_backoffs = [1, 2, 5, 10, 20, 30]


def build_registry(
    controller: Controller, kubeconfig: str | None, context: str | None
) -> kopf.OperatorRegistry:
    """kopf's handlers for ``controller``: login, start/stop, and four watches."""
    registry = kopf.OperatorRegistry()

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        if kubeconfig:
            return connection_from_kubeconfig(kubeconfig, context)
        return kopf.login_via_client(**kwargs)

    @kopf.on.startup(registry=registry)
    async def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
        configure_kopf(settings)
        await controller.start()

    @kopf.on.cleanup(registry=registry)
    async def cleanup(**_: Any) -> None:
        await controller.stop()

    @kopf.on.event("", "v1", "nodes", registry=registry)
    async def node_event(event: Mapping[str, Any], body: Mapping[str, Any], **_: Any) -> None:
        await controller.on_node(event.get("type"), body)

    @kopf.on.event(GROUP, VERSION, "rescuepolicies", registry=registry)
    async def policy_event(event: Mapping[str, Any], body: Mapping[str, Any], **_: Any) -> None:
        await controller.on_policy(event.get("type"), body)

    @kopf.on.event(GROUP, VERSION, "warmstandbypolicies", registry=registry)
    async def standby_event(event: Mapping[str, Any], body: Mapping[str, Any], **_: Any) -> None:
        await controller.on_warm_standby_policy(event.get("type"), body)

    @kopf.on.event(GROUP, VERSION, PLURAL, registry=registry)
    async def plan_event(event: Mapping[str, Any], body: Mapping[str, Any], **_: Any) -> None:
        await controller.on_plan(event.get("type"), body)

    return registry
