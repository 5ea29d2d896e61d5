"""How fast and how cheaply the rescue agent and controller turn a Xid line into a cordon.

For each fleet size (default 100 and 1,000 KWOK GPU nodes) this brings up a fresh
local cluster, creates a RescuePolicy that cordons on Xid 62, starts the Xid agent
(every node's kernel log) and the controller with ``LocalProvider.start_rescue``, and:

- waits for the agent's start-up reads (one GET per node, its prefetch) and prints
  how long they took;
- measures the requests per second the agent and the controller make while the fleet
  is idle (``--idle`` seconds, from their own request counters) and the cores each
  process keeps busy meanwhile;
- writes one Xid 62 line into the kernel logs of ``--xids`` GPU nodes at once and
  measures, for each, the seconds from the line being written to the node being
  cordoned (seen on a watch): p50 and p99; the cores each process (API server, etcd,
  KWOK, agent, controller, this benchmark, the whole machine) kept busy from the first
  line to the last cordon, and the agent's and the controller's own means over the
  burst (line read -> condition, line read -> cordon);
- counts the API requests agent and controller made for those Xids, per Xid, and the
  controller's by verb and answer: its cordon goes first and is one PATCH decided on its
  watch cache, so its writes on the critical path per Xid are 1 plus the 409s (a node
  that changed since the cache saw it is read again and patched again);
- then (``--stream``, default 40) writes single Xid lines on other nodes one at a time,
  ``--stream-interval`` seconds apart (default 0.5 s: a steady 2 Xids/s, the fleet
  otherwise as busy as ever): p50 and p99 of the same latency for single Xids;
- then (``--drain``, default 10) puts one evictable pod (a Deployment's) on each of as
  many other nodes and writes a Xid 31 line (cordon, then drain) into their logs one a
  second: p50 and p99 of line written -> the plan's ``drainedAt`` (the pod gone).

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
cordoned; the rate limits are the defaults (controller 50 requests/s, burst 100).
Every request goes to the local cluster on loopback; the clusters are deleted at the end.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client, watch
from prometheus_client.parser import text_string_to_metric_families

from blackstart.clusters.local.provider import LocalProvider
from blackstart.clusters.local.supervisor import process_usage
from blackstart.clusters.processes import read_pid
from blackstart.clusters.spec import load_spec
from blackstart.clusters.toolchain import resolve
from blackstart.kube import api_client
from blackstart.paths import cache_dir
from blackstart.rescue.crd.plans import parse_time
from blackstart.stats import percentile

XID_62 = "[ 1843.308145] NVRM: Xid (PCI:0000:03:00): 62, Channel 00000001\n"
XID_31 = "[ 1902.500000] NVRM: Xid (PCI:0000:01:00): 31, Ch 00000009, engmask 00000101\n"
POLICY = {
    "apiVersion": "rescue.blackstart.dev/v1",
    "kind": "RescuePolicy",
    "metadata": {"name": "bench-cordon-62"},
    "spec": {
        "rules": [
            {"priority": 10, "errorCode": ["62"], "actions": [{"name": "cordon"}]},
            {
                "priority": 10,
                "errorCode": ["31"],
                "actions": [{"name": "cordon"}, {"name": "drain"}],
            },
        ]
    },
}
DRAIN_NAMESPACE = "bench-drain"


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
                key = " ".join(str(s.labels[k]) for k in ("verb", "code") if k in s.labels)
                found[key] = found.get(key, 0.0) + s.value
    return found


def histogram_totals(port: int, name: str) -> tuple[float, float]:
    """(sum, count) of histogram ``name`` as a process serves it now."""
    return requests_made(port, f"{name}_sum"), requests_made(port, f"{name}_count")


def histogram_mean(port: int, name: str, since: tuple[float, float] = (0.0, 0.0)) -> float:
    """The mean of what histogram ``name`` observed after ``since`` (its totals then)."""
    total, count = histogram_totals(port, name)
    count -= since[1]
    return (total - since[0]) / count if count else float("nan")


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
CONTROLLER_TO_CORDON = "blackstart_rescue_controller_xid_to_cordon_seconds"
AGENT_DELIVERY = "blackstart_rescue_agent_delivery_seconds"
AGENT_METRIC = "blackstart_rescue_agent_api_requests_total"


def rss_mib(pid: int | None) -> float:
    """Resident memory of process ``pid`` in MiB (NaN when it is not running)."""
    usage = process_usage(pid)
    return usage[0] / 2**20 if usage is not None else float("nan")


CPU_COMPONENTS = (
    "kube-apiserver",
    "etcd",
    "kwok-controller",
    "kube-controller-manager",
    "kube-scheduler",
    "rescue-controller",
    "rescue-agent",
)


def machine_busy_seconds() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    ticks = os.sysconf("SC_CLK_TCK")
    idle = fields[3] + fields[4]  # idle and iowait
    return (sum(fields) - idle) / ticks, sum(fields) / ticks


def wait_for_prefetch(port: int, nodes: int, timeout: float = 600.0) -> float:
    """Seconds until the agent's start-up reads (one GET per node it serves, at least
    ``nodes``) are done: its request count has reached ``nodes`` and stopped growing."""
    started = time.monotonic()
    last, steady_since = -1.0, time.monotonic()
    while time.monotonic() - started < timeout:
        made = requests_made(port, AGENT_METRIC)
        if made != last:
            last, steady_since = made, time.monotonic()
        elif made >= nodes and time.monotonic() - steady_since >= 2.0:
            return steady_since - started
        time.sleep(0.2)
    raise SystemExit(f"the agent's start-up reads did not finish in {timeout:.0f} s ({last:.0f})")


def cpu_seconds(local: LocalProvider, cluster: str) -> dict[str, float]:
    """CPU seconds used so far by each component of the cluster, this benchmark (its
    cordon watch) and, as ``machine``, every process on the machine."""
    used: dict[str, float] = {}
    for component in CPU_COMPONENTS:
        if component.startswith("rescue-"):
            pid = read_pid(local.pid_file(cluster, component))
        else:
            pid = local.component_pid(cluster, component)
        usage = process_usage(pid)
        if usage is not None:
            used[component] = usage[1]
    own = os.times()
    used["benchmark"] = own.user + own.system
    used["machine"] = machine_busy_seconds()[0]
    return used


def cores_used(before: dict[str, float], after: dict[str, float], seconds: float) -> str:
    """Cores each process kept busy between two :func:`cpu_seconds` readings."""
    share = {k: (after[k] - before[k]) / seconds for k in after if k in before}
    machine = share.pop("machine", float("nan"))
    parts = [f"{k} {v:.2f}" for k, v in sorted(share.items(), key=lambda kv: -kv[1])]
    return f"machine {machine:.2f} of {os.cpu_count()} cores busy; " + ", ".join(parts)


def has_xid_condition(node: dict[str, Any]) -> bool:
    return any(
        c.get("type") == "GPUXidError" and c.get("status") == "True"
        for c in (node.get("status") or {}).get("conditions") or []
    )


def watch_cordons(
    core: client.CoreV1Api,
    wanted: set[str],
    seen: dict[str, float],
    signalled: dict[str, float] | None = None,
) -> None:
    """Record when each node in ``wanted`` is first seen cordoned (wall clock), and in
    ``signalled`` when first seen with the agent's GPUXidError condition.

    The events are read as plain JSON: decoding each Node into the client's model
    classes takes milliseconds, and a burst of events would make this clock lag.
    """
    start = core.list_node(limit=1).metadata.resource_version
    stream = watch.Watch()
    for event in stream.stream(
        core.list_node, resource_version=start, timeout_seconds=300, deserialize=False
    ):
        node = event["object"]
        name = node["metadata"]["name"]
        if (
            signalled is not None
            and name in wanted
            and name not in signalled
            and has_xid_condition(node)
        ):
            signalled[name] = time.time()
        if name in wanted and (node.get("spec") or {}).get("unschedulable") and name not in seen:
            seen[name] = time.time()
            if len(seen) == len(wanted):
                stream.stop()


def time_to_cordon(
    core: client.CoreV1Api,
    local: LocalProvider,
    cluster: str,
    targets: list[str],
    spacing: float,
    signalled: dict[str, float] | None = None,
    before_writing: Callable[[], None] | None = None,
) -> list[float]:
    """Write a Xid 62 line into each target's kernel log, ``spacing`` seconds apart (0: at
    once); the seconds from each line written to its node seen cordoned on a watch.
    ``signalled`` gets the seconds from line written to the agent's condition seen;
    ``before_writing`` is called once the watch runs, just before the first line."""
    seen: dict[str, float] = {}
    condition_at: dict[str, float] = {}
    watcher = threading.Thread(
        target=watch_cordons, args=(core, set(targets), seen, condition_at), daemon=True
    )
    watcher.start()
    time.sleep(1)
    written: dict[str, float] = {}
    logs = {node: local.kernel_log(cluster, node) for node in targets}
    if before_writing is not None:
        before_writing()
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
    if signalled is not None:
        signalled.update({n: condition_at[n] - written[n] for n in targets if n in condition_at})
    return [seen[n] - written[n] for n in targets]


def time_to_drain(
    admin: client.ApiClient, local: LocalProvider, cluster: str, nodes: list[str], spacing: float
) -> list[float]:
    """One evictable pod (a Deployment's) on each node, then a Xid 31 line (cordon and
    drain) into each node's log, ``spacing`` seconds apart; the seconds from the line
    written to the plan's ``drainedAt`` (the pod gone, as the controller saw it)."""
    core, apps = client.CoreV1Api(admin), client.AppsV1Api(admin)
    custom = client.CustomObjectsApi(admin)
    core.create_namespace({"metadata": {"name": DRAIN_NAMESPACE}})
    for node in nodes:
        labels = {"app": f"trainer-{node}"}
        apps.create_namespaced_deployment(
            DRAIN_NAMESPACE,
            {
                "metadata": {"name": f"trainer-{node}"},
                "spec": {
                    "replicas": 1,
                    "selector": {"matchLabels": labels},
                    "template": {
                        "metadata": {"labels": labels},
                        "spec": {
                            "nodeSelector": {"kubernetes.io/hostname": node},
                            "containers": [{"name": "c", "image": "registry.invalid/trainer:1"}],
                        },
                    },
                },
            },
        )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        pods = core.list_namespaced_pod(DRAIN_NAMESPACE).items
        running = {p.spec.node_name for p in pods if p.status.phase == "Running"}
        if running >= set(nodes):
            break
        time.sleep(0.5)
    else:
        raise SystemExit(f"the trainer pods did not all run within 120 s: {sorted(running)}")
    written: dict[str, float] = {}
    for node in nodes:
        with local.kernel_log(cluster, node).open("a") as log:
            log.write(XID_31)
        written[node] = time.time()
        time.sleep(spacing)
    drained: dict[str, float] = {}
    deadline = time.monotonic() + 120
    while len(drained) < len(nodes) and time.monotonic() < deadline:
        plans = custom.list_cluster_custom_object("rescue.blackstart.dev", "v1", "rescueplans")
        for plan in plans["items"]:
            node = plan["spec"]["nodeName"]
            at = parse_time((plan.get("status") or {}).get("drainedAt"))
            if node in written and 31 in plan["spec"].get("xids", []) and at is not None:
                drained[node] = at.timestamp() - written[node]
        time.sleep(0.5)
    if len(drained) < len(nodes):
        raise SystemExit(f"only {len(drained)} of {len(nodes)} nodes were drained in 120 s")
    return list(drained.values())


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
    drain: int = 10,
    controller_args: tuple[str, ...] = (),
    agent_args: tuple[str, ...] = (),
) -> dict[str, Any]:
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
                "--max-concurrent-plans", str(max(100, xids + stream + drain)),
                *controller_args,
            ),
            extra_agent_args=(
                "--from-end", "--max-rps", str(agent_rps), "--poll-interval", str(poll_interval),
                *agent_args,
            ),
            timeout=300,
        )  # fmt: skip
        client.CustomObjectsApi(admin).create_cluster_custom_object(
            "rescue.blackstart.dev", "v1", "rescuepolicies", POLICY
        )
        ports = rescue["metrics_ports"]
        assert isinstance(ports, dict)
        cport, aport = int(ports["rescue-controller"]), int(ports["rescue-agent"])
        prefetch_seconds = wait_for_prefetch(aport, gpu_nodes)
        print(
            f"[{gpu_nodes} GPU nodes] the agent read every node once in {prefetch_seconds:.1f} s "
            f"({requests_made(aport, AGENT_METRIC):.0f} requests)",
            flush=True,
        )
        time.sleep(5)  # the watches settled

        c0, a0 = requests_made(cport, CONTROLLER_METRIC), requests_made(aport, AGENT_METRIC)
        apf0 = apf_dispatched(admin)
        idle_cpu0 = cpu_seconds(local, name)
        time.sleep(idle)
        idle_cpu = cores_used(idle_cpu0, cpu_seconds(local, name), idle)
        print(f"[{gpu_nodes} GPU nodes] cores in use while idle: {idle_cpu}", flush=True)
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
        signalled: dict[str, float] = {}
        at_start: dict[str, Any] = {}

        def burst_starts() -> None:
            at_start.update(
                cpu=cpu_seconds(local, name),
                clock=time.monotonic(),
                delivery=histogram_totals(aport, AGENT_DELIVERY),
                to_cordon=histogram_totals(cport, CONTROLLER_TO_CORDON),
            )

        latencies = time_to_cordon(core, local, name, targets, 0.0, signalled, burst_starts)
        burst_seconds = time.monotonic() - at_start["clock"]
        burst_cpu = cores_used(at_start["cpu"], cpu_seconds(local, name), burst_seconds)
        burst_delivery = histogram_mean(aport, AGENT_DELIVERY, at_start["delivery"])
        burst_to_cordon = histogram_mean(cport, CONTROLLER_TO_CORDON, at_start["to_cordon"])
        print(
            f"[{gpu_nodes} GPU nodes] cores in use during the burst ({burst_seconds:.1f} s, "
            f"first line to the last cordon): {burst_cpu}",
            flush=True,
        )
        to_signal = list(signalled.values())
        print(
            f"[{gpu_nodes} GPU nodes] line written -> agent's condition seen: p50 "
            f"{percentile(to_signal, 0.5):.3f} s, p99 {percentile(to_signal, 0.99):.3f} s "
            f"({len(to_signal)} seen)",
            flush=True,
        )
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
            stream_signalled: dict[str, float] = {}
            streamed = time_to_cordon(core, local, name, others, stream_interval, stream_signalled)
            to_signal = list(stream_signalled.values())
            print(
                f"[{gpu_nodes} GPU nodes] single Xids: line written -> agent's condition seen: "
                f"p50 {percentile(to_signal, 0.5):.3f} s, p99 {percentile(to_signal, 0.99):.3f} s",
                flush=True,
            )
        controller_mib = rss_mib(read_pid(local.pid_file(name, "rescue-controller")))
        agent_mib = rss_mib(read_pid(local.pid_file(name, "rescue-agent")))
        drains = (
            time_to_drain(
                admin, local, name, [f"gpu-{i}" for i in range(2, gpu_nodes, step)][:drain], 1.0
            )
            if drain
            else []
        )
        return {
            "burst_cpu": burst_cpu,
            "idle_cpu": idle_cpu,
            "controller_mib": controller_mib,
            "agent_mib": agent_mib,
            "drain_p50": percentile(drains, 0.50) if drains else float("nan"),
            "drain_p99": percentile(drains, 0.99) if drains else float("nan"),
            "drain_count": float(len(drains)),
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
            "agent_read_to_condition": burst_delivery,
            "read_to_cordon": burst_to_cordon,
        }
    finally:
        local.down(name)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--nodes", action="append", type=int, help="GPU nodes (repeatable)")
    parser.add_argument("--xids", type=int, default=50, help="simultaneous Xids")
    parser.add_argument("--idle", type=float, default=60.0, help="seconds of idle measurement")
    parser.add_argument(
        "--controller-arg",
        action="append",
        default=[],
        help="an extra controller argument, e.g. --controller-arg=--qps=100 (repeatable)",
    )
    parser.add_argument(
        "--agent-arg",
        action="append",
        default=[],
        help="an extra agent argument, e.g. --agent-arg=--senders=32 (repeatable)",
    )
    parser.add_argument("--stream", type=int, default=40, help="single Xids after the burst")
    parser.add_argument(
        "--drain", type=int, default=10, help="nodes with one pod each, drained one at a time"
    )
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
                    args.drain,
                    tuple(args.controller_arg),
                    tuple(args.agent_arg),
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
            f"{r['gpu_nodes']:.0f} GPU nodes, the burst's means: agent line read -> condition "
            f"{r['agent_read_to_condition']:.3f} s; line read -> cordon (controller's histogram) "
            f"{r['read_to_cordon']:.3f} s"
        )
        print(
            f"{r['gpu_nodes']:.0f} GPU nodes: resident memory after the burst: controller "
            f"{r['controller_mib']:.0f} MiB, agent (every node's, one process) "
            f"{r['agent_mib']:.0f} MiB"
        )
        print(f"{r['gpu_nodes']:.0f} GPU nodes, cores while idle: {r['idle_cpu']}")
        print(f"{r['gpu_nodes']:.0f} GPU nodes, cores during the burst: {r['burst_cpu']}")
        print(
            f"{r['gpu_nodes']:.0f} GPU nodes idle: {r['apf_idle_rps']:.3f} requests/s dispatched "
            "in APF flow schema global-default (agent, controller incl. kopf's watches, CoreDNS)"
        )
    print(
        f"\n{'GPU nodes':>9} {'single Xids':>11} {'p50 s':>7} {'p99 s':>7} "
        f"{'ctl writes before cordon/Xid':>28} {'drained':>7} {'p50 s':>7} {'p99 s':>7}"
    )
    for r in rows:
        print(
            f"{r['gpu_nodes']:>9.0f} {r['stream_count']:>11.0f} {r['stream_p50']:>7.3f} "
            f"{r['stream_p99']:>7.3f} {r['critical_writes']:>28.2f} {r['drain_count']:>7.0f} "
            f"{r['drain_p50']:>7.3f} {r['drain_p99']:>7.3f}"
        )
    rps = args.agent_max_rps or 5.0 * args.xids
    print(
        f"\n{args.xids} simultaneous Xid 62 lines; latency = line written -> node cordoned; "
        f"agent budget {rps:.0f} requests/s, controller 50/s (burst 100) unless "
        f"--controller-arg says otherwise: {args.controller_arg}."
    )


if __name__ == "__main__":
    main()
