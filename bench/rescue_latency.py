"""How fast and how cheaply the rescue agent and controller turn a Xid line into a cordon.

For each fleet size (default 100 and 1,000 KWOK GPU nodes) this brings up a fresh
local cluster, creates a RescuePolicy that cordons on Xid 62, starts the Xid agent
(every node's kernel log) and the controller with ``LocalProvider.start_rescue``, and:

- measures the requests per second the agent and the controller make while the fleet
  is idle (``--idle`` seconds, from their own request counters);
- writes one Xid 62 line into the kernel logs of ``--xids`` GPU nodes at once and
  measures, for each, the seconds from the line being written to the node being
  cordoned (seen on a watch): p50 and p99;
- counts the API requests agent and controller made for those Xids, per Xid, and the
  controller's by verb and answer: its cordon goes first and is one PATCH decided on its
  watch cache, so its writes on the critical path per Xid are 1 plus the 409s (a node
  that changed since the cache saw it is read again and patched again);
- then (``--stream``, default 40) writes single Xid lines on other nodes one at a time,
  ``--stream-interval`` seconds apart (default 0.5 s: a steady 2 Xids/s, the fleet
  otherwise as busy as ever): p50 and p99 of the same latency for single Xids.

    python bench/rescue_latency.py [--nodes 100 --nodes 1000] [--xids 50] [--idle 60]
                                   [--stream 40] [--stream-interval 0.5] [--agent-max-rps 250]

The local provider runs one agent process for every simulated node, where a real
fleet runs one agent per node (a DaemonSet), each with its own request budget
(``--max-rps``, 5 by default) and one log to poll. ``--agent-max-rps`` sets the one
process's budget:
by default 5 per Xid'd node, as the DaemonSet would have; ``--agent-max-rps 5`` shows
the whole simulated fleet squeezed through one node's budget. ``--agent-poll-interval``
(default 0.02 s) is how often the one process reads every log: a node's agent reads one
log that often for next to nothing; this process pays it for every simulated node.

The storm guard is opened wide (``--max-unavailable-share 1``) so that every Xid is
cordoned; the rate limits are the defaults (controller 20 requests/s, burst 40).
Every request goes to the local cluster on loopback; the clusters are deleted at the end.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import yaml
from kubernetes import client, watch
from prometheus_client.parser import text_string_to_metric_families

from blackstart.clusters.local.provider import LocalProvider
from blackstart.clusters.spec import load_spec
from blackstart.clusters.toolchain import resolve
from blackstart.kube import api_client
from blackstart.paths import cache_dir
from blackstart.stats import percentile

XID_62 = "[ 1843.308145] NVRM: Xid (PCI:0000:03:00): 62, Channel 00000001\n"
POLICY = {
    "apiVersion": "rescue.blackstart.dev/v1",
    "kind": "RescuePolicy",
    "metadata": {"name": "bench-cordon-62"},
    "spec": {"rules": [{"priority": 10, "errorCode": ["62"], "actions": [{"name": "cordon"}]}]},
}


def fleet_spec(gpu_nodes: int, folder: Path) -> Path:
    """A spec like the default fleet with ``gpu_nodes`` GPU nodes, 8 CPU nodes, 4 standbys."""
    spec = yaml.safe_load(Path(load_spec().source).read_text())
    for pool in spec["spec"]["pools"]:
        if pool["role"] == "gpu":
            pool["count"] = gpu_nodes
    spec["metadata"]["name"] = f"gpu-fleet-{gpu_nodes}"
    path = folder / f"gpu-fleet-{gpu_nodes}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def requests_made(port: int, metric: str) -> float:
    """The sum of the samples of ``metric`` a process serves (all labels)."""
    return sum(requests_by_label(port, metric).values())


def requests_by_label(port: int, metric: str) -> dict[str, float]:
    """The samples of ``metric`` a process serves, by ``verb code`` (or by all labels)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == metric:
                key = " ".join(str(v) for v in s.labels.values())
                found[key] = found.get(key, 0.0) + s.value
    return found


def histogram_mean(port: int, name: str) -> float:
    count = requests_made(port, f"{name}_count")
    return requests_made(port, f"{name}_sum") / count if count else float("nan")


def apf_dispatched(admin: client.ApiClient) -> dict[str, float]:
    """Requests the API server dispatched, by APF flow schema (its own /metrics).

    Every request of the agent's and the controller's identities counts here, kopf's
    watches included (their own counters see only the requests they make themselves).
    """
    response = admin.call_api(
        "GET", f"{admin.configuration.host}/metrics", header_params={"Accept": "text/plain"}
    )
    response.read()
    text = response.data.decode()
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "apiserver_flowcontrol_dispatched_requests_total":
                schema = s.labels.get("flow_schema", "")
                counts[schema] = counts.get(schema, 0.0) + s.value
    return counts


CONTROLLER_METRIC = "blackstart_rescue_controller_api_requests_total"
AGENT_METRIC = "blackstart_rescue_agent_api_requests_total"


