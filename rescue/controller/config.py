"""The rescue controller's settings, as ``blackstart rescue controller`` takes them."""

from __future__ import annotations

import datetime as dt
import socket
from dataclasses import dataclass, field

from blackstart.rescue.controller.drain import DrainOptions
from blackstart.rescue.controller.standby import DEFAULT_STANDBY_LABEL, parse_standby_label
from blackstart.rescue.controller.storm_guard import StormGuard

__all__ = ["ControllerConfig"]


@dataclass(frozen=True)
class ControllerConfig:
    """Everything the controller is told at start; defaults suit a real fleet.

    ``namespace`` is where the controller posts its Events (RescuePlans are
    cluster-scoped). ``plans_ttl`` is how long ended plans are kept; it must be at
    least ``max_report_age`` (Xid reports older than that are ignored, so a report
    whose plan was deleted is never acted on twice) and at least the reboot cap's
    window (plans are the record of reboots).
    """

    namespace: str = "default"
    dry_run: bool = False
    decision_api: bool = False
    storm_guard: StormGuard = field(default_factory=StormGuard)
    reboot_driver: str = "local"
    webhook_url: str | None = None
    webhook_token: str | None = None
    plans_ttl: dt.timedelta = dt.timedelta(days=7)
    max_report_age: dt.timedelta = dt.timedelta(hours=6)
    standby_label: str = DEFAULT_STANDBY_LABEL
    drain: DrainOptions = field(default_factory=DrainOptions)
    qps: float = 50.0  # kube-scheduler's own client defaults: what every API server takes
    burst: int = 100
    default_drain_waittime: dt.timedelta = dt.timedelta(minutes=10)
    default_reboot_waittime: dt.timedelta = dt.timedelta(minutes=20)
    drain_retry_seconds: float = 2.0
    local_boot_seconds: float = 2.0
    deferred_retry_seconds: float = 5.0
    instance: str = field(default_factory=socket.gethostname)

    def __post_init__(self) -> None:
        parse_standby_label(self.standby_label)
        if self.plans_ttl < self.max_report_age:
            raise ValueError(
                f"plans TTL ({self.plans_ttl}) must be at least the maximum report age "
                f"({self.max_report_age}): a plan is the record that its Xid was handled"
            )
        if self.plans_ttl < self.storm_guard.reboot_window:
            raise ValueError(
                f"plans TTL ({self.plans_ttl}) must be at least the reboot cap's window "
                f"({self.storm_guard.reboot_window}): plans are the record of reboots"
            )
        if self.qps <= 0 or self.burst < 1:
            raise ValueError(f"qps must be above 0 and burst at least 1 ({self.qps}, {self.burst})")

    @property
    def standby(self) -> tuple[str, str]:
        """The standby label as (key, value)."""
        return parse_standby_label(self.standby_label)
