"""RescuePolicy and WarmStandbyPolicy: the objects, and which rule and standby apply.

Pure logic, no cluster: the controller hands in the policy objects it watches and
the node's labels, and gets back what to do.

Choosing a rule (:func:`select_rule`), for one Xid code on one node:

- A rule applies when its ``errorCode`` holds the code and its ``nodeSelector``
  matches the node's labels (``any``: at least one label is on the node with that
  value; ``all``: every label is; no selector: every node).
- The global rule (priority 0, no ``errorCode``, no ``nodeSelector``) applies to
  every Xid on every node. Every other rule has a priority of 1 or more, so the
  global rule is the fallback.
- Among the rules that apply, across all policies, the highest priority wins. At
  equal priority the policy whose name sorts first wins, then the rule that comes
  first in it: the choice never depends on the order the controller saw the
  policies in.
- With no RescuePolicy at all, the built-in default applies: cordon
  (:data:`DEFAULT_ACTIONS`), so a fresh install takes a failing GPU node out of
  scheduling and changes nothing else. With policies but no rule that applies, and
  no global rule, nothing is done.

The checks made when parsing mirror the CRD's schema and CEL rules
(``rescue/deploy/crds.yaml``), so a policy that reached the controller some other
way (an API server without CEL, a file, the decision API) is held to the same rules.
Errors are :class:`PolicyError` and name the field, as the API server does.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from types import MappingProxyType
from typing import Any, Literal, TypeGuard, get_args

from blackstart.rescue.crd.actions import (
    ACTION_NAMES,
    DEFAULT_ACTIONS,
    PRECONDITION_FAILURE,
    ActionName,
    PolicyError,
    RescueAction,
    action_from_object,
    check_preconditions,
)
from blackstart.rescue.crd.threshold_tracker import ThresholdTracker
from blackstart.rescue.crd.validation import Validation, validation_from_object
from blackstart.rescue.crd.waittime import parse_waittime

__all__ = [
    "ACTION_NAMES",
    "DEFAULT_ACTIONS",
    "DEFAULT_MATCH",
    "GROUP",
    "PRECONDITION_FAILURE",
    "VERSION",
    "ActionName",
    "MatchedRule",
    "NodeSelector",
    "Operator",
    "PolicyError",
    "RescueAction",
    "RescuePolicy",
    "RescueRule",
    "StandbyMatch",
    "Threshold",
    "ThresholdTracker",
    "WarmStandbyPolicy",
    "action_from_object",
    "check_preconditions",
    "choose_standby",
    "labels_match",
    "policy_from_object",
    "rescue_policy_from_object",
    "select_rule",
    "warm_standby_policy_from_object",
]

from blackstart.names import RESCUE_GROUP as GROUP
from blackstart.names import RESCUE_VERSION as VERSION

Operator = Literal["any", "all"]

_OPERATORS: tuple[Operator, ...] = get_args(Operator)

# The CRD's bounds, repeated so that objects from anywhere are held to them.
_MAX_RULES = 64
_MAX_ERROR_CODES = 64
_MAX_LABELS = 64
_MAX_MATCHES = 64
_MAX_PRIORITY = 1_000_000
_MAX_THRESHOLD_COUNT = 10_000
_ERROR_CODE = re.compile(r"[0-9]{1,3}\Z", re.ASCII)


def _is_int(value: object) -> TypeGuard[int]:
    # bool is an int in Python but not in the API server's schema.
    return isinstance(value, int) and not isinstance(value, bool)


# --- the objects -----------------------------------------------------------------------------


def labels_match(wanted: Mapping[str, str], node_labels: Mapping[str, str]) -> bool:
    """True when every label in ``wanted`` is on the node with the same value."""
    return all(node_labels.get(key) == value for key, value in wanted.items())


@dataclass(frozen=True)
class NodeSelector:
    """Which nodes a rule applies to: ``any`` of the labels, or ``all`` of them."""

    operator: Operator
    labels: Mapping[str, str] = field(hash=False)

    def __post_init__(self) -> None:
        if self.operator not in _OPERATORS:
            raise PolicyError(f"nodeSelector.operator must be any or all, got {self.operator!r}")
        if not self.labels:
            raise PolicyError("nodeSelector.labels must hold at least one label")
        object.__setattr__(self, "labels", MappingProxyType(dict(self.labels)))

    def matches(self, node_labels: Mapping[str, str]) -> bool:
        """True when the node's labels satisfy the selector."""
        if self.operator == "all":
            return labels_match(self.labels, node_labels)
        return any(node_labels.get(key) == value for key, value in self.labels.items())


