"""Probe outputs and tolerances in one short line, as the reports show them."""

import json
from typing import Any


def summarize_value(value: Any, limit: int = 160) -> str:
    """A probe's output in one short line (JSON, truncated)."""
    if isinstance(value, str):
        text = value
    else:
        try:
            text = json.dumps(value, sort_keys=True, default=str)
        except (TypeError, ValueError):
            text = repr(value)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def describe_tolerance(tolerance: Any) -> str:
    """A probe's tolerance as people read it: ``== true``, ``in [0.99, 1]``, ``matches /x/``."""
    if tolerance is None:
        return "(none)"
    if isinstance(tolerance, bool):
        return f"== {str(tolerance).lower()}"
    if isinstance(tolerance, int | float | str):
        return f"== {json.dumps(tolerance)}"
    if isinstance(tolerance, list):
        return "one of " + json.dumps(tolerance)
    if isinstance(tolerance, dict):
        kind = tolerance.get("type")
        target = tolerance.get("target")
        on = f" ({target})" if target else ""
        if kind == "range" and isinstance(tolerance.get("range"), list):
            low, high = (tolerance["range"] + [None, None])[:2]
            return f"in [{low}, {high}]{on}"
        if kind == "regex":
            return f"matches /{tolerance.get('pattern', '')}/{on}"
        if kind == "jsonpath":
            path = tolerance.get("path", "")
            if "expect" in tolerance:
                return f"{path} == {json.dumps(tolerance['expect'])}{on}"
            return f"{path} matches{on}"
        if kind == "probe":
            provider = tolerance.get("provider")
            func = provider.get("func", "") if isinstance(provider, dict) else ""
            label = tolerance.get("name") or func
            return f"probe {label}" if label else "probe"
        return summarize_value(tolerance, 120)
    return summarize_value(tolerance, 120)
