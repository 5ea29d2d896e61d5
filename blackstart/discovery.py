"""``chaos discover blackstart``: every activity of the extension, typed as action or probe.

chaoslib calls :func:`blackstart.discover`, which lists the public functions
(``__all__``) of each module of ``blackstart.actions`` as actions and of
``blackstart.probes`` as probes: the type comes from the package, never from a
guess at the function's name.
"""

from __future__ import annotations

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
)


def discover_extension(discover_system: bool = True) -> dict[str, Any]:
    """The discovery document: activities, and the target system when asked and reachable."""
    discovery: dict[str, Any] = initialize_discovery_result("blackstart", __version__, "kubernetes")
    for module in ACTION_MODULES:
        discovery["activities"].extend(discover_actions(module))
    for module in PROBE_MODULES:
        discovery["activities"].extend(discover_probes(module))
    if discover_system:
        discovery["system"] = _system()
    return discovery


def _system() -> dict[str, Any] | None:
    from blackstart.target import resolve_target, target_summary

    try:
        return target_summary(resolve_target({}, {}))
    except Exception:
        return None  # no cluster to describe: discovery of the activities still stands