@dataclass(frozen=True)
class Threshold:
    """Act only after ``count`` occurrences on a node within ``window``."""

    count: int
    window: timedelta

    def __post_init__(self) -> None:
        if not _is_int(self.count) or not 1 <= self.count <= _MAX_THRESHOLD_COUNT:
            raise PolicyError(
                f"threshold.count must be a whole number from 1 to {_MAX_THRESHOLD_COUNT}, "
                f"got {self.count!r}"
            )
        if self.window <= timedelta(0):
            raise PolicyError("threshold.window must be longer than zero")


@dataclass(frozen=True)
class RescueRule:
    """One rule of a RescuePolicy: which Xid codes on which nodes lead to which actions."""

    priority: int
    actions: tuple[RescueAction, ...]
    error_codes: frozenset[int] = frozenset()
    node_selector: NodeSelector | None = None
    threshold: Threshold | None = None
    validation: Validation | None = None

    def __post_init__(self) -> None:
        if not _is_int(self.priority) or not 0 <= self.priority <= _MAX_PRIORITY:
            raise PolicyError(
                f"priority must be a whole number from 0 to {_MAX_PRIORITY}, got {self.priority!r}"
            )
        if self.priority == 0 and self.error_codes:
            raise PolicyError(
                "errorCode must be absent when priority is 0: a priority-0 rule is the "
                "global policy; give the rule a priority of 1 or more to match Xid codes"
            )
        if self.priority == 0 and self.node_selector is not None:
            raise PolicyError(
                "nodeSelector must be absent when priority is 0: a priority-0 rule is the "
                "global policy; give the rule a priority of 1 or more to select nodes"
            )
        if self.priority > 0 and not self.error_codes:
            raise PolicyError(
                "errorCode is required when priority is above 0; only the global policy "
                "(priority 0) goes without it"
            )
        _check_actions(self.actions, "rule")

    @property
    def is_global(self) -> bool:
        """True for the global policy: priority 0, every Xid code, every node."""
        return self.priority == 0

    def matches(self, xid_code: int, node_labels: Mapping[str, str]) -> bool:
        """True when this rule applies to ``xid_code`` on a node with ``node_labels``."""
        if self.is_global:
            return True
        if xid_code not in self.error_codes:
            return False
        return self.node_selector is None or self.node_selector.matches(node_labels)


def _check_actions(actions: tuple[RescueAction, ...], where: str) -> None:
    if not actions:
        raise PolicyError("actions must hold at least one action")
    names = [action.name for action in actions]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise PolicyError(
            f"actions must name each action at most once; {', '.join(duplicates)} "
            f"appears more than once in the {where}"
        )
    failure = check_preconditions(actions)
    if failure is not None:
        raise PolicyError(f"actions: {failure}")


@dataclass(frozen=True)
class RescuePolicy:
    """A RescuePolicy object: its name and its rules, in the order written."""

    name: str
    rules: tuple[RescueRule, ...]


@dataclass(frozen=True)
class StandbyMatch:
    """One entry of a WarmStandbyPolicy: failed nodes with ``origin_labels`` may be
    replaced by standbys with ``target_labels`` (every label, same value)."""

    origin_labels: Mapping[str, str] = field(hash=False)
    target_labels: Mapping[str, str] = field(hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "origin_labels", MappingProxyType(dict(self.origin_labels)))
        object.__setattr__(self, "target_labels", MappingProxyType(dict(self.target_labels)))


@dataclass(frozen=True)
class WarmStandbyPolicy:
    """A WarmStandbyPolicy object: its name and its matches."""

    name: str
    matches: tuple[StandbyMatch, ...]


@dataclass(frozen=True)
class MatchedRule:
    """The rule :func:`select_rule` chose: the rule, and where it came from.

    ``policy_name`` is ``None`` for the built-in default (:data:`DEFAULT_MATCH`),
    used when no RescuePolicy exists.
    """

    rule: RescueRule
    policy_name: str | None
    rule_index: int

    @property
    def actions(self) -> tuple[RescueAction, ...]:
        return self.rule.actions

    @property
    def is_default(self) -> bool:
        """True for the built-in default (no RescuePolicy existed)."""
        return self.policy_name is None

    @property
    def key(self) -> tuple[str, int]:
        """Identifies the rule for counting occurrences: (policy name, rule index)."""
        return (self.policy_name or "", self.rule_index)


DEFAULT_MATCH = MatchedRule(
    rule=RescueRule(priority=0, actions=DEFAULT_ACTIONS), policy_name=None, rule_index=0
)
"""What :func:`select_rule` returns when there is no RescuePolicy at all: cordon."""


# --- parsing the objects ---------------------------------------------------------------------


