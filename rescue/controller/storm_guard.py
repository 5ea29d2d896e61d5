"""The storm guard: how much of the fleet the controller may remediate at once. Pure.

Remediation storms are how a self-heal controller becomes the incident: a bad
driver roll-out or a flapping agent reports Xids on half the fleet, and the
controller cordons, drains and reboots it all. The guard holds three lines:

- at most ``max_concurrent_plans`` plans run at once;
- at most ``max_unavailable_share`` of the nodes a plan's rule matches are *held*
  by the controller at once (a node is held while a plan runs on it, and while it
  stays cordoned by a plan). The allowance is ``floor(share x matching nodes)``,
  but never less than one, or a small pool could never be healed; so with 48 GPU
  nodes and a share of 0.25 at most 12 are out of service because of the
  controller, whatever arrives;
- a node is rebooted at most ``reboot_cap`` times within ``reboot_window``: past
  that, the plan stops before the reboot and leaves the node cordoned for a person
  (a reboot loop on a node with failing hardware is worse than a cordoned node).

Past the first two lines no plan is made: the controller posts a Warning Event,
counts a refusal, and retries the node when a plan ends.

And one line for the fleet: when more than ``max_reporting_share`` of the GPU nodes
reported Xids within ``reporting_window``, the controller stops acting and alerts
(the ``..._fleet_xid_storm`` gauge, Warning Events): so many GPUs failing at once is
more likely a driver roll-out or a bad job than hardware, and remediating it would
only add to the outage.

The pool a share is taken of counts nodes by what stays put while they are
remediated: GPU capacity, not allocatable (which the device plugin drops for
unhealthy GPUs and while it registers again after a reboot), and the nodes the
controller holds stay in it.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass

from blackstart.rescue.crd.waittime import format_waittime, parse_waittime

__all__ = [
    "Refusal",
    "StormGuard",
    "parse_reboot_cap",
]

_REBOOT_CAP = re.compile(r"([0-9]{1,4})/(.+)\Z")


def parse_reboot_cap(text: str) -> tuple[int, dt.timedelta]:
    """Parse ``N/WINDOW`` (e.g. ``3/1day``, ``2/30min``, ``1/1h30m``) into (N, window).

    Raises :class:`ValueError` naming what is wrong.
    """
    match = _REBOOT_CAP.match(text.strip())
    if not match:
        raise ValueError(
            f"reboot cap {text!r} is not N/WINDOW: write e.g. 3/1day (at most 3 reboots of a "
            "node within a day) or 2/30min"
        )
    count = int(match.group(1))
    if count < 1:
        raise ValueError(f"reboot cap {text!r}: N must be at least 1")
    try:
        window = parse_waittime(match.group(2))
    except ValueError as err:
        raise ValueError(f"reboot cap {text!r}: {err}") from None
    if window <= dt.timedelta(0):
        raise ValueError(f"reboot cap {text!r}: the window must be longer than zero")
    return count, window


@dataclass(frozen=True)
class Refusal:
    """Why no new plan may start now. ``limit`` is the binding number of plans."""

    reason: str  # "max-concurrent-plans" | "max-unavailable-share" | "fleet-xid-storm"
    limit: int
    detail: str

    @property
    def api_message(self) -> str:
        """The decision API's message, as the vendor's: ``Exceed the maximum plans limit N``."""
        return f"Exceed the maximum plans limit {self.limit}"


@dataclass(frozen=True)
class StormGuard:
    """The limits; :meth:`admit` and :meth:`reboot_allowed` apply them."""

    max_concurrent_plans: int = 10
    max_unavailable_share: float = 0.2
    reboot_cap: int = 3
    reboot_window: dt.timedelta = dt.timedelta(days=1)
    max_reporting_share: float = 0.5
    reporting_window: dt.timedelta = dt.timedelta(minutes=10)

    def __post_init__(self) -> None:
        if self.max_concurrent_plans < 1:
            raise ValueError(
                f"max concurrent plans must be at least 1, got {self.max_concurrent_plans}"
            )
        if not 0.0 < self.max_unavailable_share <= 1.0:
            raise ValueError(
                "max unavailable share must be above 0 and at most 1 (e.g. 0.2 for 20%), "
                f"got {self.max_unavailable_share}"
            )
        if not 0.0 < self.max_reporting_share <= 1.0:
            raise ValueError(
                "max reporting share must be above 0 and at most 1 (e.g. 0.5: stop when more "
                f"than half the GPU nodes report Xids at once), got {self.max_reporting_share}"
            )
        if self.reboot_cap < 1:
            raise ValueError(f"reboot cap must be at least 1, got {self.reboot_cap}")

    def share_limit(self, matching_nodes: int) -> int:
        """How many of ``matching_nodes`` may be held at once: floor(share x n), at least 1."""
        return max(1, math.floor(self.max_unavailable_share * matching_nodes + 1e-9))

    def admit(self, active_plans: int, held_matching: int, matching_nodes: int) -> Refusal | None:
        """``None`` when one more plan may start, else the :class:`Refusal`.

        ``active_plans``: plans running now; ``held_matching``: nodes among the
        ``matching_nodes`` the controller holds now (running plan, or cordoned by one).
        """
        if active_plans >= self.max_concurrent_plans:
            return Refusal(
                "max-concurrent-plans",
                self.max_concurrent_plans,
                f"{active_plans} plans are running, the maximum is {self.max_concurrent_plans}",
            )
        limit = self.share_limit(matching_nodes)
        if held_matching >= limit:
            return Refusal(
                "max-unavailable-share",
                limit,
                f"{held_matching} of the {matching_nodes} matching nodes are already under "
                f"remediation; at most {limit} "
                f"({self.max_unavailable_share:.0%}) may be at once",
            )
        return None

    def fleet_refusal(self, reporting: int, pool: int) -> Refusal | None:
        """``None`` unless more than ``max_reporting_share`` of the ``pool`` GPU nodes are
        ``reporting`` Xids at once; then the :class:`Refusal` for every new plan."""
        if pool <= 0 or reporting <= self.max_reporting_share * pool + 1e-9:
            return None
        return Refusal(
            "fleet-xid-storm",
            0,
            f"{reporting} of the {pool} GPU nodes reported Xids within the last "
            f"{format_waittime(self.reporting_window)}, more than "
            f"{self.max_reporting_share:.0%}: a mass event is more likely a driver roll-out or "
            "a bad job than hardware; the controller acts on no node until it has passed",
        )

    def reboot_allowed(self, reboots: Iterable[dt.datetime], now: dt.datetime) -> str | None:
        """``None`` when the node may be rebooted at ``now``, else why not.

        ``reboots`` are the times the node's earlier plans ordered reboots.
        """
        since = now - self.reboot_window
        recent = sum(1 for moment in reboots if since < moment <= now)
        if recent >= self.reboot_cap:
            return (
                f"reboot cap reached: the node was rebooted {recent} times in the last "
                f"{format_waittime(self.reboot_window)} (cap {self.reboot_cap}); not rebooting "
                "it again, it stays cordoned for a person to look at"
            )
        return None
