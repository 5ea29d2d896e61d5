"""API Priority and Fairness: confine a noisy identity to a small priority level of its own.

The mitigation for a telemetry storm that does not need the offending
DaemonSet removed first: a FlowSchema that matches the storm's identity and
sends its requests to a PriorityLevelConfiguration with a tiny share of the
API server's concurrency, so the rest of the cluster (controllers, CoreDNS,
the rescue controller) keeps its latency. :func:`apply_apf_mitigation`
creates both, or replaces objects of that name already there (keeping what
they were on the replacement, :mod:`blackstart.actions._originals`);
:func:`remove_apf_mitigation` is the rollback: it puts replaced objects back and
deletes created ones.
"""

from typing import Any

from chaoslib.exceptions import ActivityFailed
from chaoslib.types import Configuration, Secrets
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from blackstart.actions._originals import original_body, replacing
from blackstart.arguments import whole_number
from blackstart.health import wait_until
from blackstart.target import resolve_target

__all__ = ["apply_apf_mitigation", "remove_apf_mitigation"]

DEFAULT_NAME = "blackstart-telemetry-confined"
DEFAULT_GROUP = "blackstart:telemetry-agents"


def priority_level(
    name: str, shares: int, queues: int, queue_length: int, reject: bool
) -> dict[str, Any]:
    """The PriorityLevelConfiguration body (flowcontrol.apiserver.k8s.io/v1)."""
    if reject:
        limit_response: dict[str, Any] = {"type": "Reject"}
    else:
        limit_response = {
            "type": "Queue",
            "queuing": {
                "queues": queues,
                "handSize": min(2, queues),
                "queueLengthLimit": queue_length,
            },
        }
    return {
        "apiVersion": "flowcontrol.apiserver.k8s.io/v1",
        "kind": "PriorityLevelConfiguration",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/managed-by": "blackstart"}},
        "spec": {
            "type": "Limited",
            "limited": {
                "nominalConcurrencyShares": shares,
                "lendablePercent": 0,
                "borrowingLimitPercent": 0,
                "limitResponse": limit_response,
            },
        },
    }


def flow_schema(name: str, subject_kind: str, subject: str, precedence: int) -> dict[str, Any]:
    """The FlowSchema body that routes every request of ``subject`` to priority level ``name``."""
    if subject_kind == "Group":
        who: dict[str, Any] = {"kind": "Group", "group": {"name": subject}}
    elif subject_kind == "User":
        who = {"kind": "User", "user": {"name": subject}}
    else:
        namespace, _, account = subject.partition("/")
        who = {
            "kind": "ServiceAccount",
            "serviceAccount": {"namespace": namespace, "name": account},
        }
    return {
        "apiVersion": "flowcontrol.apiserver.k8s.io/v1",
        "kind": "FlowSchema",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/managed-by": "blackstart"}},
        "spec": {
            "priorityLevelConfiguration": {"name": name},
            "matchingPrecedence": precedence,
            "distinguisherMethod": {"type": "ByUser"},
            "rules": [
                {
                    "subjects": [who],
                    "resourceRules": [
                        {
                            "verbs": ["*"],
                            "apiGroups": ["*"],
                            "resources": ["*"],
                            "clusterScope": True,
                            "namespaces": ["*"],
                        }
                    ],
                    "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}],
                }
            ],
        },
    }


def _check(
    subject_kind: str, subject: str, shares: int, queues: int, queue_length: int, precedence: int
) -> None:
    if subject_kind not in ("Group", "User", "ServiceAccount"):
        raise ActivityFailed(
            f"subject_kind must be Group, User or ServiceAccount, not {subject_kind!r}"
        )
    if not subject or (subject_kind == "ServiceAccount" and "/" not in subject):
        raise ActivityFailed(
            "subject must name the group or user (a ServiceAccount as namespace/name), "
            f"not {subject!r}"
        )
    for name, value, low, high in (
        ("concurrency_shares", shares, 1, 1000),
        ("queues", queues, 1, 128),
        ("queue_length", queue_length, 1, 1000),
        ("precedence", precedence, 2, 9999),
    ):
        whole_number(name, value, low, high)


def _create_or_replace(create: Any, replace: Any, name: str, body: dict[str, Any]) -> str:
    try:
        create(body)
        return "created"
    except ApiException as err:
        if err.status != 409:
            raise ActivityFailed(
                f"creating {body['kind']} {name} failed: {err.status} {err.body}"
            ) from err
    replace(name, body)
    return "replaced"


