"""Does the Xid agent become the storm? A steady Xid stream on every node of a fleet.

One bad job on a thousand GPU nodes can log Xids for minutes. This brings up a local
cluster of ``--nodes`` KWOK GPU nodes (or uses ``--cluster``), starts the Xid agent on
every node's kernel log (one process standing for one agent per node, with
``--max-rps`` as the whole fleet's budget), appends ``--rate`` Xid lines per second to
every node's kernel log for ``--duration`` seconds, and prints:

- the agent's API writes per second (Node condition patches, Event creates and
  patches), overall and per node, against the target of at most one write per node
  per ``--interval`` seconds (the agent's ``--min-write-interval``);
- the API server's p99 request latency over the stream (its own histogram, through
  the cluster's Prometheus);
- how many lines the agent read and whether its spool drained.

Before the measured stream, one Xid line on every node warms the agent up: the one
process standing for a thousand agents learns each node's boot ID and condition with
one GET per node, one after the other (a real agent makes that one GET for its own
node), and makes each node's first, immediate write.

    python bench/agent_steady_stream.py [--nodes 1000] [--rate 10] [--duration 60]
                                        [--interval 10] [--cluster NAME]

Every load generator here is bounded: ``--duration`` seconds of appends to local
files, then the agent is stopped; everything goes to the local cluster on loopback,
and a cluster the bench brought up is deleted at the end.
"""

from __future__ import annotations

import argparse
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import yaml
from prometheus_client.parser import text_string_to_metric_families

from blackstart.clusters.local.provider import LocalProvider
from blackstart.clusters.net import free_port
from blackstart.clusters.spec import load_spec
from blackstart.clusters.toolchain import resolve
from blackstart.paths import cache_dir
from blackstart.probes.apiserver import p99_query
from blackstart.probes.prometheus import scalar

AGENT_REQUESTS = "blackstart_rescue_agent_api_requests_total"


def fleet_spec(gpu_nodes: int, folder: Path) -> Path:
    """The default fleet's spec with ``gpu_nodes`` GPU nodes."""
    spec = yaml.safe_load(Path(load_spec().source).read_text())
    for pool in spec["spec"]["pools"]:
        if pool["role"] == "gpu":
            pool["count"] = gpu_nodes
    spec["metadata"]["name"] = f"gpu-fleet-{gpu_nodes}"
    path = folder / f"gpu-fleet-{gpu_nodes}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def metric(port: int, name: str, **labels: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name and set(labels.items()) <= set(s.labels.items())
    )


def writes(port: int) -> float:
    return sum(metric(port, AGENT_REQUESTS, verb=verb) for verb in ("patch", "create"))


def stream_xids(
    logs: list[Path], rate: int, duration: float, boot_time: float, stop: threading.Event
) -> int:
    """Append ``rate`` Xid lines to every log each second, for ``duration`` s; lines written.

    dmesg lines, stamped with seconds since ``boot_time`` as the kernel would.
    """
    written = 0
    deadline = time.monotonic() + duration
    tick = time.monotonic()
    while time.monotonic() < deadline and not stop.is_set():
        uptime = time.time() - boot_time
        for path in logs:
            node = path.stem
            lines = "".join(
                f"[{uptime + i / rate:.6f}] NVRM: Xid (PCI:0000:3b:00): 31, "
                f"pid=4242, name=trainer, Ch 00000009, engmask 00000101 ({node})\n"
                for i in range(rate)
            )
            with path.open("a") as log:
                log.write(lines)
            written += rate
        tick += 1.0
        stop.wait(max(0.0, tick - time.monotonic()))
    return written


def warm_up(logs: list[Path], boot_time: float, port: int) -> None:
    """One Xid line per node; wait (at most 10 min) until the agent has reported each."""
    started = time.monotonic()
    stream_xids(logs, 1, 0.5, boot_time, threading.Event())
    reported = "blackstart_rescue_agent_bursts_sent_total"
    deadline = time.monotonic() + 600
    while metric(port, reported) < len(logs) and time.monotonic() < deadline:
        time.sleep(2)
    print(f"warm-up: {metric(port, reported):.0f} of {len(logs)} nodes reported in "
          f"{time.monotonic() - started:.0f} s", flush=True)  # fmt: skip


