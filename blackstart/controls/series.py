"""The series the metrics control samples: their titles and units, and their PromQL.

The report draws them by these names (see ``blackstart.reports.charts``).
"""

STANDARD_SERIES: dict[str, tuple[str, str]] = {
    "apiserver_p99_seconds": ("API server p99 latency", "s"),
    "apiserver_429_per_second": ("API server 429 answers", "1/s"),
    "dns_success_ratio": ("Data-plane DNS success ratio", "ratio"),
    "dns_p99_seconds": ("Data-plane DNS p99 latency", "s"),
    "nodes_ready": ("Nodes Ready", "nodes"),
    "nodes_cordoned": ("Nodes cordoned (standbys excluded)", "nodes"),
    "schedulable_gpus": ("Schedulable GPUs", "GPUs"),
    "xid_to_cordon_seconds": ("Seconds from Xid to cordon", "s"),
    "apiserver_memory_bytes": ("kube-apiserver resident memory", "bytes"),
    "control_plane_memory_limit_bytes": ("Control-plane memory limit", "bytes"),
    "apiserver_cpu_cores": ("kube-apiserver CPU", "cores"),
    "apiserver_restarts": ("kube-apiserver restarts", "count"),
    "coredns_requests_per_second": ("CoreDNS requests", "1/s"),
    "coredns_failures_per_second": ("CoreDNS SERVFAIL/REFUSED answers", "1/s"),
    "coredns_p99_seconds": ("CoreDNS p99 latency", "s"),
}

# The incident's observability (local clusters): the API server's own memory, CPU and
# restarts from its supervisor, and CoreDNS's request rate, failures and latency.
CONTROL_PLANE_QUERIES: tuple[tuple[str, str], ...] = (
    (
        "apiserver_memory_bytes",
        'max(blackstart_control_plane_process_memory_bytes{component="kube-apiserver"})',
    ),
    ("control_plane_memory_limit_bytes", "max(blackstart_control_plane_memory_limit_bytes)"),
    (
        "apiserver_cpu_cores",
        "sum(rate(blackstart_control_plane_process_cpu_seconds_total"
        '{component="kube-apiserver"}[15s]))',
    ),
    (
        "apiserver_restarts",
        'max(blackstart_control_plane_restarts_total{component="kube-apiserver"})',
    ),
    ("coredns_requests_per_second", "sum(rate(coredns_dns_requests_total[15s]))"),
    (
        "coredns_failures_per_second",
        'sum(rate(coredns_dns_responses_total{rcode=~"SERVFAIL|REFUSED"}[15s])) or vector(0)',
    ),
    (
        "coredns_p99_seconds",
        "histogram_quantile(0.99, sum by (le) "
        "(rate(coredns_dns_request_duration_seconds_bucket[15s])))",
    ),
)
