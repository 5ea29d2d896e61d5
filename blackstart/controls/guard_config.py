"""The guard control's configuration: which targets it lets in, and its arguments' checks."""

from __future__ import annotations

import os
from typing import Any

from chaoslib.exceptions import InterruptExecution
from chaoslib.types import Configuration

from blackstart.target import Target

__all__ = ["ALLOWED_ENV", "ALLOWED_KEY", "allow_list", "check_limits", "target_allowed"]

ALLOWED_ENV = "BLACKSTART_ALLOWED_CONTEXTS"
ALLOWED_KEY = "blackstart_allowed_contexts"


def allow_list(configuration: Configuration, argument: list[str] | None) -> list[str]:
    """The allow-list: the argument, the configuration key and the environment variable."""
    found = list(argument or [])
    configured = (configuration or {}).get(ALLOWED_KEY)
    if isinstance(configured, str):
        found += configured.split(",")
    elif isinstance(configured, list):
        found += [str(c) for c in configured]
    found += os.environ.get(ALLOWED_ENV, "").split(",")
    return [c.strip() for c in found if c and c.strip()]


def target_allowed(target: Target, allowed: list[str]) -> tuple[bool, str]:
    """(allowed, why): blackstart-created clusters and allow-listed contexts only.

    A context the user named (``blackstart gameday --context``, or any context that is
    not blackstart's own name for its cluster) must be allow-listed even when blackstart
    created the cluster behind it: the name is what the user vouches for.
    """
    if target.named_context is not None:
        if target.named_context in allowed:
            return True, f"context {target.named_context!r} is allow-listed"
        behind = (
            f" (blackstart's {target.provider} cluster {target.cluster!r} is behind it, but a "
            "context named from outside must be allow-listed too)"
            if target.cluster
            else ""
        )
        return False, (
            f"refusing to inject faults through kubeconfig context {target.named_context!r}"
            f"{behind}: it is not allow-listed; if you mean it, add it to ${ALLOWED_ENV} "
            f"(comma-separated, e.g. {ALLOWED_ENV}={target.named_context}) or the guard's "
            "allowed_contexts"
        )
    if target.provider in ("local", "kind") and target.cluster:
        return True, f"{target.provider} cluster {target.cluster!r} was created by blackstart"
    if target.context and target.context in allowed:
        return True, f"context {target.context!r} is allow-listed"
    return False, (
        f"refusing to inject faults into {target.describe()}: it is not a cluster blackstart "
        f"created and its context is not allow-listed; if you mean it, add the context to "
        f"${ALLOWED_ENV} (comma-separated) or the guard's allowed_contexts"
    )


def check_limits(
    max_apiserver_p99_s: Any,
    max_cordoned_nodes: Any,
    p99_window: Any,
    interval_s: Any,
    max_blind_s: Any = None,
) -> None:
    if max_blind_s is not None and (
        isinstance(max_blind_s, bool)
        or not isinstance(max_blind_s, int | float)
        or max_blind_s <= 0
    ):
        raise InterruptExecution(
            f"guard: max_blind_s must be seconds above 0 or null, not {max_blind_s!r}"
        )
    if max_apiserver_p99_s is not None and (
        isinstance(max_apiserver_p99_s, bool)
        or not isinstance(max_apiserver_p99_s, int | float)
        or max_apiserver_p99_s <= 0
    ):
        raise InterruptExecution(
            "guard: max_apiserver_p99_s must be seconds above 0 or null, "
            f"not {max_apiserver_p99_s!r}"
        )
    if max_cordoned_nodes is not None and (
        isinstance(max_cordoned_nodes, bool)
        or not isinstance(max_cordoned_nodes, int)
        or max_cordoned_nodes < 0
    ):
        raise InterruptExecution(
            f"guard: max_cordoned_nodes must be a whole number or null, not {max_cordoned_nodes!r}"
        )
    if (
        not isinstance(p99_window, str)
        or not p99_window[:-1].isdigit()
        or p99_window[-1] not in "sm"
    ):
        raise InterruptExecution(f"guard: p99_window must look like 30s or 1m, not {p99_window!r}")
    if isinstance(interval_s, bool) or not isinstance(interval_s, int | float) or interval_s < 0.2:
        raise InterruptExecution(f"guard: interval_s must be at least 0.2 s, not {interval_s!r}")
