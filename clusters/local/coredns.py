"""CoreDNS for the local cluster: a real CoreDNS process on a loopback address.

It serves ``cluster.local`` (and the reverse zones) from the cluster's API with
the ``kubernetes`` plugin, as the cluster DNS of a real fleet does, with the
``ready``, ``health``, ``prometheus``, ``cache`` and ``reload`` plugins. The
``erratic`` plugin can be switched on to drop or delay answers.

The data-plane DNS mitigation (``serve_stale_s``, ``snapshot``) makes it
survive the control plane: the ``cache`` plugin serves expired answers while
the API server cannot be asked, and the ``hosts`` plugin answers Service names
from a snapshot of the cluster's records written to disk while the API server
was up (see :mod:`.dns_snapshot`), so a CoreDNS that (re)starts during an API
outage has something to serve. ``hosts`` runs before ``kubernetes`` in
CoreDNS's plugin chain: a Service in the snapshot is answered from it (at
most one snapshot interval stale); names it lacks fall through to the API.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

CLUSTER_DOMAIN = "cluster.local"


@dataclass(frozen=True)
class CorednsConfig:
    """What the Corefile says; faults change a copy of it and rewrite the file."""

    kubeconfig: Path
    dns_port: int
    ready_port: int
    health_port: int
    metrics_port: int
    bind: str = "127.0.0.1"
    cache_seconds: int = 30
    ttl_seconds: int = 5
    reload_seconds: int = 2
    # erratic plugin: drop one answer in N (0 = off), delay one in N by delay_ms
    erratic_drop: int = 0
    erratic_delay_every: int = 0
    erratic_delay_ms: int = 0
    # a deliberately broken Corefile (fault injection): an unknown directive
    broken: bool = False
    # the data-plane DNS mitigation: serve expired cache entries this long (0 = off) ...
    serve_stale_s: int = 0
    # ... and answer Service names from this hosts-format snapshot (None = off)
    snapshot: Path | None = None

    @property
    def address(self) -> str:
        return f"{self.bind}:{self.dns_port}"

    def with_changes(self, **changes: object) -> CorednsConfig:
        return replace(self, **changes)  # type: ignore[arg-type]


def render_corefile(cfg: CorednsConfig) -> str:
    """The Corefile for ``cfg``."""
    erratic = ""
    if cfg.erratic_drop or cfg.erratic_delay_every:
        lines = ["    erratic {"]
        if cfg.erratic_drop:
            lines.append(f"        drop {cfg.erratic_drop}")
        if cfg.erratic_delay_every:
            lines.append(f"        delay {cfg.erratic_delay_every} {cfg.erratic_delay_ms}ms")
        lines.append("    }")
        erratic = "\n".join(lines) + "\n"
    broken = "    blackstart-broken-directive\n" if cfg.broken else ""
    hosts = ""
    if cfg.snapshot is not None:
        hosts = (
            f"    hosts {cfg.snapshot} {CLUSTER_DOMAIN} {{\n"
            f"        ttl {cfg.ttl_seconds}\n"
            f"        reload {cfg.reload_seconds}s\n"
            "        fallthrough\n"
            "    }\n"
        )
    # with a snapshot to answer from, a CoreDNS started without the API server waits 1 s
    # (not CoreDNS's default 5 s) for the kubernetes plugin to sync before it serves
    startup = "        startup_timeout 1s\n" if cfg.snapshot is not None else ""
    cache = f"    cache {cfg.cache_seconds}\n"
    if cfg.serve_stale_s:
        cache = (
            f"    cache {cfg.cache_seconds} {{\n        serve_stale {cfg.serve_stale_s}s\n    }}\n"
        )
    return (
        f"{CLUSTER_DOMAIN}:{cfg.dns_port} in-addr.arpa:{cfg.dns_port} ip6.arpa:{cfg.dns_port} {{\n"
        f"    bind {cfg.bind}\n"
        "    errors\n"
        f"    health {cfg.bind}:{cfg.health_port}\n"
        f"    ready {cfg.bind}:{cfg.ready_port}\n"
        f"{broken}"
        f"{erratic}"
        f"{hosts}"
        f"    kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{\n"
        f"        kubeconfig {cfg.kubeconfig}\n"
        "        pods insecure\n"
        "        fallthrough in-addr.arpa ip6.arpa\n"
        f"        ttl {cfg.ttl_seconds}\n"
        f"{startup}"
        "    }\n"
        f"    prometheus {cfg.bind}:{cfg.metrics_port}\n"
        f"{cache}"
        f"    reload {cfg.reload_seconds}s\n"
        "}\n"
    )


def coredns_argv(binary: Path, corefile: Path) -> list[str]:
    return [str(binary), "-conf", str(corefile)]
