"""The RescuePlan state machine, as pure logic: which step comes next, what is recorded.

A RescuePlan orders actions on one node (``spec.actions``); its ``status`` is the
persisted state machine the controller drives (:mod:`blackstart.rescue.controller.plan_runner`).
This module decides, from the actions and the status alone, what the next step is,
so a controller that was killed at any point picks the plan up where it stood:

- the steps, in the order they are carried out, are :func:`steps_for`: cordon (also
  implied by drain, reboot and enableWarmStandby: kubectl drain cordons first),
  enableWarmStandby (early, so the evicted pods have somewhere to go), drain,
  reboot, waitReady (part of reboot), unCordon (the action, or reboot's
  ``unCordon: "true"``);
- ``status.completedSteps`` holds the steps done, each recorded only once it took
  effect (an uncordon the API server never accepted is not done); :func:`next_step`
  is the first step not in it;
- what must not happen twice is recorded *before* it is done: whether the node was
  already cordoned (``nodeWasCordoned``, so an administrator's cordon is never
  undone), the standby chosen (``standbyNode``), when the drain began
  (``drainStartedAt``, so its waittime is not restarted) and the intent to reboot
  (``rebootIssuedAt``, with the boot ID then). Apart from it, ``rebootOrderedAt``
  records that the driver accepted the order: a failed order is retried (or fails
  the plan), never waited out as if the node were rebooting; and a plan resumed
  between the two orders again only while the node shows no new boot ID.

Phases (``status.phase``) say where the plan stands, for people and probes:
``Pending`` (picked up), ``Cordoned``, ``Replaced`` (a warm standby took over),
``Draining``, ``Rebooting``, ``WaitingReady``, ``Uncordoned``, then one of the
terminal phases ``Succeeded``, ``Failed`` or ``Refused``. Every phase entered is
appended to ``status.transitions`` with its time and a message.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal

from blackstart.rescue.crd.plan_bodies import api_plan_name, plan_body, plan_name
from blackstart.rescue.crd.policy import (
    PolicyError,
    RescueAction,
    action_from_object,
)
from blackstart.rescue.crd.validation import Validation, validation_from_object

__all__ = [
    "ACTIVE_PHASES",
    "ANNOTATION_NODE_WAS_CORDONED",
    "API_VERSION",
    "MAX_TRANSITIONS",
    "PHASES",
    "PLURAL",
    "TERMINAL_PHASES",
    "DrainTimeoutOutcome",
    "Phase",
    "PlanRecord",
    "PlanStatus",
    "Step",
    "after_drain_timeout",
    "api_plan_name",
    "format_time",
    "next_step",
    "parse_time",
    "phase_after",
    "plan_body",
    "plan_name",
    "should_uncordon",
    "steps_for",
]

from blackstart.names import NODE_WAS_CORDONED_ANNOTATION as ANNOTATION_NODE_WAS_CORDONED
from blackstart.names import RESCUE_API_VERSION as API_VERSION
from blackstart.names import RESCUE_PLANS as PLURAL

"""Set on a plan when it is created: was the node already cordoned by someone else?"""

MAX_TRANSITIONS = 64  # the CRD's maxItems
_MAX_MESSAGE = 1024

Phase = Literal[
    "Pending",
    "Cordoned",
    "Draining",
    "Rebooting",
    "WaitingReady",
    "Validating",
    "Uncordoned",
    "Replaced",
    "Succeeded",
    "Failed",
    "Refused",
]
PHASES: tuple[Phase, ...] = (
    "Pending",
    "Cordoned",
    "Draining",
    "Rebooting",
    "WaitingReady",
    "Validating",
    "Uncordoned",
    "Replaced",
    "Succeeded",
    "Failed",
    "Refused",
)
TERMINAL_PHASES: frozenset[str] = frozenset({"Succeeded", "Failed", "Refused"})
ACTIVE_PHASES: frozenset[str] = frozenset(PHASES) - TERMINAL_PHASES


class Step(StrEnum):
    """One step of a plan, in the order :func:`steps_for` gives them."""

    CORDON = "cordon"
    STANDBY = "enableWarmStandby"
    DRAIN = "drain"
    REBOOT = "reboot"
    WAIT_READY = "waitReady"
    VALIDATE = "validate"
    UNCORDON = "unCordon"


_ORDER = (
    Step.CORDON,
    Step.STANDBY,
    Step.DRAIN,
    Step.REBOOT,
    Step.WAIT_READY,
    Step.VALIDATE,
    Step.UNCORDON,
)
_TAKES_NODE_OUT = frozenset({"cordon", "drain", "reboot", "enableWarmStandby"})

_PHASE_AFTER: dict[Step, Phase] = {
    Step.CORDON: "Cordoned",
    Step.STANDBY: "Replaced",
    Step.DRAIN: "Draining",
    Step.REBOOT: "Rebooting",
    Step.WAIT_READY: "WaitingReady",
    Step.VALIDATE: "Validating",
    Step.UNCORDON: "Uncordoned",
}


def steps_for(actions: Iterable[RescueAction], validate: bool = False) -> tuple[Step, ...]:
    """The steps that carry out ``actions``, in execution order.

    Cordon comes first whenever the node is taken out of service (cordon, drain,
    reboot, enableWarmStandby); waitReady always follows reboot, and with
    ``validate`` (the plan has a validation gate) so does validate; unCordon comes
    last, ordered by the ``unCordon`` action or by reboot's ``unCordon: "true"``.
    """
    actions = list(actions)
    names = {action.name for action in actions}
    wanted: set[Step] = set()
    if names & _TAKES_NODE_OUT:
        wanted.add(Step.CORDON)
    if "enableWarmStandby" in names:
        wanted.add(Step.STANDBY)
    if "drain" in names:
        wanted.add(Step.DRAIN)
    if "reboot" in names:
        wanted.update((Step.REBOOT, Step.WAIT_READY))
        if validate:
            wanted.add(Step.VALIDATE)
    if "unCordon" in names or any(a.name == "reboot" and a.uncordon for a in actions):
        wanted.add(Step.UNCORDON)
    return tuple(step for step in _ORDER if step in wanted)


def phase_after(step: Step) -> Phase:
    """The phase a plan is in once ``step`` is done (Draining: the drain is under way)."""
    return _PHASE_AFTER[step]


def format_time(moment: dt.datetime) -> str:
    """``moment`` in RFC 3339 with microseconds and a ``Z``, as the plans record times."""
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: str | None) -> dt.datetime | None:
    """An RFC 3339 time as the API server or the agent writes it; ``None`` for none or junk."""
    if not text or not isinstance(text, str):
        return None
    try:
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


@dataclass
class PlanStatus:
    """A plan's ``status``: the persisted state machine. ``to_object`` is what is written."""

    phase: str = ""
    transitions: list[dict[str, str]] = field(default_factory=list)
    message: str = ""
    node_was_cordoned: bool | None = None
    completed_steps: list[str] = field(default_factory=list)
    started_at: str | None = None
    cordoned_at: str | None = None
    drain_started_at: str | None = None
    drained_at: str | None = None
    evicted_pods: int = 0
    eviction_retries: int = 0
    standby_node: str | None = None
    standby_labels: dict[str, str] = field(default_factory=dict)
    standby_missing: bool = False
    reboot_issued_at: str | None = None
    reboot_ordered_at: str | None = None
    boot_id_before_reboot: str | None = None
    escalated_over_pdb: list[str] = field(default_factory=list)
    validation_job: str | None = None
    ready_at: str | None = None
    finished_at: str | None = None
    absorbed_report_ids: list[str] = field(default_factory=list)

    _FIELDS = (
        ("phase", "phase"),
        ("message", "message"),
        ("node_was_cordoned", "nodeWasCordoned"),
        ("started_at", "startedAt"),
        ("cordoned_at", "cordonedAt"),
        ("drain_started_at", "drainStartedAt"),
        ("drained_at", "drainedAt"),
        ("evicted_pods", "evictedPods"),
        ("eviction_retries", "evictionRetries"),
        ("standby_node", "standbyNode"),
        ("standby_missing", "standbyMissing"),
        ("reboot_issued_at", "rebootIssuedAt"),
        ("reboot_ordered_at", "rebootOrderedAt"),
        ("validation_job", "validationJob"),
        ("boot_id_before_reboot", "bootIdBeforeReboot"),
        ("ready_at", "readyAt"),
        ("finished_at", "finishedAt"),
    )

    @classmethod
    def from_object(cls, status: Mapping[str, Any] | None) -> PlanStatus:
        """The status as read from a RescuePlan (missing fields take their defaults)."""
        status = status or {}
        result = cls()
        for attr, key in cls._FIELDS:
            if key in status and status[key] is not None:
                setattr(result, attr, status[key])
        result.transitions = [dict(t) for t in status.get("transitions") or []]
        result.completed_steps = [str(s) for s in status.get("completedSteps") or []]
        result.standby_labels = dict(status.get("standbyLabels") or {})
        result.absorbed_report_ids = [str(i) for i in status.get("absorbedReportIds") or []]
        result.escalated_over_pdb = [str(p) for p in status.get("escalatedOverPdb") or []]
        return result

    def to_object(self) -> dict[str, Any]:
        """The status to write (fields never set are left out)."""
        obj: dict[str, Any] = {}
        for attr, key in self._FIELDS:
            value = getattr(self, attr)
            if value is not None and value != "":
                obj[key] = value
        obj["transitions"] = self.transitions[-MAX_TRANSITIONS:]
        obj["completedSteps"] = list(self.completed_steps)
        if self.standby_labels:
            obj["standbyLabels"] = dict(self.standby_labels)
        if self.absorbed_report_ids:
            obj["absorbedReportIds"] = self.absorbed_report_ids[-64:]
        if self.escalated_over_pdb:
            obj["escalatedOverPdb"] = self.escalated_over_pdb[:20]
        return obj

    @property
    def terminal(self) -> bool:
        """True once the plan has ended: Succeeded, Failed or Refused."""
        return self.phase in TERMINAL_PHASES

    def enter(self, phase: Phase, now: dt.datetime, message: str = "") -> None:
        """Enter ``phase`` at ``now``: set it, its message, and append a transition."""
        message = message[:_MAX_MESSAGE]
        self.phase = phase
        self.message = message
        entry = {"phase": phase, "time": format_time(now)}
        if message:
            entry["message"] = message
        self.transitions.append(entry)
        if len(self.transitions) > MAX_TRANSITIONS:
            # keep the first (Pending) and the latest ones: the CRD bounds the list
            self.transitions = [self.transitions[0], *self.transitions[-(MAX_TRANSITIONS - 1) :]]
        if phase == "Pending" and self.started_at is None:
            self.started_at = format_time(now)
        if phase in TERMINAL_PHASES:
            self.finished_at = format_time(now)

    def complete(self, step: Step) -> None:
        """Record ``step`` as done."""
        if step.value not in self.completed_steps:
            self.completed_steps.append(step.value)

    def done(self, step: Step) -> bool:
        """True when ``step`` was recorded as done."""
        return step.value in self.completed_steps

    def entered(self, phase: str) -> int:
        """How many times the plan entered ``phase`` (tests check a resume repeats nothing)."""
        return sum(1 for t in self.transitions if t.get("phase") == phase)


