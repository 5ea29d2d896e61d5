"""What the storm guard costs the controller for each Xid it admits, by fleet size.

The controller weighs every new incident against the storm guard under its admission
lock, in its one event loop: a burst of 1,000 Xids on 10,000 GPU nodes is 1,000 such
weighings while the cordons wait. This builds the controller's memory of a fleet of
``--nodes`` GPU nodes (no cluster: the counting is pure logic), ``--plans`` of them
under remediation and ``--reporting`` with a recent Xid report, and times:

- the kept counts (``Controller._gpu_pool_counts``, what admission uses), and
- a pass over every node (``Controller._pool``, how admission counted before),

printing microseconds per admission for each, their ratio, and the whole burst's
event-loop time (admissions x cost) for each.

    python bench/storm_guard_cost.py [--nodes 1000 10000] [--plans 1000] [--reporting 1000]
"""

from __future__ import annotations

import argparse
import datetime as dt
import time

from kubernetes.client import ApiClient, Configuration

from blackstart.rescue.controller.config import ControllerConfig
from blackstart.rescue.controller.kube_api import KubeApi
from blackstart.rescue.controller.metrics import ControllerMetrics
from blackstart.rescue.controller.node_actions import NodeView
from blackstart.rescue.controller.operator import Controller
from blackstart.rescue.controller.storm_guard import StormGuard
from blackstart.rescue.crd.actions import RescueAction
from blackstart.rescue.crd.plans import PlanRecord, plan_body


def fleet(nodes: int, plans: int, reporting: int) -> Controller:
    config = ControllerConfig(storm_guard=StormGuard(max_concurrent_plans=100_000))
    controller = Controller(config, KubeApi(ApiClient(Configuration()), ControllerMetrics()),
                            ControllerMetrics())  # fmt: skip
    now = dt.datetime.now(dt.UTC)
    for i in range(nodes):
        name = f"gpu-{i:05d}"
        held = i < plans
        controller.remember(
            NodeView.from_object(
                {
                    "metadata": {
                        "name": name,
                        "labels": {"nvidia.com/gpu.product": "H100", "pool": "train"},
                        "annotations": (
                            {"rescue.blackstart.dev/cordoned-by": f"{name}-plan"} if held else {}
                        ),
                    },
                    "spec": {"unschedulable": held},
                    "status": {"capacity": {"nvidia.com/gpu": "8"},
                               "allocatable": {"nvidia.com/gpu": "8"}},
                }
            )
        )  # fmt: skip
        if held:
            body = plan_body(f"{name}-plan", name, [62], (RescueAction("cordon"),),
                             source="policy", dry_run=False, node_was_cordoned=False)  # fmt: skip
            controller._hold(PlanRecord.from_object(body))
        if i < reporting:
            controller.saw_xid(name, now)
    return controller


def per_call(fn: object, seconds: float = 1.0) -> float:
    """Seconds per call of ``fn``, over at least ``seconds``."""
    calls = 0
    started = time.perf_counter()
    while True:
        fn()  # type: ignore[operator]
        calls += 1
        spent = time.perf_counter() - started
        if spent >= seconds:
            return spent / calls


def scanned(controller: Controller, since: dt.datetime) -> tuple[int, int, int, int]:
    pool = controller._pool(None)
    reporting = sum(1 for node in pool if controller._xid_at.get(node.name, since) > since)
    held = sum(1 for node in pool if controller._held(node))
    return len(pool), reporting, held, sum(1 for p in controller.plans.values() if p.active)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--plans", type=int, default=1000, help="nodes under remediation")
    parser.add_argument("--reporting", type=int, default=1000, help="nodes with a recent Xid")
    args = parser.parse_args()
    print(f"{'nodes':>7} {'kept counts':>13} {'pass over fleet':>16} {'ratio':>7} "
          f"{'burst, kept':>12} {'burst, pass':>12}")  # fmt: skip
    for nodes in args.nodes:
        controller = fleet(nodes, min(args.plans, nodes), min(args.reporting, nodes))
        since = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
        kept_counts = controller._gpu_pool_counts(since)
        if kept_counts != scanned(controller, since):
            raise SystemExit(f"the counts differ: {kept_counts} != {scanned(controller, since)}")
        kept = per_call(lambda c=controller, s=since: c._gpu_pool_counts(s))
        passed = per_call(lambda c=controller, s=since: scanned(c, s))
        burst = min(args.reporting, nodes)
        print(f"{nodes:>7} {kept * 1e6:>10.0f} us {passed * 1e6:>13.0f} us {passed / kept:>6.1f}x "
              f"{kept * burst:>10.2f} s {passed * burst:>10.2f} s")  # fmt: skip


if __name__ == "__main__":
    main()