def watch_cordons(core: client.CoreV1Api, wanted: set[str], seen: dict[str, float]) -> None:
    """Record when each node in ``wanted`` is first seen cordoned (wall clock)."""
    start = core.list_node(limit=1).metadata.resource_version
    stream = watch.Watch()
    for event in stream.stream(core.list_node, resource_version=start, timeout_seconds=300):
        node = event["object"]
        name = node.metadata.name
        if name in wanted and node.spec.unschedulable and name not in seen:
            seen[name] = time.time()
            if len(seen) == len(wanted):
                stream.stop()


def time_to_cordon(
    core: client.CoreV1Api, local: LocalProvider, cluster: str, targets: list[str], spacing: float
) -> list[float]:
    """Write a Xid 62 line into each target's kernel log, ``spacing`` seconds apart (0: at
    once); the seconds from each line written to its node seen cordoned on a watch."""
    seen: dict[str, float] = {}
    watcher = threading.Thread(target=watch_cordons, args=(core, set(targets), seen), daemon=True)
    watcher.start()
    time.sleep(1)
    written: dict[str, float] = {}
    logs = {node: local.kernel_log(cluster, node) for node in targets}
    for node in targets:
        with logs[node].open("a") as log:
            log.write(XID_62)
        written[node] = time.time()
        if spacing:
            time.sleep(spacing)
    deadline = time.monotonic() + 180
    while len(seen) < len(targets) and time.monotonic() < deadline:
        time.sleep(0.05)
    if len(seen) < len(targets):
        raise SystemExit(f"only {len(seen)} of {len(targets)} nodes were cordoned in 180 s")
    return [seen[n] - written[n] for n in targets]


