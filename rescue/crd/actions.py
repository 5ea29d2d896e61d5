"""The actions a RescuePolicy rule or a RescuePlan orders, and their attributes. Pure.

An action is ``{"name": ..., "attribute": {...}}`` in the CRDs. The attributes:

- ``waittime`` (drain, reboot): how long the drain may take; how long to wait for the
  node to be Ready again after the reboot order;
- ``unCordon: "true"`` (reboot): uncordon the node once it is Ready again;
- ``force: "true"`` (drain): evict pods no controller owns, which nothing recreates
  (``kubectl drain --force``); without it such a pod stops the drain, as in kubectl;
- ``deleteEmptyDirData: "true"`` (drain): evict pods with emptyDir volumes, whose data
  goes with them (``kubectl drain --delete-emptydir-data``); without it such a pod stops
  the drain, as in kubectl;
- ``escalateOverPdb: "true"`` (drain): when the drain runs out of time and what is left
  are pods a PodDisruptionBudget protects, go on to the plan's reboot anyway. Without it
  the plan stops there and leaves the node cordoned: ten plans escalating at once could
  take several replicas of a quorum workload down together.

The attributes that are flags are strings (``"true"``/``"false"``), as the vendor's
``unCordon`` is.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal, get_args

from blackstart.rescue.crd.waittime import format_waittime, parse_waittime

__all__ = [
    "ACTION_NAMES",
    "DEFAULT_ACTIONS",
    "DRAIN_FLAGS",
    "PRECONDITION_FAILURE",
    "ActionName",
    "PolicyError",
    "RescueAction",
    "action_from_object",
    "check_preconditions",
]

ActionName = Literal["cordon", "drain", "reboot", "enableWarmStandby", "unCordon"]
ACTION_NAMES: tuple[ActionName, ...] = get_args(ActionName)
_TAKES_WAITTIME = frozenset({"drain", "reboot"})
_REPLACES_NODE_AFTER = frozenset({"cordon", "drain", "reboot"})

DRAIN_FLAGS = {
    "force": "force",
    "deleteEmptyDirData": "delete_emptydir_data",
    "escalateOverPdb": "escalate_over_pdb",
}
"""The drain's flag attributes (CRD name -> :class:`RescueAction` field)."""

PRECONDITION_FAILURE = "Failures to meet preconditions"
"""The start of the message for actions ordered without what they need (the vendor's text)."""


class PolicyError(ValueError):
    """A policy object, rule or action is malformed; the message names the field."""


@dataclass(frozen=True)
class RescueAction:
    """One action of a rule or plan.

    ``waittime`` is only for ``drain`` (how long the drain may take) and ``reboot``
    (how long to wait for Ready); ``uncordon`` only for ``reboot`` (uncordon the node
    once it is Ready again); ``force``, ``delete_emptydir_data`` and
    ``escalate_over_pdb`` only for ``drain`` (see the module docstring). Anything else
    raises :class:`PolicyError`.
    """

    name: ActionName
    waittime: timedelta | None = None
    uncordon: bool = False
    force: bool = False
    delete_emptydir_data: bool = False
    escalate_over_pdb: bool = False

    def __post_init__(self) -> None:
        if self.name not in ACTION_NAMES:
            raise PolicyError(
                f"name: unknown action {self.name!r}; the actions are {', '.join(ACTION_NAMES)}"
            )
        if self.waittime is not None and self.name not in _TAKES_WAITTIME:
            raise PolicyError(
                f"attribute.waittime is only allowed on the drain and reboot actions, "
                f"not on {self.name}"
            )
        if self.waittime is not None and self.waittime < timedelta(0):
            raise PolicyError(f"attribute.waittime must not be negative, got {self.waittime}")
        if self.uncordon and self.name != "reboot":
            raise PolicyError(
                f"attribute.unCordon is only allowed on the reboot action, not on {self.name}"
            )
        for key, attr in DRAIN_FLAGS.items():
            if getattr(self, attr) and self.name != "drain":
                raise PolicyError(
                    f"attribute.{key} is only allowed on the drain action, not on {self.name}"
                )

    def to_object(self) -> dict[str, Any]:
        """The action in the CRD's shape, ``{"name": ..., "attribute": {...}}``, for a plan."""
        attribute: dict[str, str] = {}
        if self.waittime is not None:
            attribute["waittime"] = format_waittime(self.waittime)
        if self.uncordon:
            attribute["unCordon"] = "true"
        for key, attr in DRAIN_FLAGS.items():
            if getattr(self, attr):
                attribute[key] = "true"
        obj: dict[str, Any] = {"name": self.name}
        if attribute:
            obj["attribute"] = attribute
        return obj


DEFAULT_ACTIONS: tuple[RescueAction, ...] = (RescueAction("cordon"),)
"""What is done when no RescuePolicy exists at all: cordon the node, nothing else."""


def check_preconditions(actions: Iterable[RescueAction | str]) -> str | None:
    """``None`` when the actions can be carried out together, else why not.

    The message is the vendor's: ``Failures to meet preconditions enableWarmStandby
    (...)`` when a warm standby is ordered without cordon, drain or reboot, which
    are what take the failed node out of service.
    """
    names = {action if isinstance(action, str) else action.name for action in actions}
    if "enableWarmStandby" in names and not names & _REPLACES_NODE_AFTER:
        return (
            f"{PRECONDITION_FAILURE} enableWarmStandby "
            "(it needs cordon, drain or reboot among the same actions)"
        )
    return None


def _flag(attribute: Mapping[str, Any], key: str, name: str, allowed: str, where: str) -> bool:
    text = attribute.get(key)
    if text not in (None, "true", "false"):
        raise PolicyError(
            f'{where}.attribute.{key} must be "true" or "false" (a string), got {text!r}'
        )
    if text is not None and name != allowed:
        raise PolicyError(
            f"{where}.attribute.{key} is only allowed on the {allowed} action, not on {name}"
        )
    return text == "true"


def action_from_object(obj: Mapping[str, Any], where: str = "action") -> RescueAction:
    """Parse one action in the CRD's shape.

    For example ``{"name": "drain", "attribute": {"waittime": "20min"}}``; ``where``
    is the field path used in error messages.
    """
    if not isinstance(obj, Mapping):
        raise PolicyError(f"{where} must be an object, got {type(obj).__name__}")
    name = obj.get("name")
    if not isinstance(name, str) or name not in ACTION_NAMES:
        raise PolicyError(
            f"{where}.name: unknown action {name!r}; the actions are {', '.join(ACTION_NAMES)}"
        )
    attribute = obj.get("attribute", {})
    if not isinstance(attribute, Mapping):
        raise PolicyError(f"{where}.attribute must be an object, got {type(attribute).__name__}")
    waittime_text = attribute.get("waittime")
    try:
        waittime = None if waittime_text is None else parse_waittime(waittime_text)
    except ValueError as err:
        raise PolicyError(f"{where}.attribute.waittime: {err}") from None
    uncordon = _flag(attribute, "unCordon", name, "reboot", where)
    flags = {attr: _flag(attribute, key, name, "drain", where) for key, attr in DRAIN_FLAGS.items()}
    try:
        return RescueAction(name=name, waittime=waittime, uncordon=uncordon, **flags)
    except PolicyError as err:
        raise PolicyError(f"{where}.{err}") from None
