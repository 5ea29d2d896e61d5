"""Pacing of API requests: a token bucket and exponential backoff with full jitter.

The agent runs on every GPU node; a thousand agents retrying in lock-step is how
a telemetry roll-out took control planes down. So every request takes a token
from a :class:`TokenBucket` (a bounded rate per process), and after a 429, a 5xx
or a connection error the next attempt waits :func:`backoff_delay` seconds:
uniformly random in ``[0, min(cap, base * 2**attempt)]`` ("full jitter"), and
never less than the server's ``Retry-After``.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

__all__ = [
    "RateLimiter",
    "TokenBucket",
    "backoff_delay",
    "backoff_schedule",
    "is_retryable_status",
    "retry_after_seconds",
]


class TokenBucket:
    """At most ``rate`` requests per second on average, ``burst`` at once.

    Thread-safe. ``clock`` and ``sleep`` are injectable so tests need no waiting.
    """

    def __init__(
        self,
        rate: float,
        burst: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate <= 0:
            raise ValueError(f"the request rate must be positive, not {rate}")
        self.rate = rate
        self.capacity = max(1.0, burst if burst is not None else rate)
        self._tokens = self.capacity
        self._clock = clock
        self._stamp = clock()
        self._lock = threading.Lock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.capacity, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now

    def try_take(self) -> float:
        """Take a token if there is one and return 0.0; else the seconds until there is one."""
        with self._lock:
            self._refill()
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                return 0.0
            return (1.0 - self._tokens) / self.rate

    def take(
        self,
        stop: threading.Event | None = None,
        sleep: Callable[[float], Any] | None = None,
    ) -> bool:
        """Wait for a token and take it; False if ``stop`` was set while waiting."""
        while True:
            wait = self.try_take()
            if wait == 0.0:
                return True
            if stop is not None:
                if stop.wait(wait):
                    return False
            else:
                (sleep or time.sleep)(wait)


def backoff_delay(
    attempt: int,
    base: float = 0.5,
    cap: float = 10.0,
    retry_after: float | None = None,
    rng: Callable[[], float] = random.random,
) -> float:
    """Seconds to wait before retry number ``attempt`` (0 for the first retry).

    Full jitter: uniform in ``[0, min(cap, base * 2**attempt)]``; at least
    ``retry_after`` when the server sent one (capped at ``cap`` too, so a wild
    header cannot stall reporting for hours).
    """
    ceiling = min(cap, base * float(1 << min(max(attempt, 0), 32)))
    delay = rng() * ceiling
    if retry_after is not None:
        delay = max(delay, min(retry_after, cap))
    return delay


def backoff_schedule(attempts: int, base: float = 0.5, cap: float = 10.0) -> list[float]:
    """The upper bound of the delay of each of the first ``attempts`` retries."""
    return [min(cap, base * float(1 << min(attempt, 32))) for attempt in range(attempts)]


def retry_after_seconds(headers: Mapping[str, str] | None) -> float | None:
    """The ``Retry-After`` header in seconds (integer form), or None when absent or malformed."""
    if not headers:
        return None
    value = None
    for key, val in headers.items():
        if key.lower() == "retry-after":
            value = val
            break
    if value is None:
        return None
    try:
        seconds = float(str(value).strip())
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


def is_retryable_status(status: int | None) -> bool:
    """429 and 5xx are worth retrying later; None stands for a connection error."""
    return status is None or status == 429 or status >= 500


class RateLimiter:
    """An asyncio :class:`TokenBucket` with priorities: ``qps`` a second, ``burst`` at once.

    ``acquire(priority)`` waits while callers of a more urgent priority (a smaller
    number) are waiting, so reports never delay the requests that move plans forward.
    """

    def __init__(self, qps: float, burst: int, clock: Callable[[], float] = time.monotonic):
        if qps <= 0 or burst < 1:
            raise ValueError(f"qps must be above 0 and burst at least 1, got {qps}, {burst}")
        self.qps = qps
        self.burst = burst
        self._bucket = TokenBucket(qps, burst, clock)
        self._waiting: dict[int, int] = {}

    def _more_urgent_waiting(self, priority: int) -> bool:
        return any(count for level, count in self._waiting.items() if level < priority)

    async def acquire(self, priority: int = 0) -> None:
        """Wait for a token; more urgent callers (smaller ``priority``) go first."""
        self._waiting[priority] = self._waiting.get(priority, 0) + 1
        try:
            while True:
                if self._more_urgent_waiting(priority):
                    await asyncio.sleep(max(0.001, 1.0 / self.qps))
                    continue
                wait = self._bucket.try_take()
                if wait == 0.0:
                    return
                await asyncio.sleep(max(0.001, wait))
        finally:
            self._waiting[priority] -= 1
