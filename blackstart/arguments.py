"""Argument checks for activities: one definition of each, with messages that name the value.

Chaos Toolkit passes experiment JSON through as it is, so a string where a
number belongs reaches the activity; each check raises :class:`ActivityFailed`
saying which argument was wrong, what it must be, and what it was.
"""

from collections.abc import Iterable
from typing import Any

from chaoslib.exceptions import ActivityFailed


def whole_number(name: str, value: Any, low: int, high: int) -> int:
    """``value`` as an int in ``[low, high]`` (booleans refused)."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ActivityFailed(f"{name} must be a whole number from {low} to {high}, not {value!r}")
    return value


def number(name: str, value: Any, low: float, high: float) -> float:
    """``value`` as a float in ``[low, high]`` (booleans refused)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise ActivityFailed(f"{name} must be a number from {low:g} to {high:g}, not {value!r}")
    return float(value)


def seconds(name: str, value: Any, low: float, high: float) -> float:
    """A duration in seconds in ``[low, high]``."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise ActivityFailed(
            f"{name} must be a number of seconds from {low:g} to {high:g}, not {value!r}"
        )
    return float(value)


def flag(name: str, value: Any) -> bool:
    """A JSON boolean (``"false"`` as a string is refused, not taken as true)."""
    if not isinstance(value, bool):
        raise ActivityFailed(f"{name} must be true or false, not {value!r}")
    return value


def one_of(name: str, value: Any, choices: Iterable[str]) -> str:
    """One of ``choices``."""
    allowed = tuple(choices)
    if value not in allowed:
        raise ActivityFailed(f"{name} must be one of {', '.join(allowed)}, not {value!r}")
    return str(value)