def apply_apf_mitigation(
    subject: str = DEFAULT_GROUP,
    subject_kind: str = "Group",
    name: str = DEFAULT_NAME,
    concurrency_shares: int = 1,
    queues: int = 4,
    queue_length: int = 16,
    reject: bool = False,
    precedence: int = 500,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> dict[str, Any]:
    """Confine ``subject``'s requests to a priority level of their own, with a tiny share.

    - ``subject`` / ``subject_kind``: who to confine (default the group of the
      telemetry storm's identity, ``blackstart:telemetry-agents``); a
      ServiceAccount is written ``namespace/name``.
    - ``concurrency_shares``: nominal concurrency shares of the priority level
      (the built-in ``global-default`` has 20, ``workload-low`` 100).
    - ``queues`` / ``queue_length``: its fair queuing; with ``reject: true`` excess
      requests get a 429 at once instead of queuing.
    - ``precedence``: matchingPrecedence of the FlowSchema (lower wins; the
      built-in schemas for workloads start at 9000).

    Creates (or replaces, keeping the originals for the rollback) the
    PriorityLevelConfiguration and the FlowSchema, both named ``name``, and
    waits until the API server has taken the schema up (its ``Dangling``
    condition is False). Returns ``{"name", "flow_schema",
    "priority_level"}``. Roll back with ``remove_apf_mitigation``.
    """
    _check(subject_kind, subject, concurrency_shares, queues, queue_length, precedence)
    target = resolve_target(configuration, secrets)
    api = client.FlowcontrolApiserverV1Api(target.api())
    plc = priority_level(name, concurrency_shares, queues, queue_length, reject)
    fs = flow_schema(name, subject_kind, subject, precedence)

    as_dict = api.api_client.sanitize_for_serialization

    def replace_level(n: str, body: dict[str, Any]) -> Any:
        current = as_dict(api.read_priority_level_configuration(n))
        return api.replace_priority_level_configuration(n, replacing(current, body))  # type: ignore[arg-type]

    def replace_schema(n: str, body: dict[str, Any]) -> Any:
        current = as_dict(api.read_flow_schema(n))
        return api.replace_flow_schema(n, replacing(current, body))  # type: ignore[arg-type]

    plc_done = _create_or_replace(api.create_priority_level_configuration, replace_level, name, plc)
    fs_done = _create_or_replace(api.create_flow_schema, replace_schema, name, fs)

    def taken_up() -> bool:
        status = api.read_flow_schema(name).status
        for cond in (status.conditions or []) if status else []:
            if cond.type == "Dangling":
                return bool(cond.status == "False")
        return False

    ok, _ = wait_until(taken_up, 15.0, 0.5)
    if not ok:
        raise ActivityFailed(
            f"the API server did not take FlowSchema {name} up within 15 s "
            "(no Dangling=False condition); is API Priority and Fairness enabled?"
        )
    return {"name": name, "flow_schema": fs_done, "priority_level": plc_done, "subject": subject}


def remove_apf_mitigation(
    name: str = DEFAULT_NAME, configuration: Configuration = None, secrets: Secrets = None
) -> dict[str, Any]:
    """Roll back ``apply_apf_mitigation``: the FlowSchema and PriorityLevelConfiguration ``name``.

    Each one the mitigation replaced is put back as it was; each one it created
    is deleted. Safe when they do not exist, and from another process than the
    one that applied it. Returns ``{"name", "deleted": [...], "restored": [...]}``
    (kinds).
    """
    target = resolve_target(configuration, secrets)
    api = client.FlowcontrolApiserverV1Api(target.api())
    as_dict = api.api_client.sanitize_for_serialization
    deleted: list[str] = []
    restored: list[str] = []
    kinds: tuple[tuple[str, Any, Any, Any], ...] = (
        ("FlowSchema", api.read_flow_schema, api.replace_flow_schema, api.delete_flow_schema),
        (
            "PriorityLevelConfiguration",
            api.read_priority_level_configuration,
            api.replace_priority_level_configuration,
            api.delete_priority_level_configuration,
        ),
    )
    for kind, read, replace, delete in kinds:
        try:
            current = as_dict(read(name))
            try:
                original = original_body(current)
            except ValueError as err:
                raise ActivityFailed(str(err)) from err
            if original is not None:
                replace(name, original)
                restored.append(kind)
                continue
            version = current["metadata"]["resourceVersion"]
            delete(
                name,
                body=client.V1DeleteOptions(
                    preconditions=client.V1Preconditions(resource_version=version)
                ),
            )
            deleted.append(kind)
        except ApiException as err:
            if err.status != 404:
                raise ActivityFailed(
                    f"rolling back {kind} {name} failed: {err.status} {err.reason}"
                ) from err
    return {"name": name, "deleted": deleted, "restored": restored}