def run(
    local: LocalProvider,
    gpu_nodes: int,
    xids: int,
    idle: float,
    agent_rps: float,
    folder: Path,
    stream: int = 0,
    stream_interval: float = 0.5,
    poll_interval: float = 0.02,
) -> dict[str, float]:
    name = f"bench-rescue-{gpu_nodes}"
    if local.state_dir(name).exists():
        local.down(name)
    print(f"[{gpu_nodes} GPU nodes] bringing the cluster up", flush=True)
    started = time.monotonic()
    local.up(load_spec(fleet_spec(gpu_nodes, folder)), name=name, timeout=1200)
    up_seconds = time.monotonic() - started
    try:
        state = local.state(name)
        admin = api_client(state.kubeconfig, pool_size=8)
        core = client.CoreV1Api(admin)
        rescue = local.start_rescue(
            name,
            extra_controller_args=(
                "--max-unavailable-share", "1",
                "--max-concurrent-plans", str(max(100, xids + stream)),
            ),
            extra_agent_args=(
                "--from-end", "--max-rps", str(agent_rps), "--poll-interval", str(poll_interval),
            ),
            timeout=300,
        )  # fmt: skip
        client.CustomObjectsApi(admin).create_cluster_custom_object(
            "rescue.blackstart.dev", "v1", "rescuepolicies", POLICY
        )
        ports = rescue["metrics_ports"]
        assert isinstance(ports, dict)
        cport, aport = int(ports["rescue-controller"]), int(ports["rescue-agent"])
        time.sleep(5)  # the agent's first reads, the watches settled

        c0, a0 = requests_made(cport, CONTROLLER_METRIC), requests_made(aport, AGENT_METRIC)
        apf0 = apf_dispatched(admin)
        time.sleep(idle)
        c1, a1 = requests_made(cport, CONTROLLER_METRIC), requests_made(aport, AGENT_METRIC)
        apf1 = apf_dispatched(admin)
        idle_apf = {k: v - apf0.get(k, 0.0) for k, v in apf1.items() if v - apf0.get(k, 0.0)}
        print(f"[{gpu_nodes} GPU nodes] API server, dispatched while idle: {idle_apf}", flush=True)
        print(
            f"[{gpu_nodes} GPU nodes] idle for {idle:.0f} s: controller {c1 - c0:.0f} requests, "
            f"agent {a1 - a0:.0f}",
            flush=True,
        )

        step = max(1, gpu_nodes // xids)
        targets = [f"gpu-{i}" for i in range(0, gpu_nodes, step)][:xids]
        by_verb0 = requests_by_label(cport, CONTROLLER_METRIC)
        latencies = time_to_cordon(core, local, name, targets, 0.0)
        time.sleep(5)  # the plans' last status writes and Events
        c2, a2 = requests_made(cport, CONTROLLER_METRIC), requests_made(aport, AGENT_METRIC)
        by_verb = {
            k: (v - by_verb0.get(k, 0.0)) / len(targets)
            for k, v in requests_by_label(cport, CONTROLLER_METRIC).items()
            if v - by_verb0.get(k, 0.0)
        }
        conflicts = sum(v for k, v in by_verb.items() if k.endswith(" 409"))
        apf2 = apf_dispatched(admin)
        burst_apf = {k: v - apf1.get(k, 0.0) for k, v in apf2.items() if v - apf1.get(k, 0.0)}
        print(f"[{gpu_nodes} GPU nodes] API server, dispatched for the Xids: {burst_apf}")
        print(
            f"[{gpu_nodes} GPU nodes] controller requests per Xid by verb and answer: "
            + ", ".join(f"{k}: {v:.2f}" for k, v in sorted(by_verb.items()))
        )
        streamed: list[float] = []
        if stream:
            others = [f"gpu-{i}" for i in range(1, gpu_nodes, step)][:stream]
            print(
                f"[{gpu_nodes} GPU nodes] {len(others)} single Xids, one every "
                f"{stream_interval:g} s",
                flush=True,
            )
            streamed = time_to_cordon(core, local, name, others, stream_interval)
        return {
            "stream_p50": percentile(streamed, 0.50) if streamed else float("nan"),
            "stream_p99": percentile(streamed, 0.99) if streamed else float("nan"),
            "stream_count": float(len(streamed)),
            "critical_writes": 1.0 + conflicts,
            "gpu_nodes": gpu_nodes,
            "up_seconds": up_seconds,
            "p50": percentile(latencies, 0.50),
            "p99": percentile(latencies, 0.99),
            "max": max(latencies),
            "mean": statistics.fmean(latencies),
            "controller_per_xid": (c2 - c1) / len(targets),
            "agent_per_xid": (a2 - a1) / len(targets),
            "controller_idle_rps": (c1 - c0) / idle,
            "agent_idle_rps": (a1 - a0) / idle,
            "apf_idle_rps": idle_apf.get("global-default", 0.0) / idle,
            "agent_read_to_condition": histogram_mean(
                aport, "blackstart_rescue_agent_delivery_seconds"
            ),
            "read_to_cordon": histogram_mean(
                cport, "blackstart_rescue_controller_xid_to_cordon_seconds"
            ),
        }
    finally:
        local.down(name)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--nodes", action="append", type=int, help="GPU nodes (repeatable)")
    parser.add_argument("--xids", type=int, default=50, help="simultaneous Xids")
    parser.add_argument("--idle", type=float, default=60.0, help="seconds of idle measurement")
    parser.add_argument("--stream", type=int, default=40, help="single Xids after the burst")
    parser.add_argument(
        "--agent-poll-interval",
        type=float,
        default=0.02,
        help="the agent's --poll-interval (a node's agent stats one log; this one, all of them)",
    )
    parser.add_argument(
        "--stream-interval", type=float, default=0.5, help="seconds between the single Xids"
    )
    parser.add_argument(
        "--agent-max-rps", type=float, default=None, help="the agent's budget (default 5 x xids)"
    )
    args = parser.parse_args()
    cache = cache_dir()
    toolchain, missing = resolve(cache)
    if missing:
        raise SystemExit("run `blackstart toolchain install` first")
    local = LocalProvider(cache, toolchain, progress=lambda m: None)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for gpu_nodes in args.nodes or [100, 1000]:
            rps = args.agent_max_rps or 5.0 * args.xids
            rows.append(
                run(
                    local,
                    gpu_nodes,
                    args.xids,
                    args.idle,
                    rps,
                    Path(folder),
                    args.stream,
                    args.stream_interval,
                    args.agent_poll_interval,
                )
            )
    print()
    print(
        f"{'GPU nodes':>9} {'up s':>6} {'p50 s':>7} {'p99 s':>7} {'max s':>7} "
        f"{'ctl req/Xid':>11} {'agent req/Xid':>13} {'idle ctl req/s':>14} {'idle agent req/s':>16}"
    )
    for r in rows:
        print(
            f"{r['gpu_nodes']:>9.0f} {r['up_seconds']:>6.1f} {r['p50']:>7.3f} {r['p99']:>7.3f} "
            f"{r['max']:>7.3f} {r['controller_per_xid']:>11.2f} {r['agent_per_xid']:>13.2f} "
            f"{r['controller_idle_rps']:>14.3f} {r['agent_idle_rps']:>16.3f}"
        )
    for r in rows:
        print(
            f"{r['gpu_nodes']:.0f} GPU nodes, means: agent line read -> condition "
            f"{r['agent_read_to_condition']:.3f} s; line read -> cordon (controller's histogram) "
            f"{r['read_to_cordon']:.3f} s"
        )
        print(
            f"{r['gpu_nodes']:.0f} GPU nodes idle: {r['apf_idle_rps']:.3f} requests/s dispatched "
            "in APF flow schema global-default (agent, controller incl. kopf's watches, CoreDNS)"
        )
    print(
        f"\n{'GPU nodes':>9} {'single Xids':>11} {'p50 s':>7} {'p99 s':>7} "
        f"{'ctl writes before cordon/Xid':>28}"
    )
    for r in rows:
        print(
            f"{r['gpu_nodes']:>9.0f} {r['stream_count']:>11.0f} {r['stream_p50']:>7.3f} "
            f"{r['stream_p99']:>7.3f} {r['critical_writes']:>28.2f}"
        )
    rps = args.agent_max_rps or 5.0 * args.xids
    print(
        f"\n{args.xids} simultaneous Xid 62 lines; latency = line written -> node cordoned; "
        f"agent budget {rps:.0f} requests/s, controller 20/s (burst 40)."
    )


if __name__ == "__main__":
    main()
