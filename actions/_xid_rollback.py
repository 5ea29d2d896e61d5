"""The rollback of Xid injections: :func:`restore_xid_nodes` (re-exported by ``xid``)."""

from __future__ import annotations

import json
import time
from typing import Any

from chaoslib.exceptions import ActivityFailed
from chaoslib.types import Configuration, Secrets
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from blackstart.actions._xid_record import (
    forget,
    forget_on_disk,
    journal_injections,
    recorded_injections,
)
from blackstart.clusters.local.kwokctl import NODE_NOT_READY_LABEL
from blackstart.clusters.spec import load_spec
from blackstart.clusters.state import kubernetes_node_name
from blackstart.health import parse_iso
from blackstart.names import (
    RESCUE_GROUP,
    RESCUE_PLANS,
    RESCUE_VERSION,
    STANDBY_LABEL,
    TERMINAL_PHASES,
)
from blackstart.rescue.wire.signal import condition_patch, reports_from_node
from blackstart.target import Target, resolve_target

__all__ = ["restore_xid_nodes"]

# labels the cluster (kubelet/KWOK) sets on every node: never removed when restoring a standby
_MANAGED_LABELS = (
    "type",
    "kubernetes.io/os",
    "kubernetes.io/arch",
    "kubernetes.io/hostname",
    "beta.kubernetes.io/os",
    "beta.kubernetes.io/arch",
)


def _plans(target: Target) -> list[dict[str, Any]] | None:
    """Every RescuePlan, or None when the rescue CRDs are not installed."""
    api = client.CustomObjectsApi(target.api())
    try:
        listed = api.list_cluster_custom_object(RESCUE_GROUP, RESCUE_VERSION, RESCUE_PLANS)
    except ApiException as err:
        if err.status == 404:
            return None
        raise
    return list(listed.get("items", [])) if isinstance(listed, dict) else []


def _plans_since(
    plans: list[dict[str, Any]], nodes: set[str], since: float
) -> list[dict[str, Any]]:
    found = []
    for plan in plans:
        created = (plan.get("metadata") or {}).get("creationTimestamp")
        node = (plan.get("spec") or {}).get("nodeName")
        if node in nodes and created and parse_iso(str(created)).timestamp() >= since - 2:
            found.append(plan)
    return found


def _wait_plans_settled(
    target: Target,
    nodes: set[str],
    since: float,
    timeout_s: float,
    quiet_s: float,
    plans_within_s: float = 0.0,
) -> tuple[list[dict[str, Any]], bool]:
    """Wait until no plan for ``nodes`` is active for ``quiet_s`` s; (plans, settled).

    For the first ``plans_within_s`` seconds a node without any plan yet counts as
    active too (a controller coming back after an outage has not made it yet).
    """
    deadline = time.monotonic() + timeout_s
    expect_until = time.monotonic() + min(plans_within_s, timeout_s)
    quiet_since: float | None = None
    plans: list[dict[str, Any]] = []
    while True:
        listed = _plans(target)
        if listed is None:
            return [], True  # no rescue controller in this cluster: nothing to wait for
        plans = _plans_since(listed, nodes, since)
        active = [p for p in plans if (p.get("status") or {}).get("phase") not in TERMINAL_PHASES]
        now = time.monotonic()
        planned = {(p.get("spec") or {}).get("nodeName") for p in plans}
        if now < expect_until and nodes - planned:
            active.append({})  # a plan still to come
        if active:
            quiet_since = None
        elif quiet_since is None:
            quiet_since = now
        elif now - quiet_since >= quiet_s:
            return plans, True
        if now >= deadline:
            return plans, False
        time.sleep(0.5)


def cordoned_before_plans(plans: list[dict[str, Any]], node: str) -> bool | None:
    """Whether ``node`` was cordoned before the rescue controller's first plan for it
    touched it (the plan's ``status.nodeWasCordoned``); None when no plan says.

    The rollback's fallback when the injection could not tell (the API server was
    down when the Xid was written): the controller read the node when it acted.
    """
    own = [p for p in plans if (p.get("spec") or {}).get("nodeName") == node]
    own.sort(key=lambda p: str((p.get("metadata") or {}).get("creationTimestamp") or ""))
    for plan in own:
        known = (plan.get("status") or {}).get("nodeWasCordoned")
        if isinstance(known, bool):
            return known
    return None