def start_agent(
    cluster: str, port: int, args: argparse.Namespace, log: Path
) -> subprocess.Popen[bytes]:
    argv = [
        sys.executable, "-m", "blackstart.cli", "rescue", "agent", "--cluster", cluster,
        "--state-dir", str(log.parent / "agent-state"), "--metrics-port", str(port),
        "--max-rps", str(args.max_rps), "--min-write-interval", str(args.interval),
        "--poll-interval", str(args.poll_interval),
    ]  # fmt: skip
    with log.open("ab") as stream:
        agent = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=stream)
    deadline = time.monotonic() + 300
    while "; ready" not in log.read_text(errors="replace"):
        if agent.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"the agent did not start:\n{log.read_text(errors='replace')}")
        time.sleep(0.5)
    return agent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=1000, help="GPU nodes (new cluster)")
    parser.add_argument("--rate", type=int, default=10, help="Xid lines per node per second")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of streaming")
    parser.add_argument("--interval", type=float, default=10.0, help="agent --min-write-interval")
    parser.add_argument("--max-rps", type=float, default=500.0, help="the agent's request budget")
    parser.add_argument("--poll-interval", type=float, default=1.0, help="agent --poll-interval")
    parser.add_argument("--cluster", default=None, help="use this running local cluster")
    parser.add_argument(
        "--keep-cluster", action="store_true", help="leave the cluster it brought up running"
    )
    parser.add_argument(
        "--stream-nodes",
        type=int,
        default=None,
        help="stream on the first N GPU nodes only (default all); the agent serves all",
    )
    args = parser.parse_args()
    if not 0 < args.duration <= 600 or not 0 < args.rate <= 100:
        raise SystemExit("--duration must be 1-600 s and --rate 1-100 lines/s: bounded load")

    cache = cache_dir()
    toolchain, missing = resolve(cache)
    if missing:
        raise SystemExit("run `blackstart toolchain install` first")
    local = LocalProvider(cache, toolchain, progress=lambda m: print(m, flush=True))
    name = args.cluster or f"hagent-bench-stream-{args.nodes}"
    folder = Path(tempfile.mkdtemp(prefix="bench-stream-"))
    created = args.cluster is None
    if created:
        if local.state_dir(name).exists():
            local.down(name)
        local.up(load_spec(fleet_spec(args.nodes, folder)), name=name, timeout=1800)
    agent: subprocess.Popen[bytes] | None = None
    try:
        state = local.state(name)
        served = sorted(p for p in Path(state.kernel_log_dir).glob("gpu-*.log"))
        logs = served[: args.stream_nodes] if args.stream_nodes else served
        port = free_port()
        agent = start_agent(name, port, args, folder / "agent.log")
        print(f"agent on {len(served)} GPU node logs; streaming on {len(logs)}: "
              f"{args.rate} Xid/s on each for {args.duration:.0f} s", flush=True)  # fmt: skip
        warm_up(logs, state.created_at or time.time(), port)
        before, read_before = writes(port), metric(port, "blackstart_rescue_agent_log_lines_total")
        started = time.monotonic()
        lines = stream_xids(
            logs, args.rate, args.duration, state.created_at or time.time(), threading.Event()
        )
        elapsed = time.monotonic() - started
        during = writes(port) - before
        read = metric(port, "blackstart_rescue_agent_log_lines_total") - read_before
        window = f"{max(30, int(elapsed))}s"
        p99 = (
            scalar(state.prometheus_url, p99_query(window), None) if state.prometheus_url else None
        )
        deadline = time.monotonic() + 120
        while metric(port, "blackstart_rescue_agent_spool_depth") and time.monotonic() < deadline:
            time.sleep(1)
        depth = metric(port, "blackstart_rescue_agent_spool_depth")
        per_node = during / elapsed / len(logs)
        target = 1 / args.interval if args.interval else float("inf")  # 0: no pacing
        print(f"lines written {lines}, read by the agent {read:.0f} in {elapsed:.1f} s")
        print(f"agent writes {during:.0f} in {elapsed:.1f} s: {during / elapsed:.1f}/s, "
              f"{per_node:.4f} per node per s (target <= {target:.4f}: "
              f"{'met' if per_node <= target * 1.05 else 'MISSED'})")  # fmt: skip
        print(f"API server p99 over {window}: {'n/a' if p99 is None else f'{p99:.3f} s'}")
        print(f"spool depth after the stream: {depth:.0f}")
        errors = re.findall(r"ERROR.*", (folder / "agent.log").read_text(errors="replace"))
        if errors:
            print(f"agent errors: {len(errors)}, first: {errors[0][:200]}")
    finally:
        if agent is not None and agent.poll() is None:
            agent.send_signal(signal.SIGTERM)
            try:
                agent.wait(timeout=30)
            except subprocess.TimeoutExpired:
                agent.kill()
        if created and not args.keep_cluster:
            local.down(name)


if __name__ == "__main__":
    main()
