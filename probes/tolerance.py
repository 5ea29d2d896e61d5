"""Tolerances that follow the experiment's configuration.

Chaos Toolkit substitutes ``${variables}`` into a tolerance only when the
tolerance is a plain string, so a range such as ``[384, 100000]`` is fixed in
the JSON. A tolerance that is a probe has its arguments substituted like any
activity's: ``at_least`` with ``minimum: "${gpu_floor}"`` lets the same
experiment hold 384 GPUs on the default local fleet and 8 on the kind fleet.
Chaos Toolkit passes the checked probe's output as ``value``.
"""

from chaoslib.types import Configuration, Secrets

from blackstart.arguments import number

__all__ = ["at_least"]


def at_least(
    value: float | None = None,
    minimum: float = 0,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> bool:
    """The probe's output is a number no smaller than ``minimum``."""
    floor = number("minimum", minimum, 0, 1e12)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return value >= floor
