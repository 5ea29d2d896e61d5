"""The December 2024 storm on kind: the telemetry DaemonSet's own pods collapse a limited
control plane, the admin's rollback is timed, and the API server's recovery after it.

On a kind cluster (``--cluster``; made from ``clusters/kind-gpu.yaml`` and deleted at
the end unless it exists already or ``--keep``) this:

1. builds and loads the rescue agent's image, whose ``blackstart.telemetry_agent`` the
   telemetry pods run, and seeds ``--configmaps`` ConfigMaps of ``--payload-kib`` KiB
   (what the agents LIST, cluster-wide, without a resourceVersion);
2. limits the control-plane node container (``--cp-memory`` MiB, ``--cp-cpus``), as
   ``spec.controlPlane`` does at ``cluster up``;
3. rolls the telemetry service out (one pod per worker, ``--agents`` agents each, one
   LIST a second per agent, for ``--duration`` s at most) and checks ``/readyz`` as the
   admin every second: the seconds until it fails twice in a row (unavailable);
4. after ``--rollback-after`` s deletes the DaemonSet as the admin does
   (``remove_telemetry_service``: one try a second, 5 s each): the lockout, in seconds
   and failed tries; then the seconds until ``/readyz`` answered 5 times in a row;
5. prints kube-apiserver's restarts (kubelet's count), the storm's figures from the
   pods and their CPU, then lifts the limit and removes the seeded objects.

With ``--staged`` step 3 is the fix instead: the roll-out in stages (``--stages``, a
share of the workers each, ``--hold`` s apiece) whose guard times system traffic as
``blackstart:coredns`` and halts when its p99 passes 1 s; ``/readyz`` is checked every
second all along. It prints each stage's p99, where the roll-out stopped, and whether
the API server ever became unavailable.

    python bench/kind_storm.py [--cluster bs-kind-storm] [--cp-memory 1024] [--agents 16]
                               [--configmaps 3000] [--payload-kib 8] [--keep]
                               [--staged [--stages 25,50,100] [--hold 20]]

All traffic stays on this machine: the pods call the API server inside kind's network.
"""

from __future__ import annotations

import argparse
import threading
import time
from typing import Any

from kubernetes.client import ApiClient

from blackstart.actions import rollout, seed
from blackstart.clusters.kind_provider import KindProvider
from blackstart.clusters.spec import ControlPlaneSize, host_resources, load_spec
from blackstart.clusters.state import ClusterNotFound, load_state
from blackstart.health import apiserver_readyz
from blackstart.kube import api_client
from blackstart.paths import cache_dir
from blackstart.rescue.image import build_images


def apiserver_restarts(kind: KindProvider, name: str) -> int:
    for status in kind.status(name):
        if status.name == "kube-apiserver":
            return status.restarts
    return 0


def ready(api: ApiClient) -> bool:
    return apiserver_readyz(api, 2.0)[0]


