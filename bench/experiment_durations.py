"""How long each catalogue experiment takes with `chaos run` on the default fleet.

Runs every ``experiments/*.json`` (or those named) once with the real ``chaos
run`` against one local cluster (``--cluster``, default a fresh
``bench-experiments`` cluster, deleted afterwards; the rescue controller is
started and stopped by each experiment that needs it) and prints, per
experiment, its outcome (completed / deviated / failed / interrupted) and the
wall-clock seconds of the whole ``chaos run`` and of its method and rollbacks.

    python bench/experiment_durations.py [NAME ...] [--cluster NAME] [--journals DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from blackstart.clusters.local.provider import LocalProvider
from blackstart.clusters.spec import load_spec
from blackstart.clusters.toolchain import resolve
from blackstart.paths import cache_dir

REPO = Path(__file__).resolve().parents[1]
BENCH_CLUSTER = "bench-experiments"


def span(runs: list[dict[str, Any]]) -> float:
    """Seconds from the first activity's start to the last one's end (pauses included)."""
    if not runs:
        return 0.0
    start = min(datetime.fromisoformat(r["start"]) for r in runs)
    end = max(datetime.fromisoformat(r["end"]) for r in runs)
    return (end - start).total_seconds()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="experiments to run (default: all)")
    parser.add_argument("--cluster", default=None, help="an existing blackstart cluster to use")
    parser.add_argument("--journals", type=Path, default=None, help="keep the journals here")
    args = parser.parse_args()
    paths = sorted((REPO / "experiments").glob("*.json"))
    if args.names:
        paths = [p for p in paths if p.stem in args.names]
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
        t0 = time.monotonic()
        local.up(load_spec(), name=name)
        print(f"cluster {name} up in {time.monotonic() - t0:.1f} s")
        created = True
    chaos = Path(sys.executable).with_name("chaos")
    rows = []
    try:
        with tempfile.TemporaryDirectory() as scratch:
            folder = args.journals or Path(scratch)
            folder.mkdir(parents=True, exist_ok=True)
            for path in paths:
                journal_path = folder / f"{path.stem}.json"
                t0 = time.monotonic()
                subprocess.run(
                    [str(chaos), "--no-log-file", "run", str(path), "--journal-path",
                     str(journal_path)],
                    env={**os.environ, "BLACKSTART_CLUSTER": name},
                    capture_output=True, timeout=900, check=False,
                )  # fmt: skip
                seconds = time.monotonic() - t0
                journal = json.loads(journal_path.read_text())
                status = "deviated" if journal.get("deviated") else journal["status"]
                row = {
                    "experiment": path.stem,
                    "outcome": status,
                    "seconds": round(seconds, 1),
                    "method_s": round(span(journal.get("run") or []), 1),
                    "rollbacks_s": round(span(journal.get("rollbacks") or []), 1),
                }
                rows.append(row)
                print(row, flush=True)
    finally:
        if created:
            local.down(name)
    print()
    print(f"{'experiment':<32} {'outcome':<12} {'total s':>8} {'method s':>9} {'rollback s':>10}")
    for r in rows:
        print(
            f"{r['experiment']:<32} {r['outcome']:<12} {r['seconds']:>8} {r['method_s']:>9} "
            f"{r['rollbacks_s']:>10}"
        )
    print(f"{'total':<45} {sum(r['seconds'] for r in rows):>8.1f}")


if __name__ == "__main__":
    main()