def injected_reports_removed(
    reports: list[dict[str, Any]], injections: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The Xid reports of a node's ``GPUXidError`` condition without those its injections
    made (same Xid and PCI address, seen from the injection on); others stay."""

    def injected(report: dict[str, Any]) -> bool:
        seen = report.get("lastSeen") or report.get("firstSeen")
        for i in injections:
            if report.get("xid") != i["xid"]:
                continue
            if str(report.get("pci") or "").lower() != str(i["pci"]).lower():
                continue
            if (
                seen
                and parse_iso(str(seen)).timestamp() >= parse_iso(i["written_at"]).timestamp() - 5
            ):
                return True
        return False

    return [r for r in reports if not injected(r)]


def _clear_injected_reports(
    core: client.CoreV1Api, node: Any, injections: list[dict[str, Any]]
) -> bool:
    """Take the injected Xids out of the node's condition: a controller started later (the
    next experiment's) must not count them towards its storm guard. True when it changed."""
    reports = reports_from_node(node)
    keep = injected_reports_removed(reports, injections)
    if len(keep) == len(reports):
        return False
    patch = condition_patch(keep, time.time())
    if not keep:
        patch["status"]["conditions"][0].update(status="False", reason="NoXid")
    core.patch_node_status(node.metadata.name, patch)
    return True


def _spec_labels(target: Target) -> dict[str, dict[str, str]]:
    state = target.state
    if state is None or not state.spec_path:
        return {}
    try:
        spec = load_spec(state.spec_path)
    except Exception:
        return {}
    # keyed by the Node's name: a kind cluster's nodes are <cluster>-worker<N>
    return {kubernetes_node_name(state, n.name): dict(n.labels) for n in spec.nodes()}


def _rescue_annotations_removed(node: Any) -> dict[str, None]:
    """A patch removing the controller's bookkeeping annotations (its plans are done)."""
    return {
        key: None for key in (node.metadata.annotations or {}) if key.startswith(f"{RESCUE_GROUP}/")
    }


def _restore_standby(core: client.CoreV1Api, name: str, spec_labels: dict[str, str] | None) -> None:
    node: Any = core.read_node(name)
    labels = dict(node.metadata.labels or {})
    patch_labels: dict[str, str | None] = {STANDBY_LABEL: "true"}
    if spec_labels is not None:
        for key in labels:
            if key not in spec_labels and key not in _MANAGED_LABELS and key != STANDBY_LABEL:
                patch_labels[key] = None  # a label copied from the failed node
        for key, value in spec_labels.items():
            if labels.get(key) != value:
                patch_labels[key] = value
    core.patch_node(
        name,
        {
            "metadata": {"labels": patch_labels, "annotations": _rescue_annotations_removed(node)},
            "spec": {"unschedulable": True},
        },
    )


def restore_xid_nodes(
    timeout_s: float = 120.0,
    quiet_s: float = 5.0,
    nodes: list[str] | None = None,
    plans_within_s: float = 0.0,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> dict[str, Any]:
    """Put the nodes Xids were injected into back in service (the rollback of Xid injections).

    Waits (up to ``timeout_s``) until the rescue controller has no running
    plan for them for ``quiet_s`` seconds, so it does not race the
    controller; then uncordons each injected node known to have been
    schedulable before its injection (or, when the injection could not read it, before
    the controller's first plan for it), ends a node-not-ready (reboot) stage left
    behind, and returns every warm standby a plan swapped in to standby
    (cordoned, standby label, its spec labels back). The injections are read
    from the cluster's state on disk, so a rollback run by another process
    (a new ``chaos run``) finds them. A node cordoned before, or whose state
    before is unknown (the API server was down at the injection, or it was
    never injected into, and no plan says), stays cordoned and is listed in
    ``left_cordoned``. The injected Xids leave the nodes' ``GPUXidError``
    condition (other reports stay), so a controller started later does not
    count them as recent Xids (its storm guard would).
    ``nodes``: restore these instead of every injected one.
    ``plans_within_s``: first wait up to this long for every node to have a plan
    (for Xids written while the API server was down or the controller was
    restarting: it acts once it is back, and a rollback that ran first would
    leave that late cordon in place). Safe when nothing was injected. Returns
    ``{"nodes", "uncordoned", "left_cordoned", "xid_reports_cleared",
    "standbys_restored", "plans", "settled"}``; raises when plans were still
    running at the timeout (the nodes are restored anyway).
    """
    if isinstance(timeout_s, bool) or not isinstance(timeout_s, int | float) or timeout_s < 0:
        raise ActivityFailed(f"timeout_s must be seconds, not {timeout_s!r}")
    if (
        isinstance(plans_within_s, bool)
        or not isinstance(plans_within_s, int | float)
        or plans_within_s < 0
    ):
        raise ActivityFailed(f"plans_within_s must be seconds, not {plans_within_s!r}")
    target = resolve_target(configuration, secrets)
    # the record on disk, with the cluster's state: a rollback in a new process finds it
    injected = (
        journal_injections(target)
        if target.state is not None
        else recorded_injections(target.cluster)
    )
    cordoned_before: dict[str, bool | None] = {}
    for i in injected:  # the first injection into a node tells how it was before
        cordoned_before.setdefault(i["node"], i.get("was_cordoned"))
    if nodes:
        chosen = set(nodes)
        since = time.time() - 3600
    else:
        chosen = set(cordoned_before)
        since = min((parse_iso(i["written_at"]).timestamp() for i in injected), default=time.time())
    if not chosen:
        return {
            "nodes": [],
            "uncordoned": [],
            "left_cordoned": [],
            "xid_reports_cleared": [],
            "standbys_restored": [],
            "plans": {},
            "settled": True,
        }
    plans, settled = _wait_plans_settled(
        target, chosen, since, float(timeout_s), float(quiet_s), float(plans_within_s)
    )
    for name in chosen:
        if cordoned_before.get(name) is None:  # the injection could not read the node
            cordoned_before[name] = cordoned_before_plans(plans, name)
    core = client.CoreV1Api(target.api())
    uncordoned = []
    left_cordoned = []
    cleared: list[str] = []
    for name in sorted(chosen):
        try:
            node: Any = core.read_node(name)
        except ApiException as err:
            if err.status == 404:
                continue
            raise
        if _clear_injected_reports(core, node, [i for i in injected if i["node"] == name]):
            cleared.append(name)
        labels = node.metadata.labels or {}
        if NODE_NOT_READY_LABEL in labels:
            core.patch_node(name, {"metadata": {"labels": {NODE_NOT_READY_LABEL: None}}})
        if not (node.spec and node.spec.unschedulable):
            continue
        if cordoned_before.get(name) is not False:
            # cordoned before the injection, or nobody knows: a person's cordon stays
            left_cordoned.append(name)
            continue
        core.patch_node(
            name,
            {
                "metadata": {"annotations": _rescue_annotations_removed(node)},
                "spec": {"unschedulable": False},
            },
        )
        uncordoned.append(name)
    spec_labels = _spec_labels(target)
    standbys = sorted(
        {
            str((p.get("status") or {}).get("standbyNode"))
            for p in plans
            if (p.get("status") or {}).get("standbyNode")
        }
    )
    for standby in standbys:
        _restore_standby(core, standby, spec_labels.get(standby) if spec_labels else None)
    forget(str(target.cluster), chosen)
    if target.state is not None:
        forget_on_disk(target, chosen)
    phases: dict[str, int] = {}
    for plan in plans:
        phase = str((plan.get("status") or {}).get("phase") or "none")
        phases[phase] = phases.get(phase, 0) + 1
    result = {
        "nodes": sorted(chosen),
        "uncordoned": uncordoned,
        "left_cordoned": left_cordoned,
        "xid_reports_cleared": cleared,
        "standbys_restored": standbys,
        "plans": phases,
        "settled": settled,
    }
    if not settled:
        raise ActivityFailed(
            f"rescue plans on {sorted(chosen)} still ran {timeout_s:g} s into the restore "
            f"(phases {phases}); nodes were restored anyway: {json.dumps(result)}"
        )
    return result
