"""Durations as RescuePolicy users write them: ``waittime`` and ``threshold.window``.

Two spellings are accepted, and may be mixed, because users move over from a
cloud vendor's plug-in and also know Kubernetes and Go:

- the vendor form: ``10min``, ``20min``, ``1day3h5min``, ``2d``, ``45s``, ``1h``;
- the Go form (``time.ParseDuration``): ``1h30m``, ``90s``, ``1.5h``.

A duration is one or more ``<number><unit>`` parts, summed. The units are
``day`` or ``d`` (24 hours), ``h``, ``min`` or ``m`` (minutes) and ``s``. A number
has one to six digits and an optional fraction (``1.5h``; not ``.5h`` or ``5.h``).
The whole text is at most :data:`WAITTIME_MAX_LENGTH` characters, and the duration
at most :data:`WAITTIME_MAX` (365 days), each part's number rounded up to a whole
one for that check (``365day0.5s`` is too long), so the CRD's CEL rule, which can
only read whole numbers, draws the line at the same place. Deliberately
not accepted: whitespace, capitals, a sign, a bare ``0`` without a unit, and
Go's sub-second units (``ms``, ``us``, ``ns``), since none of the waits here is
shorter than a second. Like Go, parts may come in any order and repeat
(``30m1h`` is 1h30m).

:data:`WAITTIME_PATTERN` is the same grammar as a regular expression; the
RescuePolicy CRD (``rescue/deploy/crds.yaml``) uses it, so the API server
and :data:`WAITTIME_CEL_RULE`, so the API server rejects exactly the texts
:func:`parse_waittime` rejects. The bound on the duration matters: without it
``999999d999999d`` fits the pattern and the length, yet no duration that long can be
written back (:func:`format_waittime`), and a plan for such a policy broke the
controller's intake.
"""

from __future__ import annotations

import re
from datetime import timedelta
from fractions import Fraction

__all__ = [
    "WAITTIME_CEL_RULE",
    "WAITTIME_EXAMPLES",
    "WAITTIME_MAX",
    "WAITTIME_MAX_LENGTH",
    "WAITTIME_PATTERN",
    "format_waittime",
    "optional_waittime",
    "parse_waittime",
]

WAITTIME_PATTERN = r"^([0-9]{1,6}(\.[0-9]{1,9})?(day|d|h|min|m|s))+$"
"""The accepted grammar, written for Go's RE2 (as the API server applies CRD patterns)."""

WAITTIME_MAX_LENGTH = 64
"""The longest accepted text, in characters (the CRD's ``maxLength``)."""

WAITTIME_MAX = timedelta(days=365)
"""The longest accepted duration (each part's number rounded up to a whole one)."""

WAITTIME_CEL_RULE = (
    "self.findAll('[0-9]+([.][0-9]+)?[a-z]+').map(p, "
    "(int(p.findAll('[0-9]+')[0]) + (p.contains('.') ? 1 : 0)) * "
    "(p.endsWith('day') || p.endsWith('d') ? 86400 : "
    "(p.endsWith('h') ? 3600 : (p.endsWith('s') ? 1 : 60)))).sum() <= 31536000"
)
"""The CRD's CEL rule for :data:`WAITTIME_MAX`: the parts' whole numbers (a fraction
counts as one more) times their units, summed, at most 365 days in seconds."""

WAITTIME_EXAMPLES = "10min, 20min, 1day3h5min, 2d, 45s (vendor form) or 1h30m, 90s, 1.5h (Go form)"
"""Accepted examples, shown in every error message about a malformed duration."""

_SECONDS_PER_UNIT = {"day": 86400, "d": 86400, "h": 3600, "min": 60, "m": 60, "s": 1}

# re.ASCII so a Unicode digit never counts; \Z rather than $ because Python's $ also
# matches before a final newline and Go's does not.
_WHOLE = re.compile(r"(?:[0-9]{1,6}(?:\.[0-9]{1,9})?(?:day|d|h|min|m|s))+\Z", re.ASCII)
_PART = re.compile(r"([0-9]{1,6})(?:\.([0-9]{1,9}))?(day|d|h|min|m|s)", re.ASCII)


def parse_waittime(text: str) -> timedelta:
    """Return the duration ``text`` spells, in the vendor or the Go form.

    ``parse_waittime("1day3h5min")`` is 1 day, 3 hours and 5 minutes;
    ``parse_waittime("1.5h")`` is 90 minutes. Anything else, including the empty
    string, raises :class:`ValueError` naming the text and showing accepted
    examples; use :func:`optional_waittime` where empty means "not set".
    """
    if not isinstance(text, str):
        raise ValueError(f"waittime {text!r} is not a string: write it as {WAITTIME_EXAMPLES}")
    if len(text) > WAITTIME_MAX_LENGTH:
        raise ValueError(
            f"waittime {text[:WAITTIME_MAX_LENGTH]!r}... is longer than "
            f"{WAITTIME_MAX_LENGTH} characters: write it as {WAITTIME_EXAMPLES}"
        )
    if not _WHOLE.match(text):
        raise ValueError(
            f"waittime {text!r} is not a duration: write it as {WAITTIME_EXAMPLES}; "
            "units are day or d, h, min or m, s, with no spaces"
        )
    seconds = Fraction(0)
    ceiling = 0  # as the CRD's CEL rule counts: each part rounded up to a whole number
    for whole, fraction, unit in _PART.findall(text):
        number = Fraction(int(whole))
        if fraction:
            number += Fraction(int(fraction), 10 ** len(fraction))
        seconds += number * _SECONDS_PER_UNIT[unit]
        ceiling += (int(whole) + (1 if fraction else 0)) * _SECONDS_PER_UNIT[unit]
    if ceiling > WAITTIME_MAX.total_seconds():
        raise ValueError(
            f"waittime {text!r} is longer than the longest allowed, "
            f"{format_waittime(WAITTIME_MAX)}: write a shorter duration, e.g. 30min or 1day"
        )
    return timedelta(microseconds=round(seconds * 1_000_000))


def optional_waittime(text: str | None) -> timedelta | None:
    """Like :func:`parse_waittime`, but ``None`` or ``""`` mean "not set" and give ``None``.

    The decision API sends ``"waittime": ""`` for actions that take none.
    """
    if text is None or text == "":
        return None
    return parse_waittime(text)


def format_waittime(duration: timedelta) -> str:
    """Write ``duration`` in the vendor form: ``1day3h5min``, ``20min``, ``45s``, ``0s``.

    Sub-second remainders are written as a fraction of a second (``1.5s``); the
    text always parses back to the same duration. Raises :class:`ValueError` for
    a negative duration or one of a million days or more, which have no spelling.
    """
    if duration < timedelta(0):
        raise ValueError(f"waittime {duration} is negative: durations here are never negative")
    if duration >= timedelta(days=1_000_000):
        raise ValueError(f"waittime {duration} is too long: the longest is 999999day23h59min59s")
    micros = duration // timedelta(microseconds=1)
    days, micros = divmod(micros, 86400 * 1_000_000)
    hours, micros = divmod(micros, 3600 * 1_000_000)
    minutes, micros = divmod(micros, 60 * 1_000_000)
    seconds, micros = divmod(micros, 1_000_000)
    parts: list[str] = []
    if days:
        parts.append(f"{days}day")
    if hours:
        parts.append(f"{hours}h")
    if minutes:
        parts.append(f"{minutes}min")
    if micros:
        parts.append(f"{seconds}.{micros:06d}".rstrip("0") + "s")
    elif seconds or not parts:
        parts.append(f"{seconds}s")
    return "".join(parts)
