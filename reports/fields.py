"""Reading fields of untrusted JSON (journals, their extensions) without failing.

Each helper returns a usable value and, given a ``problems`` list, notes what
was wrong and where, for the report to show.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

__all__ = [
    "as_list",
    "is_number",
    "json_type",
    "mapping",
    "number",
    "parse_time",
    "text",
    "time_field",
]


def parse_time(value: Any) -> datetime | None:
    """An ISO 8601 timestamp as an aware UTC datetime (naive ones are taken as UTC)."""
    if not isinstance(value, str) or not value:
        return None
    try:
        when = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC)


def time_field(value: Any, where: str, problems: list[str] | None) -> datetime | None:
    when = parse_time(value)
    if when is None and value is not None and problems is not None:
        problems.append(f"{where}: {value!r} is not an ISO 8601 time; ignored")
    return when


def as_list(raw: Any, where: str, problems: list[str]) -> Sequence[Any]:
    if raw is None:
        return ()
    if isinstance(raw, list):
        return raw
    problems.append(f"{where} is {json_type(raw)}, not a list; ignored")
    return ()


def text(value: Any) -> str:
    return value if isinstance(value, str) else ("" if value is None else str(value))


def number(value: Any) -> float | None:
    return float(value) if is_number(value) else None


def mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, dict) else {}


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def json_type(value: Any) -> str:
    """What a JSON value is, with its article: "an object", "an array", "a string", "null"..."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return f"a {type(value).__name__}"
