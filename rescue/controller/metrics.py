"""Prometheus metrics of the rescue controller, on a registry of its own.

``blackstart_rescue_controller_xids_total{xid}``
    Xid reports the controller saw on nodes' ``GPUXidError`` conditions, by code.
``blackstart_rescue_controller_plans_total{outcome}``
    Plans that ended, by outcome (Succeeded, Failed, Refused); ``..._plans_started_total{source}``
    those made, by who ordered them; ``..._plans_active`` those running now.
``blackstart_rescue_controller_ready``
    1 once the controller has read the cluster (nodes, policies, plans) and acts.
``blackstart_rescue_controller_leader``
    1 while this replica holds the controller's Lease, else 0 (it waits, and acts on nothing).
``blackstart_rescue_controller_xid_to_cordon_seconds``
    Seconds from the agent reading the Xid line (the report's ``writtenAt``) to the
    node being cordoned.
``blackstart_rescue_controller_storm_guard_refusals_total{reason}``
    Plans the storm guard refused (max-concurrent-plans, max-unavailable-share,
    reboot-cap).
``blackstart_rescue_controller_fleet_xid_storm``
    1 while more of the GPU fleet reports Xids at once than the storm guard allows (a
    mass event: the controller acts on no node), else 0. Alert on it.
``blackstart_rescue_controller_api_requests_total{verb,code}``
    Requests the controller made to the Kubernetes API server, by verb and HTTP code
    (``error`` when no response came).
``blackstart_rescue_controller_decision_api_requests_total{method,code}``
    Requests the decision API answered, by method and HTTP status.
``blackstart_rescue_controller_evictions_total{result}``, ``..._reboots_total{driver}``
    Pod evictions (evicted, blocked by a PodDisruptionBudget, gone) and reboots ordered.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

__all__ = ["ControllerMetrics"]

_PREFIX = "blackstart_rescue_controller"
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0)


class ControllerMetrics:
    """The controller's metrics; :meth:`serve` exposes them over HTTP."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.xids = Counter(
            f"{_PREFIX}_xids", "Xid reports seen on nodes, by Xid code.", ["xid"], registry=r
        )
        self.plans_started = Counter(
            f"{_PREFIX}_plans_started", "RescuePlans made, by source.", ["source"], registry=r
        )
        self.plans = Counter(
            f"{_PREFIX}_plans", "RescuePlans that ended, by outcome.", ["outcome"], registry=r
        )
        self.plans_active = Gauge(f"{_PREFIX}_plans_active", "RescuePlans running.", registry=r)
        self.ready = Gauge(
            f"{_PREFIX}_ready",
            "1 once the controller has read the cluster and acts on Xids, else 0.",
            registry=r,
        )
        self.leader = Gauge(
            f"{_PREFIX}_leader",
            "1 while this replica holds the controller's Lease (or runs without leader "
            "election), else 0: only the leader acts.",
            registry=r,
        )
        self.xid_to_cordon = Histogram(
            f"{_PREFIX}_xid_to_cordon_seconds",
            "Seconds from the agent reading the Xid line to the node being cordoned.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.fleet_xid_storm = Gauge(
            f"{_PREFIX}_fleet_xid_storm",
            "1 while more of the GPU fleet reports Xids at once than the storm guard allows "
            "(the controller then acts on no node), else 0.",
            registry=r,
        )
        self.refusals = Counter(
            f"{_PREFIX}_storm_guard_refusals",
            "Plans the storm guard refused, by reason.",
            ["reason"],
            registry=r,
        )
        self.api_requests = Counter(
            f"{_PREFIX}_api_requests",
            "Requests to the Kubernetes API server, by verb and HTTP code.",
            ["verb", "code"],
            registry=r,
        )
        self.decision_api_requests = Counter(
            f"{_PREFIX}_decision_api_requests",
            "Requests the decision API answered, by method and HTTP status.",
            ["method", "code"],
            registry=r,
        )
        self.evictions = Counter(
            f"{_PREFIX}_evictions", "Pod evictions, by result.", ["result"], registry=r
        )
        self.reboots = Counter(
            f"{_PREFIX}_reboots", "Reboots ordered, by driver.", ["driver"], registry=r
        )

    def serve(self, port: int, host: str = "127.0.0.1") -> None:
        """Serve ``/metrics`` on ``host:port`` from a background thread."""
        start_http_server(port, addr=host, registry=self.registry)
