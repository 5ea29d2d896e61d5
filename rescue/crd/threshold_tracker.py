"""Counting Xid occurrences for rule thresholds (``threshold: {count, window}``). Pure."""

from __future__ import annotations

import bisect
from collections import OrderedDict
from datetime import datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from blackstart.rescue.crd.policy import MatchedRule

__all__ = ["ThresholdTracker"]


class ThresholdTracker:
    """Counts Xid occurrences per (node, rule, Xid code) in a sliding window, for thresholds.

    ``should_act`` records one occurrence and says whether the rule's threshold is
    now met: ``count`` occurrences, the oldest less than ``window`` before the
    newest. Meeting it clears the count, so the next plan for that node and rule
    needs ``count`` fresh occurrences; this is what stops a flapping GPU from
    ordering a plan per line. A rule without a threshold always acts, and nothing
    is recorded for it.

    Memory is bounded: at most ``count`` times per (node, rule), and at most
    ``max_keys`` pairs, the least recently seen forgotten first.
    """

    def __init__(self, max_keys: int = 100_000) -> None:
        if max_keys < 1:
            raise ValueError(f"max_keys must be at least 1, got {max_keys}")
        self._max_keys = max_keys
        self._seen: OrderedDict[tuple[str, str, int, int | None], list[datetime]] = OrderedDict()

    def should_act(
        self, node: str, rule: MatchedRule, now: datetime, xid: int | None = None
    ) -> bool:
        """Record an occurrence of Xid ``xid`` on ``node`` at ``now`` for ``rule``; True when
        it should act.

        Each Xid code is counted apart (13, 31, 43 and 45 are often one job's fault: one
        of each is not a GPU repeating itself). ``now`` is when the Xid was seen; use
        timezone-aware times throughout. Occurrences may arrive out of order: the window
        ends at the newest one seen.
        """
        threshold = rule.rule.threshold
        if threshold is None:
            return True
        key = (node, *rule.key, xid)
        times = self._seen.pop(key, [])
        bisect.insort(times, now)
        newest = times[-1]
        times = [t for t in times[-threshold.count :] if t > newest - threshold.window]
        if len(times) >= threshold.count:
            return True  # fired: the count starts again from nothing
        self._seen[key] = times
        while len(self._seen) > self._max_keys:
            self._seen.popitem(last=False)
        return False

    def pending(self, node: str, rule: MatchedRule, now: datetime, xid: int | None = None) -> int:
        """How many occurrences of ``xid`` on ``node`` for ``rule`` are within the window
        ending at ``now``."""
        threshold = rule.rule.threshold
        if threshold is None:
            return 0
        times = self._seen.get((node, *rule.key, xid), [])
        return sum(1 for t in times if now - threshold.window < t <= now)

    def forget(self, node: str) -> None:
        """Drop every count for ``node``, e.g. when it was deleted or remediated."""
        for key in [key for key in self._seen if key[0] == node]:
            del self._seen[key]
