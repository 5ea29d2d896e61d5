"""How long `cluster up` and `cluster down` take for the local provider.

Brings up each spec (default: the 60-node default fleet, the 1,000-GPU-node
fleet and the 10,000-GPU-node fleet) as a fresh local cluster, `--runs` times,
and prints wall-clock seconds for up (to every node Ready, CoreDNS and
Prometheus ready) and down, plus the resident memory of the cluster's
processes once up.

    python bench/cluster_up.py [--spec FILE ...] [--runs N] [--name-prefix PREFIX]

Clusters are named ``<prefix><spec file stem>`` (prefix ``bench-``).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from blackstart.clusters.local.provider import LocalProvider
from blackstart.clusters.spec import load_spec
from blackstart.clusters.toolchain import resolve
from blackstart.paths import cache_dir

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SPECS = [
    REPO / "clusters/gpu-fleet.yaml",
    REPO / "clusters/gpu-fleet-1000.yaml",
    REPO / "clusters/gpu-fleet-10k.yaml",
]


def rss_mib(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", action="append", type=Path, help="spec file (repeatable)")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--name-prefix", default="bench-", help="cluster name prefix")
    args = parser.parse_args()
    cache = cache_dir()
    toolchain, missing = resolve(cache)
    if missing:
        raise SystemExit("run `blackstart toolchain install` first")
    local = LocalProvider(cache, toolchain, progress=lambda m: None)
    rows = []
    for spec_path in args.spec or DEFAULT_SPECS:
        spec = load_spec(spec_path)
        name = f"{args.name_prefix}{spec_path.stem}"
        if local.state_dir(name).exists():
            local.down(name)
        ups, downs, mem = [], [], 0.0
        for _ in range(args.runs):
            t0 = time.monotonic()
            local.up(spec, name=name, timeout=1200)
            ups.append(time.monotonic() - t0)
            mem = rss_mib([s.pid for s in local.status(name) if s.pid])
            t0 = time.monotonic()
            local.down(name)
            downs.append(time.monotonic() - t0)
        rows.append((spec_path.name, len(spec.nodes()), ups, downs, mem))
    print(f"{'spec':<24} {'nodes':>6} {'up s (median)':>14} {'down s':>8} {'RSS MiB':>8}")
    for spec_name, nodes, ups, downs, mem in rows:
        print(
            f"{spec_name:<24} {nodes:>6} {statistics.median(ups):>14.1f} "
            f"{statistics.median(downs):>8.1f} {mem:>8.0f}"
        )


if __name__ == "__main__":
    main()
