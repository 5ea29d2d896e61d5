"""How long data-plane DNS survives an API server outage, per CoreDNS configuration.

For each configuration the API server is stopped (held down) for ``--outage``
seconds while a client asks for ``kubernetes.default.svc.cluster.local``
every 0.5 s; in the ``restart`` scenario CoreDNS is also restarted
``--restart-at`` seconds into the outage (a roll-out or an OOM kill). Prints
a table: configuration, scenario, success ratio during the outage, seconds
until the first failure (the whole outage when none).

Configurations:

- ``default``: CoreDNS's cache (30 s, records with a 5 s TTL), nothing else;
- ``serve_stale``: the cache serves expired answers (``serve_stale 3600s``);
- ``serve_stale+snapshot``: blackstart's mitigation, the Service records
  snapshot answered by the ``hosts`` plugin as well;
- ``node-cache``: a node-level cache in front of CoreDNS (a second CoreDNS
  forwarding to the cluster's, ``cache 30 { serve_stale }``), the shape of
  NodeLocal DNSCache; the client asks it instead.

Bounded: one query every 0.5 s, the outage ends by itself. Uses ``--cluster``
(default: a fresh ``incident-dns`` cluster, deleted afterwards).

    python bench/dns_survival.py [--cluster NAME] [--outage 40] [--restart-at 10]
"""

import argparse
import time
from pathlib import Path
from typing import Any

from blackstart.actions import apiserver, dns, dns_survival
from blackstart.clusters.local.provider import LocalProvider
from blackstart.clusters.net import free_port
from blackstart.clusters.processes import start_detached, stop_pid_file
from blackstart.clusters.spec import load_spec
from blackstart.clusters.toolchain import resolve
from blackstart.paths import cache_dir
from blackstart.probes.dns import DEFAULT_NAMES, outage_figures, query_once

CONFIGS = ("default", "serve_stale", "serve_stale+snapshot", "node-cache")
SCENARIOS = ("no restart", "restart")


def node_cache(local: LocalProvider, cluster: str) -> tuple[str, int, Path]:
    """Start a node-level caching CoreDNS in front of the cluster's; (host, port, pid file)."""
    upstream = local.state(cluster).dns_address
    port = free_port()
    folder = local.state_dir(cluster)
    corefile = folder / "node-cache.Corefile"
    corefile.write_text(
        f"cluster.local:{port} {{\n    bind 127.0.0.1\n    forward . {upstream}\n"
        "    cache 30 {\n        serve_stale 3600s\n    }\n}\n"
    )
    pid_file = folder / "pids" / "node-cache.pid"
    start_detached(
        [str(local.toolchain.binary("coredns")), "-conf", str(corefile)],
        pid_file,
        folder / "logs" / "node-cache.log",
    )
    return "127.0.0.1", port, pid_file


def one_case(
    local: LocalProvider, cluster: str, config: str, scenario: str, outage: float, restart_at: float
) -> dict[str, Any]:
    cfg = {"blackstart_cluster": cluster}
    dns_survival.disable_dns_survival(configuration=cfg)
    if config == "serve_stale":
        dns_survival.enable_dns_survival(serve_stale_s=3600, snapshot=False, configuration=cfg)
    elif config == "serve_stale+snapshot":
        dns_survival.enable_dns_survival(serve_stale_s=3600, snapshot=True, configuration=cfg)
    dns.restore_coredns(timeout_s=60, configuration=cfg)
    host, _, port_text = local.state(cluster).dns_address.rpartition(":")
    port = int(port_text)
    cache_pid: Path | None = None
    if config == "node-cache":
        host, port, cache_pid = node_cache(local, cluster)
        time.sleep(1.0)
    for _ in range(5):  # prime every cache on the way
        query_once(host, port, DEFAULT_NAMES[0], "A", 0.5)
        time.sleep(0.2)
    apiserver.stop_apiserver(configuration=cfg)
    started = time.monotonic()
    restarted = False
    points: list[tuple[float, bool]] = []
    try:
        while (elapsed := time.monotonic() - started) < outage:
            if scenario == "restart" and not restarted and elapsed >= restart_at:
                dns.restart_coredns(configuration=cfg)
                restarted = True
            outcome, _ = query_once(host, port, DEFAULT_NAMES[0], "A", 0.5)
            points.append((round(elapsed, 2), outcome == "ok"))
            time.sleep(0.5)
    finally:
        apiserver.start_apiserver(timeout_s=120, configuration=cfg)
        if cache_pid is not None:
            stop_pid_file(cache_pid, "node-cache")
        dns_survival.disable_dns_survival(configuration=cfg)
        dns.restore_coredns(timeout_s=90, configuration=cfg)
    figures = outage_figures(points)
    survived = figures["first_failure_s"]
    return {
        "config": config,
        "scenario": scenario,
        "success_ratio": figures["success_ratio"],
        "survived_s": outage if survived is None else survived,
        "longest_outage_s": figures["longest_outage_s"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cluster", default="")
    parser.add_argument("--outage", type=float, default=40.0)
    parser.add_argument("--restart-at", type=float, default=10.0)
    parser.add_argument("--only", action="append", default=[], help="configurations to run")
    args = parser.parse_args()
    cache = cache_dir()
    local = LocalProvider(cache, resolve(cache)[0], progress=print)
    name = args.cluster or "incident-dns"
    if not args.cluster:
        local.up(load_spec(), name=name)
    rows = []
    try:
        for config in args.only or CONFIGS:
            for scenario in SCENARIOS:
                row = one_case(local, name, config, scenario, args.outage, args.restart_at)
                print(row, flush=True)
                rows.append(row)
    finally:
        if not args.cluster:
            local.down(name)
    print(f"\nDNS during a {args.outage:g} s API server outage "
          f"(restart: CoreDNS restarted {args.restart_at:g} s in)")  # fmt: skip
    print(f"{'configuration':<22} {'scenario':<11} {'success':>8} {'survived s':>11}")
    for r in rows:
        print(f"{r['config']:<22} {r['scenario']:<11} {r['success_ratio']:>8.2f} "
              f"{r['survived_s']:>11.1f}")  # fmt: skip


if __name__ == "__main__":
    main()
