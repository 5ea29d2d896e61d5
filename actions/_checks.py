"""Argument checks the activities share: a value out of bounds raises naming it and the range."""

from typing import Any

from chaoslib.exceptions import ActivityFailed


def number(name: str, value: Any, low: float, high: float, integer: bool = False) -> float:
    """``value`` as a float when it is a number (a whole one with ``integer``) from ``low`` to
    ``high``; else raise :class:`ActivityFailed` naming ``name`` and the range."""
    ok_type = isinstance(value, int) if integer else isinstance(value, int | float)
    if isinstance(value, bool) or not ok_type or not low <= value <= high:
        kind = "a whole number" if integer else "a number"
        raise ActivityFailed(f"{name} must be {kind} from {low:g} to {high:g}, not {value!r}")
    return float(value)


def flag(name: str, value: Any) -> bool:
    """``value`` when it is true or false; else raise naming ``name``."""
    if not isinstance(value, bool):
        raise ActivityFailed(f"{name} must be true or false, not {value!r}")
    return value
