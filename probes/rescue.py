"""Rescue probes: did the GPU self-heal controller act on the Xids this run injected, and how.

They read the ``RescuePlan`` objects (``rescue.blackstart.dev/v1``) the
controller keeps for every incident, the nodes and the controller's Events.
"Injected" means by ``inject_xid``/``xid_storm`` in this Chaos Toolkit run (the
same process); with no injection yet, the checks hold trivially, so the same
probe serves the steady-state hypothesis before and after the method.
"""

import time
from collections.abc import Callable
from typing import Any

from chaoslib.exceptions import ActivityFailed
from chaoslib.types import Configuration, Secrets
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from blackstart.actions.xid import recorded_injections
from blackstart.arguments import seconds
from blackstart.health import parse_iso, wait_until
from blackstart.names import RESCUE_PLANS, RESCUE_VERSION
from blackstart.probes.fleet import node_schedulable
from blackstart.target import Target, resolve_target

__all__ = [
    "rescue_plan_phase",
    "rescue_plans",
    "rescue_plans_succeeded",
    "standby_promoted",
    "storm_guard_refusals",
    "xid_nodes_cordoned_within",
    "xid_to_cordon_seconds",
    "xids_handled_once",
]

from blackstart.names import RESCUE_GROUP as GROUP
from blackstart.names import TERMINAL_PHASES as TERMINAL

REFUSAL_REASON = "RescueRefused"
_SLACK_S = 2.0  # clocks of this process and the API server are the same machine's


def _seconds(name: str, value: Any, high: float = 900.0) -> float:
    return seconds(name, value, 0, high)


def _list_plans(target: Target) -> list[dict[str, Any]]:
    api = client.CustomObjectsApi(target.api(2))
    try:
        listed = api.list_cluster_custom_object(
            GROUP, RESCUE_VERSION, RESCUE_PLANS, _request_timeout=5
        )
    except ApiException as err:
        if err.status == 404:
            raise ActivityFailed(
                "the RescuePlan CRD is not installed: is the rescue controller running? "
                "(cluster control rescue: true)"
            ) from err
        raise ActivityFailed(f"listing RescuePlans failed: {err.status} {err.reason}") from err
    return list(listed.get("items", [])) if isinstance(listed, dict) else []


def _created(plan: dict[str, Any]) -> float:
    text = (plan.get("metadata") or {}).get("creationTimestamp")
    return parse_iso(str(text)).timestamp() if text else 0.0


def _node(plan: dict[str, Any]) -> str:
    return str((plan.get("spec") or {}).get("nodeName") or "")


def _phase(plan: dict[str, Any]) -> str:
    return str((plan.get("status") or {}).get("phase") or "")


def _injections(target: Target, xids: list[int] | None) -> list[dict[str, Any]]:
    found = recorded_injections(target.cluster)
    if xids:
        found = [i for i in found if i["xid"] in xids]
    return found


def _plans_after(plans: list[dict[str, Any]], node: str, since: float) -> list[dict[str, Any]]:
    return sorted(
        (p for p in plans if _node(p) == node and _created(p) >= since - _SLACK_S), key=_created
    )


def _cordon_time(plan: dict[str, Any]) -> float | None:
    for transition in (plan.get("status") or {}).get("transitions") or []:
        if transition.get("phase") == "Cordoned" and transition.get("time"):
            return parse_iso(str(transition["time"])).timestamp()
    return None


def _poll(check: Callable[[], bool], deadline: float, interval: float = 0.25) -> bool:
    timeout = max(0.0, deadline - time.monotonic())
    return bool(wait_until(check, timeout, interval, fatal=(ActivityFailed,))[0])


