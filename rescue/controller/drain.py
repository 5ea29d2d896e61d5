"""Drain a node with kubectl's semantics, bounded by the plan's waittime.

What ``kubectl drain --ignore-daemonsets`` does, and what this does:

- pods leave through the **Eviction API**, so PodDisruptionBudgets are honoured;
  an eviction refused with **429** (the budget allows no disruption now) is tried
  again on the next round, as kubectl does; the rounds follow each other after
  :data:`FIRST_RECHECK_SECONDS`, doubling up to :data:`RETRY_SECONDS` (an evicted
  pod that is gone in a moment ends the drain in a moment, and a budget that holds
  is asked again every :data:`RETRY_SECONDS`);
- **DaemonSet pods are skipped** (their controller would put them straight back,
  and they tolerate the cordon), and so are **mirror pods** (static pods: the API
  server cannot delete them, the kubelet owns them);
- **unmanaged pods** (no controller owns them, nothing will recreate them) and
  pods with **emptyDir** volumes (whose data goes with the pod) stop the drain, as
  in kubectl without ``--force`` / ``--delete-emptydir-data``: the default of
  :class:`DrainOptions` (the controller's ``--drain-unmanaged`` and
  ``--drain-emptydir``). A rule's drain action opts in with its ``force`` and
  ``deleteEmptyDirData`` attributes (they are then evicted and named in an Event);
- the pods of the node are listed with a field selector on ``spec.nodeName``, served
  from the API server's watch cache (never a quorum read of every pod in etcd),
  each round's list not older than the one before;
- the grace period of every eviction is the pod's own, and **at least 1 s**:
  a grace period of 0 would force-delete the pod without its preStop hooks;
- pods already terminating are waited for, not evicted again;
- the drain ends when no pod that must leave is left, or at the deadline (the
  plan's ``waittime`` from when the drain began, recorded in the plan, so a
  restarted controller does not start the clock again). Then the plan escalates
  to its reboot, or fails visibly with the pods that were left; it never escalates
  over pods a PodDisruptionBudget protects (their eviction was refused) unless the
  drain action says ``escalateOverPdb: "true"`` (see ``DrainResult.protected``).

:func:`classify_pod` and :func:`plan_drain_round` are pure; :func:`drain_node`
does the requests.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal

from kubernetes.client.exceptions import ApiException

from blackstart.rescue.controller.kube_api import KubeApi
from blackstart.rescue.crd.actions import RescueAction

__all__ = [
    "FIRST_RECHECK_SECONDS",
    "RETRY_SECONDS",
    "DrainOptions",
    "DrainResult",
    "DrainRound",
    "PodClass",
    "PodKind",
    "classify_pod",
    "drain_node",
    "plan_drain_round",
    "recheck_pauses",
]

RETRY_SECONDS = 2.0
FIRST_RECHECK_SECONDS = 0.25
MIRROR_ANNOTATION = "kubernetes.io/config.mirror"
DEFAULT_GRACE_SECONDS = 30

PodHandling = Literal["evict", "skip", "fail"]


class PodKind(StrEnum):
    """How the drain treats a pod."""

    MIRROR = "mirror"  # static pod: skipped
    DAEMONSET = "daemonset"  # skipped
    TERMINATING = "terminating"  # already going: waited for
    FINISHED = "finished"  # Succeeded or Failed: evicted, no budget applies
    UNMANAGED = "unmanaged"  # no controller: per DrainOptions.unmanaged
    EMPTYDIR = "emptydir"  # managed, with emptyDir volumes: per DrainOptions.emptydir
    MANAGED = "managed"  # an ordinary pod with a controller: evicted


@dataclass(frozen=True)
class PodClass:
    """A pod on the node being drained and what kind it is."""

    namespace: str
    name: str
    kind: PodKind
    grace_seconds: int
    has_emptydir: bool = False

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"


def classify_pod(pod: Mapping[str, Any]) -> PodClass:
    """What kind of pod ``pod`` (a Pod object as a dict) is, for the drain.

    Checked in kubectl's order: mirror, then DaemonSet, then terminating, then
    finished, then unmanaged, then emptyDir. The grace period is the pod's
    ``terminationGracePeriodSeconds`` (30 when unset), at least 1.
    """
    metadata = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    status = pod.get("status") or {}
    annotations = metadata.get("annotations") or {}
    owners = metadata.get("ownerReferences") or []
    controller = next((o for o in owners if o.get("controller")), None)
    has_emptydir = any("emptyDir" in (v or {}) for v in spec.get("volumes") or [])
    grace_value = spec.get("terminationGracePeriodSeconds")
    grace = DEFAULT_GRACE_SECONDS if grace_value is None else int(grace_value)
    grace = max(1, grace)
    if MIRROR_ANNOTATION in annotations:
        kind = PodKind.MIRROR
    elif controller is not None and controller.get("kind") == "DaemonSet":
        kind = PodKind.DAEMONSET
    elif metadata.get("deletionTimestamp"):
        kind = PodKind.TERMINATING
    elif status.get("phase") in ("Succeeded", "Failed"):
        kind = PodKind.FINISHED
    elif controller is None:
        kind = PodKind.UNMANAGED
    elif has_emptydir:
        kind = PodKind.EMPTYDIR
    else:
        kind = PodKind.MANAGED
    return PodClass(
        namespace=str(metadata.get("namespace", "")),
        name=str(metadata.get("name", "")),
        kind=kind,
        grace_seconds=grace,
        has_emptydir=has_emptydir,
    )


@dataclass(frozen=True)
class DrainOptions:
    """How unmanaged pods and pods with emptyDir volumes are handled.

    ``fail`` (the default, as kubectl drain without ``--force`` /
    ``--delete-emptydir-data``) fails the drain while any is there; ``evict`` evicts
    them and names them in an Event; ``skip`` leaves them on the node.
    """

    unmanaged: PodHandling = "fail"
    emptydir: PodHandling = "fail"

    def for_action(self, action: RescueAction | None) -> DrainOptions:
        """These options as the drain ``action``'s ``force`` / ``deleteEmptyDirData`` amend them."""
        if action is None:
            return self
        return DrainOptions(
            unmanaged="evict" if action.force else self.unmanaged,
            emptydir="evict" if action.delete_emptydir_data else self.emptydir,
        )


