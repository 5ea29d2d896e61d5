"""What every step of a plan runner shares: the controller it works for, and the helpers
that enter phases, post Events and fail the plan visibly.

The steps themselves are in :mod:`.node_steps` (cordon, warm standby, uncordon),
:mod:`.drain_step` and :mod:`.reboot_steps` (reboot, wait for Ready, validation);
:mod:`.plan_runner` puts them together.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable
from typing import Protocol

from kubernetes.client.exceptions import ApiException

from blackstart.rescue.controller.config import ControllerConfig
from blackstart.rescue.controller.kube_api import KubeApi
from blackstart.rescue.controller.metrics import ControllerMetrics
from blackstart.rescue.controller.node_actions import EarlyCordon, NodeView
from blackstart.rescue.controller.reboot import RebootDriver
from blackstart.rescue.controller.storm_guard import StormGuard
from blackstart.rescue.crd.plans import Phase, PlanRecord
from blackstart.rescue.crd.policy import NodeSelector, WarmStandbyPolicy

__all__ = ["PlanContext", "PlanGone", "RunnerBase", "StepFailed", "brief", "now_utc"]

log = logging.getLogger("blackstart.rescue.crd.plans")


class PlanGone(Exception):
    """The RescuePlan was deleted while it ran; the runner stops."""


class StepFailed(Exception):
    """A step cannot be carried out; the plan fails with this message."""


class PlanContext(Protocol):
    """What a runner needs from the controller."""

    config: ControllerConfig
    api: KubeApi
    metrics: ControllerMetrics
    driver: RebootDriver
    storm_guard: StormGuard

    def node(self, name: str) -> NodeView | None: ...

    def take_early_cordon(self, plan: str) -> EarlyCordon | None: ...

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


def now_utc() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def brief(err: BaseException) -> str:
    """An error in a line, for a plan's message."""
    if isinstance(err, ApiException):
        return f"API server answered {err.status} {err.reason}"
    return f"{type(err).__name__}: {err}"[:300]


class RunnerBase:
    """One plan and the controller it runs for; the helpers every step uses."""

    def __init__(self, ctx: PlanContext, plan: PlanRecord) -> None:
        self.ctx = ctx
        self.plan = plan
        self.status = plan.status

    def _dry(self, text: str) -> str:
        return f"dry run: would {text}" if self.plan.dry_run else text

    def _enter(self, phase: Phase, message: str) -> None:
        self.status.enter(phase, now_utc(), message)
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
            raise StepFailed(f"node {self.plan.node} no longer exists")
        return node

    def _waittime(self, action: str, default: dt.timedelta) -> dt.timedelta:
        ordered = self.plan.action(action)
        return ordered.waittime if ordered and ordered.waittime is not None else default
