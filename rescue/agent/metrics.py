"""The node agent's Prometheus metrics, in a registry of their own."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["AgentMetrics"]


class AgentMetrics:
    """The agent's Prometheus metrics, in a registry of their own."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        prefix = "blackstart_rescue_agent"
        self.lines_read = Counter(
            f"{prefix}_log_lines", "Kernel log lines read.", registry=self.registry
        )
        self.xids_seen = Counter(
            f"{prefix}_xids_seen", "Xid lines seen, by Xid code.", ["xid"], registry=self.registry
        )
        self.reports_sent = Counter(
            f"{prefix}_reports_sent",
            "Xid lines reported to the API server (left the spool).",
            registry=self.registry,
        )
        self.bursts_sent = Counter(
            f"{prefix}_bursts_sent",
            "Condition writes that reported Xid lines (one per node and burst or write slot).",
            registry=self.registry,
        )
        self.api_requests = Counter(
            f"{prefix}_api_requests",
            "Kubernetes API requests, by verb, resource and HTTP status ('error': no response).",
            ["verb", "resource", "code"],
            registry=self.registry,
        )
        self.spool_depth = Gauge(
            f"{prefix}_spool_depth", "Xid lines waiting in the spool.", registry=self.registry
        )
        self.delivery_seconds = Histogram(
            f"{prefix}_delivery_seconds",
            "Seconds from reading an Xid line to the node condition holding it.",
            buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300),
            registry=self.registry,
        )
        self.backoffs = Counter(
            f"{prefix}_backoffs",
            "Times the sender backed off after a failed request.",
            registry=self.registry,
        )
        self.events_failed = Counter(
            f"{prefix}_events_failed",
            "XidError Events the API server did not take (best-effort: the condition holds "
            "the Xids).",
            registry=self.registry,
        )
        self.spool_failures = Counter(
            f"{prefix}_spool_failures",
            "Reads whose Xids could not be saved to the spool (read again from the saved cursor).",
            registry=self.registry,
        )

    def requests(self, verb: str | None = None) -> float:
        """Total API requests so far (of ``verb`` only, when given), any status."""
        total = 0.0
        for metric in self.api_requests.collect():
            for sample in metric.samples:
                if sample.name.endswith("_total") and verb in (None, sample.labels["verb"]):
                    total += sample.value
        return total