@dataclass
class DrainRound:
    """What one round of a drain does: evict, wait for, skip, or stop on."""

    evict: list[PodClass] = field(default_factory=list)
    waiting: list[PodClass] = field(default_factory=list)
    skipped: list[tuple[PodClass, str]] = field(default_factory=list)
    blocking: list[tuple[PodClass, str]] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        """True when nothing that must leave is left (and nothing blocks)."""
        return not self.evict and not self.waiting and not self.blocking


def plan_drain_round(pods: Iterable[PodClass], options: DrainOptions) -> DrainRound:
    """Sort the pods on a node into what this round evicts, waits for, skips or stops on."""
    result = DrainRound()
    for pod in pods:
        if pod.kind is PodKind.MIRROR:
            result.skipped.append((pod, "mirror pod (static, owned by the kubelet)"))
        elif pod.kind is PodKind.DAEMONSET:
            result.skipped.append((pod, "DaemonSet pod"))
        elif pod.kind is PodKind.TERMINATING:
            result.waiting.append(pod)
        elif pod.kind in (PodKind.UNMANAGED, PodKind.EMPTYDIR):
            handling = options.unmanaged if pod.kind is PodKind.UNMANAGED else options.emptydir
            why = (
                "unmanaged pod: no controller will recreate it"
                if pod.kind is PodKind.UNMANAGED
                else "pod with emptyDir volumes: their data is deleted with it"
            )
            if handling == "skip":
                result.skipped.append((pod, why))
            elif handling == "fail":
                result.blocking.append((pod, why))
            else:
                result.evict.append(pod)
        else:
            result.evict.append(pod)
    return result


