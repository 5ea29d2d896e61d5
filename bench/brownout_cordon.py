"""Xid line -> node cordoned while the telemetry storm browns the API server out, with and
without API Priority and Fairness giving the rescue controller a priority level of its own.

For each variant, on a fresh default local fleet (60 nodes; the control plane sized and
cgroup-limited as the spec says, so the storm can OOM-kill kube-apiserver), this:

1. starts the rescue controller and Xid agent (``LocalProvider.start_rescue``) with a
   RescuePolicy that cordons on Xid 62;
2. ``controller-priority``: ``apply_apf_mitigation`` with the controller's identity
   (user ``blackstart:rescue-controller``) as the subject of a FlowSchema that wins over
   the built-in ones, to a priority level with ``--controller-shares`` shares;
   ``storm-confined``: the catalogue's mitigation instead (``telemetry-storm-apf``: the
   telemetry agents' group confined to a priority level of 1 share);
3. seeds 2,000 pods and 200 ConfigMaps and rolls the telemetry service out to every node,
   as the catalogue's unmitigated ``telemetry-storm`` does (48 in flight, LIST pods);
4. after ``--warmup`` seconds, writes one Xid 62 line into a GPU node's kernel log every
   ``--interval`` seconds (``--xids`` nodes), and afterwards reads each node's plan:
   the seconds from the line written to the plan's ``cordonedAt`` (the controller's own
   record of its cordon; read after the storm, so an outage does not lose the figure).

Prints p50, p99 and max per variant, how many cordons the storm window held, the API
server's restarts, and the ratio of each variant's p99 to the first's. Loopback only;
the storm stops by itself after ``--storm`` seconds and each cluster is deleted at the end.

    python bench/brownout_cordon.py [--variant none --variant controller-priority
                                     --variant storm-confined]
                                    [--xids 12] [--interval 5] [--warmup 20] [--storm 150]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import time
from typing import Any

from kubernetes import client

from blackstart.actions.apf import apply_apf_mitigation
from blackstart.actions.rollout import deploy_telemetry_service, remove_telemetry_service
from blackstart.actions.seed import seed_objects
from blackstart.clusters.local.provider import LocalProvider
from blackstart.clusters.spec import load_spec
from blackstart.clusters.toolchain import resolve
from blackstart.kube import api_client
from blackstart.paths import cache_dir
from blackstart.rescue.crd.plans import parse_time
from blackstart.stats import percentile

XID_62 = "[ 1843.308145] NVRM: Xid (PCI:0000:03:00): 62, Channel 00000001\n"
POLICY = {
    "apiVersion": "rescue.blackstart.dev/v1",
    "kind": "RescuePolicy",
    "metadata": {"name": "bench-brownout-62"},
    "spec": {"rules": [{"priority": 10, "errorCode": ["62"], "actions": [{"name": "cordon"}]}]},
}
CONTROLLER_USER = "blackstart:rescue-controller"
VARIANTS = ("none", "controller-priority", "storm-confined")


def cordoned_at(admin: client.ApiClient, nodes: list[str], timeout: float) -> dict[str, float]:
    """Each node's plan's ``cordonedAt`` (epoch seconds); waits until all have one."""
    custom = client.CustomObjectsApi(admin)
    deadline = time.monotonic() + timeout
    found: dict[str, float] = {}
    while time.monotonic() < deadline:
        try:
            plans = custom.list_cluster_custom_object(
                "rescue.blackstart.dev", "v1", "rescueplans", _request_timeout=10
            )["items"]
        except Exception:  # the API server is still coming back
            time.sleep(2)
            continue
        for plan in plans:
            node = plan.get("spec", {}).get("nodeName")
            moment = parse_time((plan.get("status") or {}).get("cordonedAt"))
            if node in nodes and moment is not None:
                found[node] = min(found.get(node, moment.timestamp()), moment.timestamp())
        if len(found) == len(nodes):
            break
        time.sleep(2)
    return found


def restarts(local: LocalProvider, name: str) -> int:
    return sum(s.restarts for s in local.status(name) if s.name == "kube-apiserver")


def run(local: LocalProvider, variant: str, args: argparse.Namespace) -> dict[str, Any]:
    name = f"bench-brownout-{variant}"
    if local.state_dir(name).exists():
        local.down(name)
    print(f"[{variant}] bringing the default fleet up", flush=True)
    local.up(load_spec(), name=name, timeout=900)
    os.environ["BLACKSTART_CLUSTER"] = name
    config: dict[str, Any] = {"blackstart_cluster": name}
    try:
        state = local.state(name)
        admin = api_client(state.kubeconfig, pool_size=4)
        # the storm guard opened wide, so that every Xid is cordoned (the bench measures
        # latency, not the guard: 12 of 48 nodes is more than its default 20 %)
        local.start_rescue(
            name,
            extra_controller_args=(
                "--max-unavailable-share", "1", "--max-concurrent-plans", "100",
            ),
            timeout=300,
        )  # fmt: skip
        client.CustomObjectsApi(admin).create_cluster_custom_object(
            "rescue.blackstart.dev", "v1", "rescuepolicies", POLICY
        )
        if variant == "controller-priority":
            made = apply_apf_mitigation(
                subject=CONTROLLER_USER,
                subject_kind="User",
                name="blackstart-rescue-controller",
                concurrency_shares=args.controller_shares,
                queues=8,
                queue_length=50,
                precedence=100,
                configuration=config,
            )
            print(f"[{variant}] APF: {made}", flush=True)
        if variant == "storm-confined":  # the catalogue's telemetry-storm-apf mitigation
            print(f"[{variant}] APF: {apply_apf_mitigation(configuration=config)}", flush=True)
        seeded = seed_objects(pods=2000, configmaps=200, payload_kib=4, configuration=config)
        print(f"[{variant}] seeded {seeded.get('pods')} pods", flush=True)
        restarts_before = restarts(local, name)
        started = time.time()
        storm = deploy_telemetry_service(
            duration_s=args.storm,
            rate_per_client=1.0,
            resources=["pods"],
            threads=48,
            configuration=config,
        )
        print(f"[{variant}] storm started: {storm.get('clients')} agents", flush=True)
        time.sleep(args.warmup)
        nodes = [f"gpu-{i}" for i in range(0, 4 * args.xids, 4)][: args.xids]
        written: dict[str, float] = {}
        for node in nodes:
            with local.kernel_log(name, node).open("a") as log:
                log.write(XID_62)
            written[node] = time.time()
            time.sleep(args.interval)
        left = max(0.0, started + args.storm - time.time())
        print(f"[{variant}] Xids written; the storm ends in {left:.0f} s", flush=True)
        seen = cordoned_at(admin, nodes, left + 240)
        latencies = [seen[n] - written[n] for n in nodes if n in seen]
        in_storm = sum(1 for n in nodes if n in seen and seen[n] < started + args.storm)
        try:
            remove_telemetry_service(configuration=config)
        except Exception as err:  # the figures stand; the cluster goes anyway
            print(f"[{variant}] removing the telemetry service: {err}", flush=True)
        return {
            "variant": variant,
            "cordoned": len(latencies),
            "xids": len(nodes),
            "in_storm": in_storm,
            "p50": percentile(latencies, 0.5) if latencies else float("nan"),
            "p99": percentile(latencies, 0.99) if latencies else float("nan"),
            "max": max(latencies) if latencies else float("nan"),
            "restarts": restarts(local, name) - restarts_before,
        }
    finally:
        os.environ.pop("BLACKSTART_CLUSTER", None)
        local.down(name)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--variant", action="append", choices=VARIANTS)
    parser.add_argument("--xids", type=int, default=12, help="Xid lines written in the storm")
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between them")
    parser.add_argument("--warmup", type=float, default=20.0, help="storm seconds before them")
    parser.add_argument("--storm", type=float, default=150.0, help="storm duration (seconds)")
    parser.add_argument("--controller-shares", type=int, default=50)
    args = parser.parse_args()
    cache = cache_dir()
    toolchain, missing = resolve(cache)
    if missing:
        raise SystemExit(f"missing binaries: {missing}; run `blackstart toolchain install`")
    local = LocalProvider(cache, toolchain, progress=lambda m: print(m, flush=True))
    results = [run(local, v, args) for v in args.variant or list(VARIANTS)]
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    print(f"\nXid line -> cordon during the telemetry storm, default fleet ({when})")
    print(f"{'variant':<22}{'cordoned':>10}{'in storm':>10}{'p50 s':>9}{'p99 s':>9}{'max s':>9}"
          f"{'apiserver restarts':>20}")  # fmt: skip
    for r in results:
        print(
            f"{r['variant']:<22}{r['cordoned']:>7}/{r['xids']:<2}{r['in_storm']:>10}"
            f"{r['p50']:>9.2f}{r['p99']:>9.2f}{r['max']:>9.2f}{r['restarts']:>20}"
        )
    for other in results[1:]:
        if other["p99"] > 0:
            print(f"p99 ratio {results[0]['variant']} / {other['variant']}: "
                  f"{results[0]['p99'] / other['p99']:.1f}x")  # fmt: skip


if __name__ == "__main__":
    main()