def _cordon_seconds(
    target: Target, injections: list[dict[str, Any]], within_s: float
) -> dict[str, float | None]:
    """Seconds from each injection to its node's cordon, waiting up to ``within_s`` after it."""
    core = client.CoreV1Api(target.api(2))
    result: dict[str, float | None] = {i["node"]: None for i in injections}
    written = {i["node"]: parse_iso(i["written_at"]).timestamp() for i in injections}
    latest = max(written.values(), default=time.time())
    deadline = time.monotonic() + max(0.0, latest + within_s - time.time())

    def all_cordoned() -> bool:
        pending = [n for n, s in result.items() if s is None]
        if not pending:
            return True
        plans = _list_plans(target)
        now = time.time()
        for node in pending:
            for plan in _plans_after(plans, node, written[node]):
                at = _cordon_time(plan)
                if at is not None:
                    result[node] = round(max(0.0, at - written[node]), 3)
                    break
            else:
                found = core.read_node(node, _request_timeout=3)
                if found.spec and found.spec.unschedulable:
                    result[node] = round(max(0.0, now - written[node]), 3)
        return all(s is not None for s in result.values())

    _poll(all_cordoned, deadline)
    return result


def xid_to_cordon_seconds(
    within_s: float = 30.0,
    xids: list[int] | None = None,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> dict[str, float | None]:
    """Seconds from each injected Xid line to its node being cordoned, by node.

    Waits until every injected node is cordoned or ``within_s`` seconds have
    passed since its injection; null for a node not cordoned by then. The
    cordon time is the plan's ``Cordoned`` transition when the controller
    recorded one, else when this probe saw the node cordoned.
    """
    within = _seconds("within_s", within_s)
    target = resolve_target(configuration, secrets)
    return _cordon_seconds(target, _injections(target, xids), within)


def xid_nodes_cordoned_within(
    within_s: float = 10.0,
    xids: list[int] | None = None,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> bool:
    """True when every node this run injected a Xid into (of ``xids``, default any)
    was cordoned within ``within_s`` seconds of the Xid line being written.

    True when nothing was injected yet (the steady state before the method).
    """
    within = _seconds("within_s", within_s)
    target = resolve_target(configuration, secrets)
    injections = _injections(target, xids)
    if not injections:
        return True
    seconds = _cordon_seconds(target, injections, within)
    return all(s is not None and s <= within for s in seconds.values())


def rescue_plans(
    phase: str = "", configuration: Configuration = None, secrets: Secrets = None
) -> list[dict[str, Any]]:
    """The RescuePlans created since this run's first injection (all when none), oldest first.

    ``phase``: only plans in this phase. Each as ``{"name", "node", "xids",
    "phase", "standby", "created"}``.
    """
    target = resolve_target(configuration, secrets)
    injections = recorded_injections(target.cluster)
    since = min((parse_iso(i["written_at"]).timestamp() for i in injections), default=0.0)
    plans = [p for p in _list_plans(target) if _created(p) >= since - _SLACK_S]
    return [
        {
            "name": (p.get("metadata") or {}).get("name"),
            "node": _node(p),
            "xids": (p.get("spec") or {}).get("xids"),
            "phase": _phase(p),
            "standby": (p.get("status") or {}).get("standbyNode"),
            "created": (p.get("metadata") or {}).get("creationTimestamp"),
        }
        for p in sorted(plans, key=_created)
        if not phase or _phase(p) == phase
    ]


def rescue_plan_phase(
    node: str, configuration: Configuration = None, secrets: Secrets = None
) -> str:
    """The phase of the latest RescuePlan of ``node`` (empty when it has none)."""
    target = resolve_target(configuration, secrets)
    plans = sorted((p for p in _list_plans(target) if _node(p) == node), key=_created)
    return _phase(plans[-1]) if plans else ""


def rescue_plans_succeeded(
    timeout_s: float = 60.0,
    xids: list[int] | None = None,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> bool:
    """True when every node this run injected into got a RescuePlan that ended ``Succeeded``.

    Waits up to ``timeout_s`` for the plans to end; False when one failed,
    was refused, or had not ended by then. True when nothing was injected.
    """
    timeout = _seconds("timeout_s", timeout_s)
    target = resolve_target(configuration, secrets)
    injections = _injections(target, xids)
    if not injections:
        return True
    outcome = {"ok": False}

    def settled() -> bool:
        plans = _list_plans(target)
        done = True
        ok = True
        for injection in injections:
            since = parse_iso(injection["written_at"]).timestamp()
            mine = _plans_after(plans, injection["node"], since)
            if not mine or any(_phase(p) not in TERMINAL for p in mine):
                done = False
                continue
            ok = ok and all(_phase(p) == "Succeeded" for p in mine)
        outcome["ok"] = ok
        return done

    return _poll(settled, time.monotonic() + timeout, 0.5) and outcome["ok"]


def xids_handled_once(
    timeout_s: float = 60.0,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> bool:
    """True when each node this run injected into has exactly one RescuePlan for it.

    Waits up to ``timeout_s`` for every node to get its plan, then checks
    that none got two: no Xid lost, none acted on twice (one burst per node
    makes one plan). True when nothing was injected.
    """
    timeout = _seconds("timeout_s", timeout_s)
    target = resolve_target(configuration, secrets)
    injections = _injections(target, None)
    if not injections:
        return True
    first: dict[str, float] = {}
    for injection in injections:
        first.setdefault(injection["node"], parse_iso(injection["written_at"]).timestamp())
    counts: dict[str, int] = {}

    def all_have_plans() -> bool:
        plans = _list_plans(target)
        counts.clear()
        for node, since in first.items():
            counts[node] = len(_plans_after(plans, node, since))
        return all(c >= 1 for c in counts.values())

    if not _poll(all_have_plans, time.monotonic() + timeout, 0.5):
        return False
    time.sleep(2.0)  # a duplicate would show up right after the first
    all_have_plans()
    return all(c == 1 for c in counts.values())


def standby_promoted(
    timeout_s: float = 30.0, configuration: Configuration = None, secrets: Secrets = None
) -> bool:
    """True when a RescuePlan of this run swapped a warm standby in and that node is schedulable.

    Schedulable: uncordoned, Ready and free of ``NoSchedule`` taints (the node
    controller lifts the cordon's taint a moment later). Waits up to
    ``timeout_s``. False when nothing was injected.
    """
    timeout = _seconds("timeout_s", timeout_s)
    target = resolve_target(configuration, secrets)
    injections = _injections(target, None)
    if not injections:
        return False
    since = min(parse_iso(i["written_at"]).timestamp() for i in injections)
    core = client.CoreV1Api(target.api(2))

    def promoted() -> bool:
        for plan in _list_plans(target):
            standby = (plan.get("status") or {}).get("standbyNode")
            if standby and _created(plan) >= since - _SLACK_S:
                node = core.read_node(str(standby), _request_timeout=3)
                if node_schedulable(node):
                    return True
        return False

    return _poll(promoted, time.monotonic() + timeout, 0.5)


def storm_guard_refusals(
    min_count: int = 0,
    timeout_s: float = 0.0,
    namespace: str = "default",
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> int:
    """How many Xid incidents the controller's storm guard refused since this run's first injection.

    Counts the controller's Warning Events with reason ``RescueRefused`` (in
    ``namespace``, the controller's Event namespace), one per refused node
    and incident. With ``min_count``, waits up to ``timeout_s`` until at least
    that many were posted (reports reach the controller over some seconds).
    0 when nothing was injected.
    """
    if isinstance(min_count, bool) or not isinstance(min_count, int) or min_count < 0:
        raise ActivityFailed(f"min_count must be a whole number, not {min_count!r}")
    timeout = _seconds("timeout_s", timeout_s)
    target = resolve_target(configuration, secrets)
    injections = recorded_injections(target.cluster)
    if not injections:
        return 0
    since = min(parse_iso(i["written_at"]).timestamp() for i in injections)
    core = client.CoreV1Api(target.api(2))
    found = {"count": 0}

    def enough() -> bool:
        events = core.list_namespaced_event(
            namespace, field_selector=f"reason={REFUSAL_REASON}", _request_timeout=5
        ).items
        count = 0
        for event in events:
            stamp = event.first_timestamp or event.event_time or event.metadata.creation_timestamp
            if stamp is not None and stamp.timestamp() >= since - _SLACK_S:
                count += 1
        found["count"] = count
        return count >= min_count

    _poll(enough, time.monotonic() + timeout, 0.5)
    return found["count"]