@dataclass
class DrainResult:
    """How a drain ended: ``done``, or not, with the pods left and why."""

    done: bool
    evicted: int = 0
    retries: int = 0
    left: list[str] = field(default_factory=list)
    reason: str = ""
    skipped: list[str] = field(default_factory=list)
    warned: list[str] = field(default_factory=list)
    protected: list[str] = field(default_factory=list)
    """Pods left at the deadline whose last eviction a PodDisruptionBudget refused."""


Notify = Callable[[str], Awaitable[None]]


def recheck_pauses(longest: float = RETRY_SECONDS) -> Iterator[float]:
    """The pauses between drain rounds: :data:`FIRST_RECHECK_SECONDS`, doubling up to
    ``longest``, then ``longest`` for ever."""
    pause = min(FIRST_RECHECK_SECONDS, longest)
    while True:
        yield pause
        pause = min(pause * 2, longest)


async def drain_node(
    api: KubeApi,
    node: str,
    deadline: dt.datetime,
    options: DrainOptions,
    notify: Notify | None = None,
    retry_seconds: float = RETRY_SECONDS,
) -> DrainResult:
    """Evict every pod that must leave ``node``, until none is left or ``deadline`` passes.

    ``notify`` receives one message per pod evicted although it is unmanaged or
    has emptyDir data, for the plan's Events. The node must already be cordoned.
    """
    result = DrainResult(done=False)
    warned: set[str] = set()
    refused: set[str] = set()  # the pods a budget refused in the latest round
    seen_version: str | None = None
    pauses = recheck_pauses(retry_seconds)
    while True:
        items, version = await api.list_pods_on_node(node, not_older_than=seen_version)
        seen_version = version or seen_version
        pods = [classify_pod(p) for p in items]
        round_ = plan_drain_round(pods, options)
        result.skipped = [f"{p.ref} ({why})" for p, why in round_.skipped]
        if round_.blocking:
            result.left = [f"{p.ref} ({why})" for p, why in round_.blocking]
            result.reason = "the drain stops on pods it is told not to evict: " + ", ".join(
                result.left
            )
            return result
        if round_.finished:
            result.done = True
            return result
        if dt.datetime.now(dt.UTC) >= deadline:
            result.left = [p.ref for p in [*round_.evict, *round_.waiting]]
            result.protected = [p.ref for p in round_.evict if p.ref in refused]
            result.reason = (
                f"the drain did not finish by {deadline:%H:%M:%S}Z; "
                f"{len(result.left)} pods left: {', '.join(result.left[:10])}"
            )
            return result
        refused.clear()
        for pod in round_.evict:
            if pod.kind in (PodKind.UNMANAGED, PodKind.EMPTYDIR) and pod.ref not in warned:
                warned.add(pod.ref)
                result.warned.append(pod.ref)
                if notify is not None:
                    why = (
                        "it has no controller and will not be recreated"
                        if pod.kind is PodKind.UNMANAGED
                        else "its emptyDir data is deleted with it"
                    )
                    await notify(f"evicting pod {pod.ref} from {node}: {why}")
            try:
                await api.evict_pod(pod.namespace, pod.name, pod.grace_seconds)
            except ApiException as err:
                if err.status == 404:
                    continue  # gone already
                if err.status == 429:
                    refused.add(pod.ref)
                    result.retries += 1
                    api.metrics.evictions.labels("blocked").inc()
                    continue  # a PodDisruptionBudget allows no disruption now: next round
                if err.status == 500 and "DisruptionBudget" in (err.body or ""):
                    # more than one budget selects the pod: the API server refuses for good
                    result.left = [pod.ref]
                    result.reason = f"cannot evict {pod.ref}: {_api_message(err)}"
                    return result
                raise
            result.evicted += 1
            api.metrics.evictions.labels("evicted").inc()
        await asyncio.sleep(next(pauses))


def _api_message(err: ApiException) -> str:
    import json

    try:
        return str(json.loads(err.body or "{}").get("message", err.reason))
    except ValueError:
        return str(err.reason)
