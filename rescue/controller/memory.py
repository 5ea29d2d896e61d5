"""The controller's memory of the cluster, filled by its watches: nodes, policies, plans.

Runners and the decision API ask it questions (:meth:`ControllerMemory.node`,
:meth:`~ControllerMemory.plans_for_node`, ...); nothing here writes to the API server.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from typing import Any

from blackstart.rescue.controller.config import ControllerConfig
from blackstart.rescue.controller.incident import (
    Incident,
    NodeMemory,
)
from blackstart.rescue.controller.journal import Journal
from blackstart.rescue.controller.kube_api import KubeApi
from blackstart.rescue.controller.metrics import ControllerMetrics
from blackstart.rescue.controller.node_actions import EarlyCordon, NodeView
from blackstart.rescue.controller.reboot import RebootDriver, make_driver
from blackstart.rescue.controller.storm_guard import StormGuard
from blackstart.rescue.crd.plans import (
    PlanRecord,
)
from blackstart.rescue.crd.policy import (
    NodeSelector,
    PolicyError,
    RescuePolicy,
    ThresholdTracker,
    WarmStandbyPolicy,
    rescue_policy_from_object,
    warm_standby_policy_from_object,
)

log = logging.getLogger("blackstart.rescue.controller")


class ControllerMemory:
    """What the watches show, kept small, and the collaborators the controller acts with."""

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
        self._memory: dict[str, NodeMemory] = {}
        self._deferred: OrderedDict[str, Incident] = OrderedDict()
        self._running: dict[str, asyncio.Task[None]] = {}
        self._ours: set[str] = set()  # plans this process made or admitted
        self._admitting: set[str] = set()  # plans made elsewhere, going through the gate
        self._releasing: set[str] = set()  # deleted plans releasing their node
        self._persist_locks: dict[str, asyncio.Lock] = {}
        self._node_waiters: dict[str, asyncio.Event] = {}
        self._early_cordons: dict[str, EarlyCordon] = {}  # by plan: cordoned before created
        self._admission = asyncio.Lock()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._background: list[asyncio.Task[None]] = []
        self.tracker = ThresholdTracker()
        self._gpu_nodes: set[str] = set()  # nodes seen with GPUs: they stay in the pool
        self._xid_at: dict[str, dt.datetime] = {}  # the latest Xid report time per node
        # kept as nodes come and go, so the storm guard counts without a pass over the fleet
        self._standby_nodes: set[str] = set()  # labelled as warm standbys: never in the pool
        self._cordon_marks: dict[str, str] = {}  # cordoned node -> the plan its mark names
        self.ready = asyncio.Event()

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
        self._ours.discard(name)
        if plan is not None:
            self._plans_by_node.get(plan.node, set()).discard(name)

    def _hold(self, plan: PlanRecord) -> None:
        """Keep a plan this process made (or admitted) in memory."""
        self._ours.add(plan.name)
        self.plans[plan.name] = plan
        self._plans_by_node.setdefault(plan.node, set()).add(plan.name)

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
        return self._planned(node) | self._memory.get(node, NodeMemory()).seen

    def _active_plan(self, node: str) -> PlanRecord | None:
        for name in self._plans_by_node.get(node, ()):
            plan = self.plans.get(name)
            if plan is not None and plan.active:
                return plan
        return None

    def active_plan_names(self) -> set[str]:
        """The plans running now: a cordon is the controller's only if one of them made it."""
        return {name for name, plan in self.plans.items() if plan.active}

    def node(self, name: str) -> NodeView | None:
        return self.nodes.get(name)

    def take_early_cordon(self, plan: str) -> EarlyCordon | None:
        """The cordon made for ``plan`` before it was created, once (its cordon step's)."""
        return self._early_cordons.pop(plan, None)

    def remember(self, view: NodeView) -> None:
        """Take a node as a write returned it: the watch may not have shown it yet."""
        known = self.nodes.get(view.name)
        if known is None or view.newer_than(known):
            self.nodes[view.name] = view
            if view.gpus > 0:
                self._gpu_nodes.add(view.name)
            key, value = self.config.standby
            if view.labels.get(key) == value:
                self._standby_nodes.add(view.name)
            else:
                self._standby_nodes.discard(view.name)
            if view.unschedulable and view.cordoned_by is not None:
                self._cordon_marks[view.name] = view.cordoned_by
            else:
                self._cordon_marks.pop(view.name, None)

    def forget_node(self, name: str) -> None:
        """The node was deleted."""
        self.nodes.pop(name, None)
        self._gpu_nodes.discard(name)
        self._xid_at.pop(name, None)
        self._standby_nodes.discard(name)
        self._cordon_marks.pop(name, None)

    def saw_xid(self, node: str, moment: dt.datetime) -> None:
        """Note a new Xid report on ``node`` (for the storm guard's fleet rule)."""
        known = self._xid_at.get(node)
        if known is None or moment > known:
            self._xid_at[node] = moment

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

    def node_exists(self, name: str) -> bool:
        return name in self.nodes

    def plan_summary(self, name: str) -> dict[str, Any] | None:
        plan = self.plans.get(name)
        return plan.summary() if plan is not None else None

    def plan_summaries(self, node: str) -> list[dict[str, Any]]:
        return [p.summary() for p in sorted(self.plans_for_node(node), key=lambda p: p.name)]
