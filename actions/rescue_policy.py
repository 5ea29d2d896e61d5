"""Rescue policies: what the GPU self-heal controller does about which Xid on which node.

:func:`apply_rescue_policy` creates (or replaces) a ``RescuePolicy``
(``rescue.blackstart.dev/v1``, cluster-scoped), in the vendor's shape::

    {"rules": [{"priority": 10, "errorCode": ["62"],
                "nodeSelector": {"operator": "any", "labels": {"blackstart.dev/role": "gpu"}},
                "actions": [{"name": "cordon"}]}]}

and :func:`apply_warm_standby_policy` a ``WarmStandbyPolicy``. The API server
validates both against the CRD schemas: a malformed policy makes the action
fail with the API server's message naming the field. A policy of that name
already there (an admin's) is replaced, and kept on the replacement
(:mod:`blackstart.actions._originals`). Their rollbacks,
:func:`delete_rescue_policy` and :func:`delete_warm_standby_policy`, put such an
original back and delete a policy the action created; they are safe when the
policy does not exist.
"""

import json
from typing import Any

from chaoslib.exceptions import ActivityFailed
from chaoslib.types import Configuration, Secrets
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from blackstart.actions._originals import original_body, replacing
from blackstart.names import RESCUE_POLICIES, WARM_STANDBY_POLICIES
from blackstart.target import resolve_target

__all__ = [
    "apply_rescue_policy",
    "apply_warm_standby_policy",
    "delete_rescue_policy",
    "delete_warm_standby_policy",
]

from blackstart.names import RESCUE_GROUP as GROUP
from blackstart.names import RESCUE_VERSION as VERSION


def _api_message(err: ApiException) -> str:
    try:
        return str(json.loads(err.body or "{}").get("message") or err.reason)
    except (ValueError, AttributeError):
        return str(err.reason)


def _apply(
    plural: str,
    kind: str,
    name: str,
    spec: dict[str, Any],
    configuration: Configuration,
    secrets: Secrets,
) -> dict[str, Any]:
    if not isinstance(name, str) or not name:
        raise ActivityFailed(f"name must name the {kind}, not {name!r}")
    api = client.CustomObjectsApi(resolve_target(configuration, secrets).api())
    body: dict[str, Any] = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": kind,
        "metadata": {"name": name, "labels": {"app.kubernetes.io/managed-by": "blackstart"}},
        "spec": spec,
    }
    try:
        api.create_cluster_custom_object(GROUP, VERSION, plural, body)
        done = "created"
    except ApiException as err:
        if err.status == 404:
            raise ActivityFailed(
                f"the {kind} CRD is not installed: start the rescue controller "
                "(cluster control rescue: true, or `blackstart rescue install`)"
            ) from err
        if err.status != 409:
            raise ActivityFailed(f"{kind} {name} rejected: {_api_message(err)}") from err
        current: Any = api.get_cluster_custom_object(GROUP, VERSION, plural, name)
        try:
            api.replace_cluster_custom_object(
                GROUP, VERSION, plural, name, replacing(current, body)
            )
        except ApiException as err2:
            raise ActivityFailed(f"{kind} {name} rejected: {_api_message(err2)}") from err2
        done = "replaced"
    return {"name": name, "kind": kind, "done": done}


def _delete(
    plural: str, kind: str, name: str, configuration: Configuration, secrets: Secrets
) -> dict[str, Any]:
    """Put back the object ``name`` replaced, or delete it when the action created it."""
    api = client.CustomObjectsApi(resolve_target(configuration, secrets).api())
    gone = {"name": name, "kind": kind, "deleted": False, "restored": False}
    try:
        current: Any = api.get_cluster_custom_object(GROUP, VERSION, plural, name)
        try:
            original = original_body(current)
        except ValueError as err:
            raise ActivityFailed(str(err)) from err
        if original is not None:
            api.replace_cluster_custom_object(GROUP, VERSION, plural, name, original)
            return {**gone, "restored": True}
        version = current["metadata"]["resourceVersion"]
        api.delete_cluster_custom_object(
            GROUP,
            VERSION,
            plural,
            name,
            body=client.V1DeleteOptions(
                preconditions=client.V1Preconditions(resource_version=version)
            ),
        )
    except ApiException as err:
        if err.status == 404:
            return gone
        raise ActivityFailed(f"rolling back {kind} {name} failed: {_api_message(err)}") from err
    return {**gone, "deleted": True}


def apply_rescue_policy(
    name: str,
    rules: list[dict[str, Any]],
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> dict[str, Any]:
    """Create or replace RescuePolicy ``name`` with ``rules`` (the vendor's rule shape).

    Each rule: ``priority`` (higher wins; 0 with no ``errorCode``/``nodeSelector``
    is the global policy), ``errorCode`` (Xid codes as strings),
    ``nodeSelector`` (``operator`` any|all, ``labels``), ``actions`` (``cordon``,
    ``drain``/``reboot`` with ``attribute.waittime``, ``reboot`` with
    ``attribute.unCordon``, ``enableWarmStandby``, ``unCordon``), optional
    ``threshold``. Returns ``{"name", "kind", "done"}`` (``created``, or
    ``replaced`` when a policy of that name was there: the rollback puts it
    back); raises with the API server's message when the policy is malformed.
    Roll back with ``delete_rescue_policy``.
    """
    if not isinstance(rules, list) or not rules:
        raise ActivityFailed(f"rules must be a non-empty list of rules, not {rules!r}")
    return _apply(RESCUE_POLICIES, "RescuePolicy", name, {"rules": rules}, configuration, secrets)


def delete_rescue_policy(
    name: str, configuration: Configuration = None, secrets: Secrets = None
) -> dict[str, Any]:
    """Roll back ``apply_rescue_policy``: put back the RescuePolicy it replaced, else delete it.

    Returns ``{"name", "kind", "deleted", "restored"}``; safe when the policy
    does not exist, and from another process than the one that applied it.
    """
    return _delete(RESCUE_POLICIES, "RescuePolicy", name, configuration, secrets)


def apply_warm_standby_policy(
    name: str,
    matches: list[dict[str, Any]],
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> dict[str, Any]:
    """Create or replace WarmStandbyPolicy ``name``: which standby may replace which node.

    ``matches``: ``[{"originNode": {"labels": {...}}, "targetNode": {"labels": {...}}}]``.
    Roll back with ``delete_warm_standby_policy``.
    """
    if not isinstance(matches, list) or not matches:
        raise ActivityFailed(f"matches must be a non-empty list, not {matches!r}")
    return _apply(
        WARM_STANDBY_POLICIES,
        "WarmStandbyPolicy",
        name,
        {"matches": matches},
        configuration,
        secrets,
    )


def delete_warm_standby_policy(
    name: str, configuration: Configuration = None, secrets: Secrets = None
) -> dict[str, Any]:
    """Roll back ``apply_warm_standby_policy``: put back the policy it replaced, else delete it.

    Returns ``{"name", "kind", "deleted", "restored"}``; safe when absent.
    """
    return _delete(WARM_STANDBY_POLICIES, "WarmStandbyPolicy", name, configuration, secrets)
