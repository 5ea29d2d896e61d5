"""``chaos discover blackstart``: every activity of the extension, typed as action or probe.

chaoslib calls :func:`blackstart.discover`, which lists the public functions
(``__all__``) of each module of ``blackstart.actions`` as actions and of
``blackstart.probes`` as probes: the type comes from the package, never from a
guess at the function's name.

chaoslib names only bare types (``str``, ``dict``); annotations such as
``list[str]``, ``dict[str, Any]`` or ``int | None`` would all show as
``object``, so each argument and return type is named here from the real
annotation (:func:`portable_type`). Docstrings lose their reST roles
(``:func:`x``` reads ``x``), since discovery shows them as plain text.
"""

import importlib
import inspect
import re
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any

from chaoslib.discovery.discover import (
    discover_actions,
    discover_probes,
    initialize_discovery_result,
)

from blackstart import __version__

ACTION_MODULES = (
    "blackstart.actions.apiserver",
    "blackstart.actions.apf",
    "blackstart.actions.control_plane",
    "blackstart.actions.dns",
    "blackstart.actions.dns_survival",
    "blackstart.actions.network",
    "blackstart.actions.nodes",
    "blackstart.actions.rescue_policy",
    "blackstart.actions.rollout",
    "blackstart.actions.seed",
    "blackstart.actions.telemetry_storm",
    "blackstart.actions.workload",
    "blackstart.actions.xid",
)
PROBE_MODULES = (
    "blackstart.probes.apiserver",
    "blackstart.probes.dns",
    "blackstart.probes.fleet",
    "blackstart.probes.lockout",
    "blackstart.probes.prometheus",
    "blackstart.probes.rescue",
    "blackstart.probes.telemetry_storm",
    "blackstart.probes.tolerance",
)


def discover_extension(discover_system: bool = True) -> dict[str, Any]:
    """The discovery document: activities, and the target system when asked and reachable."""
    discovery: dict[str, Any] = initialize_discovery_result("blackstart", __version__, "kubernetes")
    for module in ACTION_MODULES:
        discovery["activities"].extend(_typed(discover_actions(module)))
    for module in PROBE_MODULES:
        discovery["activities"].extend(_typed(discover_probes(module)))
    if discover_system:
        discovery["system"] = _system()
    return discovery


def _system() -> dict[str, Any] | None:
    from blackstart.target import resolve_target, target_summary

    try:
        return target_summary(resolve_target({}, {}))
    except Exception:
        return None  # no cluster to describe: discovery of the activities still stands


_PORTABLE: dict[Any, str] = {
    bool: "boolean",
    int: "integer",
    float: "number",
    str: "string",
    bytes: "byte",
    set: "set",
    frozenset: "set",
    tuple: "tuple",
    list: "list",
    dict: "mapping",
    type(None): "null",
}
_ROLE = re.compile(r":[a-z]+:`~?([^`]+)`")
_LITERAL = re.compile(r"``([^`]+)``")


def portable_type(annotation: Any) -> str:
    """The Chaos Toolkit type name of a real annotation.

    ``X | None`` is named after ``X``; generic containers after their origin
    (``list[str]`` is ``list``, ``dict[str, Any]`` and ``Mapping`` are
    ``mapping``); a ``Literal`` after its values' type. ``object`` only for
    what has no portable name (``Any``).
    """
    if annotation is None or annotation is type(None):
        return "null"
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        named = [a for a in typing.get_args(annotation) if a is not type(None)]
        kinds = {portable_type(a) for a in named}
        return kinds.pop() if len(kinds) == 1 else "object"
    if origin is typing.Literal:
        kinds = {portable_type(type(v)) for v in typing.get_args(annotation)}
        return kinds.pop() if len(kinds) == 1 else "object"
    if origin is not None:
        annotation = origin
    if annotation in _PORTABLE:
        return _PORTABLE[annotation]
    if isinstance(annotation, type):
        if issubclass(annotation, Mapping):
            return "mapping"
        if issubclass(annotation, (set, frozenset)):
            return "set"
        if issubclass(annotation, Sequence) and not issubclass(annotation, str):
            return "list"
    return "object"


def plain_doc(doc: str | None) -> str | None:
    """A docstring without reST roles or double backticks, as discovery shows it."""
    if doc is None:
        return None
    return _LITERAL.sub(r"`\1`", _ROLE.sub(lambda m: f"`{m.group(1).split('.')[-1]}`", doc))


def _typed(activities: list[Any]) -> list[dict[str, Any]]:
    out = []
    for activity in activities:
        func = getattr(importlib.import_module(activity["mod"]), activity["name"])
        hints = typing.get_type_hints(func)
        sig = inspect.signature(func)
        if "return" in hints:
            activity["return_type"] = portable_type(hints["return"])
        for arg in activity["arguments"]:
            if arg["name"] in hints and sig.parameters[arg["name"]].annotation is not sig.empty:
                arg["type"] = portable_type(hints[arg["name"]])
        activity["doc"] = plain_doc(activity.get("doc"))
        out.append(activity)
    return out