def run(args: argparse.Namespace, kind: KindProvider, kubeconfig: str) -> dict[str, Any]:
    cfg = {"blackstart_cluster": args.cluster}
    admin = api_client(kubeconfig, None, pool_size=1, timeout=2.0)
    seeded = seed.seed_objects(
        pods=0, configmaps=args.configmaps, payload_kib=args.payload_kib, node_selector="",
        configuration=cfg,
    )  # fmt: skip
    print(f"seeded {seeded['configmaps']} ConfigMaps of {args.payload_kib} KiB", flush=True)
    restarts_before = apiserver_restarts(kind, args.cluster)
    kind.limit_control_plane(
        args.cluster, ControlPlaneSize(cpus=args.cp_cpus, memory=args.cp_memory << 20)
    )
    started = time.monotonic()
    deployed = rollout.deploy_telemetry_service(
        duration_s=args.duration, rate_per_client=1.0, resources=["configmaps"],
        agents_per_pod=args.agents, configuration=cfg,
    )  # fmt: skip
    print(f"{deployed['pods']} telemetry pods x {args.agents} agents calling", flush=True)
    unavailable_at = None
    misses = 0
    while time.monotonic() - started < args.rollback_after:
        tick = time.monotonic()
        misses = 0 if ready(admin) else misses + 1
        if misses >= 2 and unavailable_at is None:
            unavailable_at = time.monotonic() - started
            print(f"{unavailable_at:5.1f} s: API server unavailable", flush=True)
        time.sleep(max(0.0, 1.0 - (time.monotonic() - tick)))
    print(f"{time.monotonic() - started:5.1f} s: the admin deletes the DaemonSet", flush=True)
    removed = rollout.remove_telemetry_service(timeout_s=300, configuration=cfg)
    deleted_at = time.monotonic()
    answered = 0
    while answered < 5 and time.monotonic() - deleted_at < 300:
        tick = time.monotonic()
        answered = answered + 1 if ready(admin) else 0
        time.sleep(max(0.0, 1.0 - (time.monotonic() - tick)))
    recovered_s = time.monotonic() - deleted_at - 4
    return {
        "unavailable_s": unavailable_at,
        "removed": removed,
        "recovered_s": recovered_s,
        "restarts": apiserver_restarts(kind, args.cluster) - restarts_before,
    }


class ReadyzWatch:
    """``/readyz`` as the admin every second in a thread: the longest run of failures."""

    def __init__(self, api: ApiClient) -> None:
        self.api = api
        self.stop = threading.Event()
        self.checks = self.misses = self.longest = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        run = 0
        while not self.stop.wait(1.0):
            self.checks += 1
            run = 0 if ready(self.api) else run + 1
            self.misses += 1 if run else 0
            self.longest = max(self.longest, run)

    def __enter__(self) -> ReadyzWatch:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self.thread.join()


def run_staged(args: argparse.Namespace, kind: KindProvider, kubeconfig: str) -> dict[str, Any]:
    cfg = {"blackstart_cluster": args.cluster}
    admin = api_client(kubeconfig, None, pool_size=1, timeout=2.0)
    seed.seed_objects(
        pods=0, configmaps=args.configmaps, payload_kib=args.payload_kib, node_selector="",
        configuration=cfg,
    )  # fmt: skip
    restarts_before = apiserver_restarts(kind, args.cluster)
    kind.limit_control_plane(
        args.cluster, ControlPlaneSize(cpus=args.cp_cpus, memory=args.cp_memory << 20)
    )
    stages = [float(x) for x in args.stages.split(",")]
    started = time.monotonic()
    with ReadyzWatch(admin) as watch:
        result = rollout.roll_out_telemetry_service(
            stages=stages, hold_s=args.hold, max_p99_s=1.0, resources=["configmaps"],
            agents_per_pod=args.agents, duration_s=args.duration, configuration=cfg,
        )  # fmt: skip
        rolled_s = time.monotonic() - started
        time.sleep(args.hold)  # the kept stage runs on: does the API server stay up?
    removed = rollout.remove_telemetry_service(timeout_s=300, configuration=cfg)
    return {
        "result": result,
        "rolled_s": rolled_s,
        "watch": watch,
        "removed": removed,
        "restarts": apiserver_restarts(kind, args.cluster) - restarts_before,
    }