def _mapping(value: object, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise PolicyError(f"{where} must be an object, got {type(value).__name__}")
    return value


def _list(value: object, where: str, *, min_items: int, max_items: int) -> list[Any]:
    if not isinstance(value, list | tuple):
        raise PolicyError(f"{where} must be a list, got {type(value).__name__}")
    if not min_items <= len(value) <= max_items:
        raise PolicyError(
            f"{where} must hold {min_items} to {max_items} items, it holds {len(value)}"
        )
    return list(value)


def _labels(value: object, where: str, *, min_items: int) -> dict[str, str]:
    labels = _mapping(value, where)
    if not min_items <= len(labels) <= _MAX_LABELS:
        raise PolicyError(
            f"{where} must hold {min_items} to {_MAX_LABELS} labels, it holds {len(labels)}"
        )
    for key, label_value in labels.items():
        if not isinstance(key, str) or not isinstance(label_value, str):
            raise PolicyError(
                f"{where}: label {key!r}: keys and values must be strings, "
                f'got {label_value!r}; quote values such as "true" or "1"'
            )
        if len(label_value) > 63:
            raise PolicyError(f"{where}.{key}: a label value is at most 63 characters")
    return dict(labels)


def _name(obj: Mapping[str, Any], kind: str) -> str:
    metadata = obj.get("metadata")
    name = metadata.get("name") if isinstance(metadata, Mapping) else None
    if not isinstance(name, str) or not name:
        raise PolicyError(f"{kind}: metadata.name is missing")
    return name


def _threshold_from_object(value: object, where: str) -> Threshold:
    obj = _mapping(value, where)
    count = obj.get("count")
    window_text = obj.get("window")
    if window_text is None:
        raise PolicyError(f"{where}.window is required, e.g. 10min or 1h")
    try:
        window = parse_waittime(window_text)
    except ValueError as err:
        raise PolicyError(f"{where}.window: {err}") from None
    try:
        return Threshold(count=count, window=window)  # type: ignore[arg-type]  # checked there
    except PolicyError as err:
        raise PolicyError(f"{where}.{str(err).removeprefix('threshold.')}") from None


def _rule_from_object(value: object, where: str) -> RescueRule:
    obj = _mapping(value, where)
    priority = obj.get("priority")
    if priority is None:
        raise PolicyError(f"{where}.priority is required: 0 for the global policy, else 1 or more")
    codes: frozenset[int] = frozenset()
    if "errorCode" in obj:
        raw_codes = _list(
            obj["errorCode"], f"{where}.errorCode", min_items=1, max_items=_MAX_ERROR_CODES
        )
        for code in raw_codes:
            if not isinstance(code, str) or not _ERROR_CODE.match(code):
                raise PolicyError(
                    f"{where}.errorCode: {code!r} is not an Xid code; write codes as strings "
                    f'of one to three digits, e.g. ["48", "62"]'
                )
        if len(set(raw_codes)) != len(raw_codes):
            raise PolicyError(f"{where}.errorCode: a code appears more than once")
        codes = frozenset(int(code) for code in raw_codes)
    selector = None
    if "nodeSelector" in obj:
        selector_obj = _mapping(obj["nodeSelector"], f"{where}.nodeSelector")
        operator = selector_obj.get("operator")
        if operator not in _OPERATORS:
            raise PolicyError(f"{where}.nodeSelector.operator must be any or all, got {operator!r}")
        labels = _labels(selector_obj.get("labels"), f"{where}.nodeSelector.labels", min_items=1)
        selector = NodeSelector(operator=operator, labels=labels)
    if "actions" not in obj:
        raise PolicyError(f"{where}.actions is required, e.g. [{{name: cordon}}]")
    raw_actions = _list(
        obj["actions"], f"{where}.actions", min_items=1, max_items=len(ACTION_NAMES)
    )
    actions = tuple(
        action_from_object(action, f"{where}.actions[{index}]")
        for index, action in enumerate(raw_actions)
    )
    threshold = None
    if "threshold" in obj:
        threshold = _threshold_from_object(obj["threshold"], f"{where}.threshold")
    validation = None
    if "validation" in obj:
        validation = validation_from_object(obj["validation"], f"{where}.validation")
    try:
        return RescueRule(
            priority=priority,
            actions=actions,
            error_codes=codes,
            node_selector=selector,
            threshold=threshold,
            validation=validation,
        )
    except PolicyError as err:
        raise PolicyError(f"{where}.{err}") from None


def rescue_policy_from_object(obj: Mapping[str, Any]) -> RescuePolicy:
    """Parse a RescuePolicy object (as the API server returns it) into a :class:`RescuePolicy`.

    Raises :class:`PolicyError` naming the policy and the field that is malformed.
    """
    name = _name(obj, "RescuePolicy")
    where = "spec.rules"
    try:
        spec = _mapping(obj.get("spec"), "spec")
        if "rules" not in spec:
            raise PolicyError(f"{where} is required")
        raw_rules = _list(spec["rules"], where, min_items=1, max_items=_MAX_RULES)
        rules = tuple(
            _rule_from_object(rule, f"{where}[{index}]") for index, rule in enumerate(raw_rules)
        )
    except PolicyError as err:
        raise PolicyError(f"RescuePolicy {name}: {err}") from None
    return RescuePolicy(name=name, rules=rules)


def warm_standby_policy_from_object(obj: Mapping[str, Any]) -> WarmStandbyPolicy:
    """Parse a WarmStandbyPolicy object into a :class:`WarmStandbyPolicy`.

    Raises :class:`PolicyError` naming the policy and the field that is malformed.
    """
    name = _name(obj, "WarmStandbyPolicy")
    where = "spec.matches"
    try:
        spec = _mapping(obj.get("spec"), "spec")
        if "matches" not in spec:
            raise PolicyError(f"{where} is required")
        matches = []
        raw_matches = _list(spec["matches"], where, min_items=1, max_items=_MAX_MATCHES)
        for index, raw in enumerate(raw_matches):
            match = _mapping(raw, f"{where}[{index}]")
            sides = []
            for side in ("originNode", "targetNode"):
                side_obj = _mapping(match.get(side), f"{where}[{index}].{side}")
                sides.append(
                    _labels(side_obj.get("labels"), f"{where}[{index}].{side}.labels", min_items=1)
                )
            matches.append(StandbyMatch(origin_labels=sides[0], target_labels=sides[1]))
    except PolicyError as err:
        raise PolicyError(f"WarmStandbyPolicy {name}: {err}") from None
    return WarmStandbyPolicy(name=name, matches=tuple(matches))


def policy_from_object(obj: Mapping[str, Any]) -> RescuePolicy | WarmStandbyPolicy:
    """Parse a RescuePolicy or WarmStandbyPolicy object, by its ``kind``."""
    kind = obj.get("kind")
    if kind == "RescuePolicy":
        return rescue_policy_from_object(obj)
    if kind == "WarmStandbyPolicy":
        return warm_standby_policy_from_object(obj)
    raise PolicyError(f"kind must be RescuePolicy or WarmStandbyPolicy, got {kind!r}")


# --- deciding --------------------------------------------------------------------------------


def select_rule(
    policies: Iterable[RescuePolicy], xid_code: int, node_labels: Mapping[str, str]
) -> MatchedRule | None:
    """The rule that applies to ``xid_code`` on a node with ``node_labels``, or ``None``.

    The highest priority among the rules that apply wins; ties go to the policy whose
    name sorts first, then the earlier rule. With no policy at all this is
    :data:`DEFAULT_MATCH` (cordon); with policies but no rule that applies, ``None``.
    """
    best: tuple[int, str, int] | None = None
    chosen: MatchedRule | None = None
    any_policy = False
    for policy in policies:
        any_policy = True
        for index, rule in enumerate(policy.rules):
            if not rule.matches(xid_code, node_labels):
                continue
            rank = (-rule.priority, policy.name, index)
            if best is None or rank < best:
                best = rank
                chosen = MatchedRule(rule=rule, policy_name=policy.name, rule_index=index)
    if not any_policy:
        return DEFAULT_MATCH
    return chosen


def choose_standby(
    failed_node_labels: Mapping[str, str],
    standbys: Mapping[str, Mapping[str, str]],
    warm_standby_policies: Iterable[WarmStandbyPolicy],
    rng: random.Random,
) -> str | None:
    """Pick the warm standby to replace a failed node; its name, or ``None``.

    ``standbys`` maps each available standby node's name to its labels. The
    candidates are the standbys carrying every ``targetNode`` label of a match whose
    ``originNode`` labels are all on the failed node, in any WarmStandbyPolicy. One
    candidate is chosen at random with ``rng``; when there is none (no match applies,
    or no standby fits one), one of all the standbys is. ``None`` when there are no
    standbys. The names are sorted before choosing, so a seeded ``rng`` gives the
    same answer whatever order ``standbys`` is in.
    """
    if not standbys:
        return None
    targets = [
        match.target_labels
        for policy in warm_standby_policies
        for match in policy.matches
        if labels_match(match.origin_labels, failed_node_labels)
    ]
    candidates = sorted(
        name
        for name, labels in standbys.items()
        if any(labels_match(target, labels) for target in targets)
    )
    return rng.choice(candidates or sorted(standbys))
