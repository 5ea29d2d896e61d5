"""Percentiles, computed one way everywhere: nearest rank."""

import math
from collections.abc import Iterable


def percentile(values: Iterable[float], q: float) -> float | None:
    """The ``q`` quantile (0..1) of ``values`` by nearest rank; None when there are none.

    Nearest rank returns a value that was observed (no interpolation): the
    p99 of 100 latencies is the 99th smallest.
    """
    ordered = sorted(values)
    if not ordered:
        return None
    rank = max(1, math.ceil(q * len(ordered) - 1e-9))
    return ordered[min(rank, len(ordered)) - 1]