def print_staged(args: argparse.Namespace, figures: dict[str, Any]) -> None:
    result, watch, removed = figures["result"], figures["watch"], figures["removed"]
    rows = [
        ("control plane (node container)", f"{args.cp_memory} MiB, {args.cp_cpus:g} cores"),
        ("agents per pod", f"{args.agents} (LIST {args.configmaps} ConfigMaps of "
         f"{args.payload_kib} KiB, 1/s)"),
    ]  # fmt: skip
    for stage in result["stages"]:
        verdict = "healthy" if stage["healthy"] else f"HALT: {stage['reason']}"
        rows.append((f"stage {stage['percent']:g} % ({stage['pods']} pods)",
                     f"system p99 {stage['p99_s'] or 0:.3f} s, {verdict}"))  # fmt: skip
    rows += [
        ("roll-out", f"{'completed' if result['completed'] else 'halted'} after "
         f"{figures['rolled_s']:.0f} s; kept {result['kept_pods']} pods "
         f"({result['kept_percent']:g} %)"),
        ("/readyz checks / failed / longest failing run",
         f"{watch.checks} / {watch.misses} / {watch.longest} s"),
        ("kube-apiserver restarts (kubelet)", str(figures["restarts"])),
        ("admin DELETE of the DaemonSet", f"{removed['seconds_until_deleted']:.1f} s, "
         f"{removed['failed_tries']} failed tries"),
        ("storm client CPU (all pods)", f"{removed['storm']['client_cpu_s']:.1f} s"),
    ]  # fmt: skip
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cluster", default="bs-kind-storm")
    parser.add_argument("--cp-memory", type=int, default=1024, help="MiB (default 1024)")
    parser.add_argument("--cp-cpus", type=float, default=2.0)
    parser.add_argument("--agents", type=int, default=16, help="agents per pod (default 16)")
    parser.add_argument("--configmaps", type=int, default=3000)
    parser.add_argument("--payload-kib", type=int, default=8)
    parser.add_argument("--duration", type=float, default=120.0)
    parser.add_argument("--rollback-after", type=float, default=60.0)
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--staged", action="store_true", help="the staged roll-out instead")
    parser.add_argument("--stages", default="25,50,100", help="percent of the workers")
    parser.add_argument("--hold", type=float, default=20.0, help="seconds per stage")
    args = parser.parse_args()
    cache = cache_dir()
    kind = KindProvider(cache, progress=lambda m: print(m, flush=True))
    try:
        load_state(args.cluster, cache)
        made = False
    except ClusterNotFound:
        made = True
    if made:
        kind.up(load_spec("kind-gpu.yaml"), args.cluster)
    state_kubeconfig = str(kind.kubeconfig(args.cluster))
    build_images(cache, progress=lambda m: None, kind_cluster=args.cluster)
    cores, memory = host_resources()
    try:
        figures = (run_staged if args.staged else run)(args, kind, state_kubeconfig)
    finally:
        kind.limit_control_plane(args.cluster, ControlPlaneSize(cpus=cores, memory=memory))
        seed.remove_seeded_objects(configuration={"blackstart_cluster": args.cluster})
        if made and not args.keep:
            kind.down(args.cluster)
    if args.staged:
        print_staged(args, figures)
        return
    removed, storm = figures["removed"], figures["removed"]["storm"]
    unavailable = figures["unavailable_s"]
    rows = [
        ("control plane (node container)", f"{args.cp_memory} MiB, {args.cp_cpus:g} cores"),
        ("telemetry pods x agents", f"{storm['pods']} x {args.agents} (LIST configmaps 1/s)"),
        ("storm start -> API unavailable",
         f"{unavailable:.1f} s" if unavailable is not None else "stayed available"),
        ("kube-apiserver restarts (kubelet)", str(figures["restarts"])),
        ("admin DELETE of the DaemonSet",
         f"{removed['seconds_until_deleted']:.1f} s, {removed['failed_tries']} failed tries"),
        ("DaemonSet deleted -> /readyz 5 in a row", f"{figures['recovered_s']:.1f} s"),
        ("storm requests / ok / timed out", f"{storm['requests']} / {storm['ok']} / "
         f"{storm['error_kinds'].get('timed out', 0)}"),
        ("storm latency p50 / p99", f"{storm['latency_s']['p50']} / {storm['latency_s']['p99']} s"),
        ("storm client CPU (all pods)", f"{storm['client_cpu_s']:.1f} s over "
         f"{storm['elapsed_s']:.0f} s"),
    ]  # fmt: skip
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")


if __name__ == "__main__":
    main()
