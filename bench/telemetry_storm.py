"""What the telemetry storm costs its client and does to the API server, by number of clients.

On the default 60-node fleet seeded with 2,000 pods and 200 ConfigMaps (4 KiB of
payload each, as the catalogue's storm experiments do), runs the storm once per
client count (default 10, 50 and 200 simulated node agents, each listing every
pod once a second without resourceVersion or limit, at most 64 in flight) for
``--duration`` seconds, and prints per run:

- client side: requests, answers per second, 429s, errors, p50/p99 latency,
  MiB read, CPU seconds the storm's threads used (and as a share of one core);
- server side, from the cluster's Prometheus over the storm's window: the API
  server's p99 request latency and its 429 rate; and the p99 latency a
  non-admin system identity (CoreDNS's) saw meanwhile.

``--apf`` repeats each run with the API Priority and Fairness mitigation
(blackstart.actions.apf) in place. Bounded: every storm stops by itself; the
seeded objects are removed at the end. Uses ``--cluster`` (default: a fresh
``bench-storm`` cluster, deleted afterwards).

    python bench/telemetry_storm.py [--clients 10 50 200] [--duration 20] [--apf]
"""

from __future__ import annotations

import argparse
import threading
import time
from typing import Any

from blackstart.actions import _storm, apf, seed
from blackstart.actions import telemetry_storm as storm
from blackstart.clusters.local.provider import LocalProvider
from blackstart.clusters.spec import load_spec
from blackstart.clusters.toolchain import resolve
from blackstart.paths import cache_dir
from blackstart.probes.apiserver import apiserver_request_latency, p99_query, rate_429_query
from blackstart.probes.prometheus import scalar

BENCH_CLUSTER = "bench-storm"


def system_latency(config: dict[str, Any], stop: threading.Event, seen: list[float]) -> None:
    """Sample what CoreDNS's identity waits for a small request, every second."""
    while not stop.wait(1.0):
        try:
            result = apiserver_request_latency(
                requests=1, identity="blackstart:coredns", timeout_s=10, configuration=config
            )
            seen.append(float(result["p99_seconds"]))
        except Exception:
            continue


def one_run(
    config: dict[str, Any], prometheus: str, clients: int, duration: float
) -> dict[str, Any]:
    seen: list[float] = []
    stop = threading.Event()
    sampler = threading.Thread(target=system_latency, args=(config, stop, seen), daemon=True)
    sampler.start()
    storm.start_telemetry_storm(
        clients=clients,
        rate_per_client=1.0,
        duration_s=duration,
        threads=min(64, clients),
        configuration=config,
    )
    time.sleep(duration * 0.8)
    # Prometheus scrapes every 5 s: read the server side while the storm still runs
    window = f"{max(15, int(duration * 0.8))}s"
    # None when Prometheus has no sample: an overloaded API server fails its scrapes too
    p99 = scalar(prometheus, p99_query(window), None)
    rate_429 = scalar(prometheus, rate_429_query(window), None)
    figures = storm.wait_for_telemetry_storm(timeout_s=duration + 120, configuration=config)
    stop.set()
    sampler.join(15)
    elapsed = figures["elapsed_s"] or duration
    return {
        "clients": clients,
        "requests": figures["requests"],
        "rps": figures["achieved_rps"],
        "429": figures["throttled_429"],
        "errors": figures["errors"],
        "client_p50_s": figures["latency_s"]["p50"],
        "client_p99_s": figures["latency_s"]["p99"],
        "mib_read": round(figures["bytes_read"] / 2**20),
        "cpu_s": figures["client_cpu_s"],
        "cpu_core_share": round(figures["client_cpu_s"] / elapsed, 2),
        "server_p99_s": None if p99 is None else round(p99, 3),
        "server_429_per_s": None if rate_429 is None else round(rate_429, 2),
        "system_p99_s": round(_storm.percentile(seen, 0.99) or 0.0, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[10, 50, 200])
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--cluster", default=None, help="an existing blackstart cluster to use")
    parser.add_argument("--apf", action="store_true", help="also run with the APF mitigation")
    args = parser.parse_args()
    cache = cache_dir()
    toolchain, missing = resolve(cache)
    if missing:
        raise SystemExit("run `blackstart toolchain install` first")
    local = LocalProvider(cache, toolchain, progress=lambda m: None)
    name = args.cluster or BENCH_CLUSTER
    created = False
    if not (local.state_dir(name) / "cluster.json").exists():
        if args.cluster:
            raise SystemExit(f"no cluster {name}")
        local.up(load_spec(), name=name)
        created = True
    config = {"blackstart_cluster": name}
    prometheus = local.state(name).prometheus_url
    rows = []
    try:
        seeded = seed.seed_objects(pods=2000, configmaps=200, payload_kib=4, configuration=config)
        print(
            f"seeded {seeded['pods']} pods and {seeded['configmaps']} ConfigMaps "
            f"in {seeded['seconds']} s"
        )
        modes = [False, True] if args.apf else [False]
        for with_apf in modes:
            if with_apf:
                apf.apply_apf_mitigation(configuration=config)
            try:
                for clients in args.clients:
                    row = one_run(config, prometheus, clients, args.duration)
                    row["apf"] = with_apf
                    rows.append(row)
                    print(row, flush=True)
                    time.sleep(10)  # let the API server settle between runs
            finally:
                if with_apf:
                    apf.remove_apf_mitigation(configuration=config)
    finally:
        storm.stop_telemetry_storm()
        seed.remove_seeded_objects(configuration=config)
        if created:
            local.down(name)
    columns = [
        "apf", "clients", "requests", "rps", "429", "errors", "client_p50_s", "client_p99_s",
        "mib_read", "cpu_s", "cpu_core_share", "server_p99_s", "server_429_per_s", "system_p99_s",
    ]  # fmt: skip
    print()
    print(" ".join(f"{c:>14}" for c in columns))
    for row in rows:
        print(" ".join(f"{row[c]!s:>14}" for c in columns))


if __name__ == "__main__":
    main()
