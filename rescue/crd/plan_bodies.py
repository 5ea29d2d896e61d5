"""A RescuePlan's name and the object the controller creates. Pure.

Names derive from the node and the incident's first report id (or the decision API's
request), so a restarted controller that meets the same incident gets a conflict
(409) instead of a second plan.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

from blackstart.names import NODE_WAS_CORDONED_ANNOTATION as ANNOTATION_NODE_WAS_CORDONED
from blackstart.names import PLAN_FINALIZER, RESCUE_GROUP
from blackstart.names import RESCUE_API_VERSION as API_VERSION
from blackstart.rescue.crd.actions import RescueAction
from blackstart.rescue.crd.validation import Validation

if TYPE_CHECKING:
    from blackstart.rescue.crd.policy import MatchedRule

__all__ = ["api_plan_name", "plan_body", "plan_name"]

GROUP = RESCUE_GROUP

_DNS_LABEL_CHARS = re.compile(r"[^a-z0-9-]")


def _name_with_suffix(node: str, suffix: str) -> str:
    base = _DNS_LABEL_CHARS.sub("-", node.lower()).strip("-") or "node"
    room = 253 - len(suffix) - 1
    if len(base) > room:
        base = base[: room - 11].rstrip("-") + "-" + hashlib.sha256(node.encode()).hexdigest()[:10]
    return f"{base}-{suffix}"


def plan_name(node: str, report_id: str) -> str:
    """The RescuePlan name for the incident that starts with Xid report ``report_id`` on ``node``.

    Derived deterministically, so a restarted controller that meets the same report
    again gets a conflict (409) instead of a second plan. A valid DNS subdomain.
    """
    digest = hashlib.sha256(f"{node}\n{report_id}".encode()).hexdigest()[:12]
    return _name_with_suffix(node, f"xid-{digest}")


def api_plan_name(node: str, request_key: str) -> str:
    """The RescuePlan name for an order posted to the decision API (``request_key`` unique)."""
    digest = hashlib.sha256(f"{node}\n{request_key}".encode()).hexdigest()[:12]
    return _name_with_suffix(node, f"api-{digest}")


def plan_body(
    name: str,
    node: str,
    xids: Sequence[int],
    actions: Sequence[RescueAction],
    *,
    source: Literal["policy", "decision-api"],
    dry_run: bool,
    node_was_cordoned: bool,
    report_ids: Sequence[str] = (),
    first_seen_at: str | None = None,
    rule: MatchedRule | None = None,
    escalate_time: str | None = None,
    validation: Validation | None = None,
) -> dict[str, Any]:
    """The RescuePlan object to create."""
    spec: dict[str, Any] = {
        "nodeName": node,
        "xids": sorted(set(xids)),
        "actions": [action.to_object() for action in actions],
        "source": source,
        "dryRun": dry_run,
    }
    if report_ids:
        # the newest 64 (the CRD bound): the condition holds the newest, a restart compares them
        spec["reportIds"] = list(dict.fromkeys(report_ids))[-64:]
    if first_seen_at:
        spec["firstSeenAt"] = first_seen_at
    if rule is not None and not rule.is_default:
        spec["rule"] = {
            "policy": rule.policy_name,
            "index": rule.rule_index,
            "priority": rule.rule.priority,
        }
    if escalate_time:
        spec["escalateTime"] = escalate_time
    check = validation or (rule.rule.validation if rule is not None else None)
    if check is not None:
        spec["validation"] = check.to_object()
    return {
        "apiVersion": API_VERSION,
        "kind": "RescuePlan",
        "metadata": {
            "name": name,
            "labels": {
                "app.kubernetes.io/managed-by": "blackstart-rescue",
                f"{GROUP}/node": node[:63] if len(node) <= 63 else "long-name",
            },
            "annotations": {ANNOTATION_NODE_WAS_CORDONED: "true" if node_was_cordoned else "false"},
            "finalizers": [PLAN_FINALIZER],
        },
        "spec": spec,
    }