def next_step(
    actions: Sequence[RescueAction], status: PlanStatus, validate: bool = False
) -> Step | None:
    """The first step of ``actions`` not yet done, or ``None`` when all are (or it ended)."""
    if status.terminal:
        return None
    for step in steps_for(actions, validate):
        if not status.done(step):
            return step
    return None


def should_uncordon(status: PlanStatus) -> bool:
    """Whether the plan may uncordon its node: never when someone else had cordoned it."""
    return status.node_was_cordoned is False


DrainTimeoutOutcome = Literal["escalate", "fail"]


def after_drain_timeout(actions: Sequence[RescueAction]) -> DrainTimeoutOutcome:
    """What a drain that outlived its waittime leads to.

    ``escalate`` when the plan reboots the node next (the reboot ends what the drain
    could not evict); otherwise ``fail``, visibly, with the node left cordoned.
    """
    return "escalate" if Step.REBOOT in steps_for(actions) else "fail"


def _version(value: object) -> int:
    try:
        return int(str(value))
    except ValueError:
        return 0


@dataclass
class PlanRecord:
    """A RescuePlan as the controller holds it: the order (spec) and the status."""

    name: str
    node: str
    xids: tuple[int, ...]
    actions: tuple[RescueAction, ...]
    source: str
    dry_run: bool
    report_ids: tuple[str, ...]
    status: PlanStatus
    first_seen_at: str | None = None
    escalate_time: str | None = None
    created_at: str | None = None
    node_was_cordoned_hint: bool | None = None
    rule: dict[str, Any] | None = None
    resource_version: int = 0
    finalizers: tuple[str, ...] = ()
    deleting: bool = False
    """True once the plan was deleted (its deletionTimestamp is set, a finalizer holds it)."""
    validation: Validation | None = None
    uid: str = ""
    saved_phase: str = ""
    """The phase the API server last accepted for this plan (the controller's own record)."""

    @classmethod
    def from_object(cls, obj: Mapping[str, Any]) -> PlanRecord:
        """Read a RescuePlan object; :class:`PolicyError` when its actions are malformed."""
        metadata = obj.get("metadata") or {}
        spec = obj.get("spec") or {}
        name = str(metadata.get("name", ""))
        actions = tuple(
            action_from_object(action, f"RescuePlan {name}: spec.actions[{index}]")
            for index, action in enumerate(spec.get("actions") or [])
        )
        if not actions:
            raise PolicyError(f"RescuePlan {name}: spec.actions is empty")
        hint = (metadata.get("annotations") or {}).get(ANNOTATION_NODE_WAS_CORDONED)
        return cls(
            name=name,
            node=str(spec.get("nodeName", "")),
            xids=tuple(int(x) for x in spec.get("xids") or []),
            actions=actions,
            source=str(spec.get("source", "policy")),
            dry_run=bool(spec.get("dryRun", False)),
            report_ids=tuple(str(i) for i in spec.get("reportIds") or []),
            status=PlanStatus.from_object(obj.get("status")),
            first_seen_at=spec.get("firstSeenAt"),
            escalate_time=spec.get("escalateTime"),
            created_at=metadata.get("creationTimestamp"),
            node_was_cordoned_hint=None if hint is None else hint == "true",
            rule=dict(spec["rule"]) if isinstance(spec.get("rule"), Mapping) else None,
            resource_version=_version(metadata.get("resourceVersion")),
            finalizers=tuple(str(f) for f in metadata.get("finalizers") or []),
            deleting=bool(metadata.get("deletionTimestamp")),
            saved_phase=str((obj.get("status") or {}).get("phase") or ""),
            validation=(
                validation_from_object(spec["validation"], f"RescuePlan {name}: spec.validation")
                if spec.get("validation") is not None
                else None
            ),
            uid=str(metadata.get("uid") or ""),
        )

    def saw_version(self, obj: Mapping[str, Any]) -> None:
        """Note the resourceVersion of the plan as a write to it returned it."""
        metadata = obj.get("metadata") or {}
        self.resource_version = max(
            self.resource_version, _version(metadata.get("resourceVersion"))
        )
        self.uid = self.uid or str(metadata.get("uid") or "")

    @property
    def active(self) -> bool:
        """True until the plan reaches a terminal phase."""
        return not self.status.terminal

    def handled_report_ids(self) -> set[str]:
        """Every Xid report this plan accounts for: those it was made for and those it absorbed."""
        return {*self.report_ids, *self.status.absorbed_report_ids}

    def action(self, name: str) -> RescueAction | None:
        """The plan's action called ``name``, if ordered."""
        return next((a for a in self.actions if a.name == name), None)

    def summary(self) -> dict[str, Any]:
        """What the decision API's GET returns: the order and where it stands."""
        return {
            "name": self.name,
            "nodeName": self.node,
            "xids": list(self.xids),
            "source": self.source,
            "dryRun": self.dry_run,
            "actions": [a.to_object() for a in self.actions],
            "status": self.status.to_object(),
        }
