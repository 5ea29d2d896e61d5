"""The rescue controller run in the test's own process, against the real local cluster,
with gates on its requests: a test holds one request (the uncordon, the reboot order)
until it has stopped the API server, so the request meets a real outage.

Everything else is the controller as it ships: kopf's watches, the real
:class:`~blackstart.rescue.controller.operator.Controller`, its least-privilege identity.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import kopf
import pytest
from kubernetes import client

from blackstart.clusters.local.provider import LocalProvider
from blackstart.clusters.state import ClusterState
from blackstart.kube import api_client
from blackstart.rescue.controller.config import ControllerConfig
from blackstart.rescue.controller.kopf_wiring import build_registry
from blackstart.rescue.controller.kube_api import ACT, KubeApi
from blackstart.rescue.controller.metrics import ControllerMetrics
from blackstart.rescue.controller.operator import Controller
from blackstart.rescue.install import apply_documents, deploy_documents, wait_established
from blackstart.rescue.wire.signal import condition_patch, merge_reports, reports_from_node, rfc3339

from .conftest import eventually

GROUP, VERSION = "rescue.blackstart.dev", "v1"
CONTROLLER_USER = "blackstart:rescue-controller"
ANNOTATIONS = (
    "rescue.blackstart.dev/cordoned-by",
    "rescue.blackstart.dev/reboot-requested",
    "rescue.blackstart.dev/replaces",
    "rescue.blackstart.dev/replaced-by-plan",
)
NOT_READY_LABEL = "node-not-ready.stage.kwok.x-k8s.io"

Match = Callable[[str, str, tuple[Any, ...]], bool]


@dataclass
class Gate:
    """Holds the first request that matches until :meth:`open`; records how it ended."""

    match: Match
    reached: threading.Event = field(default_factory=threading.Event)
    released: threading.Event = field(default_factory=threading.Event)
    failed: threading.Event = field(default_factory=threading.Event)
    errors: list[BaseException] = field(default_factory=list)

    def open(self) -> None:
        self.released.set()

    def wait_reached(self, timeout: float, what: str) -> None:
        if not self.reached.wait(timeout):
            pytest.fail(f"the controller never made {what} within {timeout:.0f} s")

    def wait_failed(self, timeout: float, what: str) -> None:
        if not self.failed.wait(timeout):
            pytest.fail(f"{what} did not fail within {timeout:.0f} s")


class GatedApi(KubeApi):
    """:class:`KubeApi` whose requests can be held at a :class:`Gate`."""

    gates: list[Gate]

    async def call(
        self,
        verb: str,
        fn: Callable[..., Any],
        *args: Any,
        priority: int = ACT,
        retry: bool = True,
        **kwargs: Any,
    ) -> Any:
        gate = next((g for g in self.gates if g.match(verb, fn.__name__, args)), None)
        if gate is None:
            return await super().call(verb, fn, *args, priority=priority, retry=retry, **kwargs)
        self.gates.remove(gate)  # one request per gate
        gate.reached.set()
        while not gate.released.is_set():
            await asyncio.sleep(0.02)
        try:
            return await super().call(verb, fn, *args, priority=priority, retry=retry, **kwargs)
        except BaseException as err:
            gate.errors.append(err)
            gate.failed.set()
            raise


class InProcessController:
    """The controller in a thread of the test process, kopf and all."""

    def __init__(self, cluster: ClusterState, config: ControllerConfig, retry_for: float) -> None:
        self.kubeconfig = cluster.identity_kubeconfig(CONTROLLER_USER)
        self.metrics = ControllerMetrics()
        self.api = GatedApi(
            api_client(self.kubeconfig, pool_size=16, timeout=30.0),
            self.metrics,
            qps=config.qps,
            burst=config.burst,
            retry_for=retry_for,
        )
        self.api.gates = []
        self.controller = Controller(config, self.api, self.metrics)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rescue-controller", daemon=True)

    def _run(self) -> None:
        registry = build_registry(self.controller, self.kubeconfig, None)
        asyncio.run(
            kopf.operator(
                registry=registry, standalone=True, clusterwide=True, stop_flag=self._stop
            )
        )

    def gate(self, match: Match) -> Gate:
        gate = Gate(match)
        self.api.gates.append(gate)
        return gate

    def start(self) -> InProcessController:
        self._thread.start()
        eventually(lambda: self.controller.ready.is_set(), 30, "the controller ready", 0.05)
        return self

    def stop(self, open_gates: bool = True) -> None:
        """Stop the operator; ``open_gates=False``: a held request dies with it, unsent."""
        if open_gates:
            for gate in self.api.gates:
                gate.open()
        self._stop.set()
        self._thread.join(timeout=30)

    def metric(self, name: str, **labels: str) -> float:
        total = 0.0
        for family in self.metrics.registry.collect():
            for sample in family.samples:
                if sample.name == name and set(labels.items()) <= set(sample.labels.items()):
                    total += sample.value
        return total


@contextmanager
def running_controller(
    cluster: ClusterState, retry_for: float = 1.0, **settings: Any
) -> Iterator[InProcessController]:
    """A controller with ``settings`` (:class:`ControllerConfig` fields), fast test timings."""
    defaults: dict[str, Any] = {"drain_retry_seconds": 0.5, "local_boot_seconds": 1.0}
    controller = InProcessController(
        cluster, ControllerConfig(**{**defaults, **settings}), retry_for
    )
    controller.start()
    try:
        yield controller
    finally:
        controller.stop()


# --- the cluster side ---------------------------------------------------------------------


def api_server_outage(local: LocalProvider, cluster: ClusterState) -> Callable[[], None]:
    """Stop the API server now; the returned function starts it and waits until it answers."""
    local.stop_component(cluster.name, "kube-apiserver")
    probe = client.VersionApi(api_client(cluster.kubeconfig, timeout=3.0))

    def back() -> None:
        local.start_component(cluster.name, "kube-apiserver")

        def answers() -> bool:
            try:
                probe.get_code(_request_timeout=3)
            except Exception:
                return False
            return True

        eventually(answers, 90, "the API server answering again", 0.5)

    return back


def reset_nodes(core: client.CoreV1Api, names: list[str]) -> None:
    """Back to the fleet as created: no Xid condition, GPU nodes schedulable, standbys cordoned."""
    for name in names:
        node = core.read_node(name)
        labels = node.metadata.labels or {}
        standby = labels.get("blackstart.dev/role") == "standby"
        patch: dict[str, Any] = {
            "metadata": {
                "annotations": {key: None for key in ANNOTATIONS},
                "labels": {NOT_READY_LABEL: None},
            },
            "spec": {"unschedulable": True if standby else None},
        }
        core.patch_node(name, patch)
        if reports_from_node(node):
            core.patch_node_status(
                name, {"status": {"conditions": [{"type": "GPUXidError", "$patch": "delete"}]}}
            )


def touched_nodes(core: client.CoreV1Api) -> list[str]:
    return [
        n.metadata.name
        for n in core.list_node().items
        if (
            n.spec.unschedulable
            and (n.metadata.labels or {}).get("blackstart.dev/role") != "standby"
        )
        or set(ANNOTATIONS) & set(n.metadata.annotations or {})
        or NOT_READY_LABEL in (n.metadata.labels or {})
        or reports_from_node(n)
    ]


def write_xid(core: client.CoreV1Api, node: str, xid: int, report_id: str | None = None) -> str:
    """Add one Xid report to ``node``'s GPUXidError condition, as the agent does; its id."""
    current = core.read_node(node)
    now = time.time()
    report_id = report_id or f"{current.status.node_info.boot_id}:{time.monotonic_ns()}"
    report = {
        "id": report_id,
        "xid": xid,
        "pci": "0000:03:00",
        "uuid": None,
        "count": 1,
        "firstSeen": rfc3339(now),
        "lastSeen": rfc3339(now),
        "writtenAt": rfc3339(now),
    }
    reports = merge_reports(reports_from_node(current), [report])
    core.patch_node_status(node, condition_patch(reports, now))
    return report_id


def policy(custom: client.CustomObjectsApi, name: str, *rules: dict[str, Any]) -> None:
    custom.create_cluster_custom_object(
        GROUP,
        VERSION,
        "rescuepolicies",
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "RescuePolicy",
            "metadata": {"name": name},
            "spec": {"rules": list(rules)},
        },
    )


def plans(custom: client.CustomObjectsApi, node: str) -> list[dict[str, Any]]:
    items = [
        p
        for p in custom.list_cluster_custom_object(GROUP, VERSION, "rescueplans")["items"]
        if p["spec"]["nodeName"] == node
    ]
    return sorted(items, key=lambda p: p["metadata"]["creationTimestamp"])


def ended_plan(custom: client.CustomObjectsApi, node: str, timeout: float = 30) -> dict[str, Any]:
    """The node's latest plan, once it has ended."""

    def ended() -> dict[str, Any] | None:
        found = plans(custom, node)
        if found and found[-1].get("status", {}).get("phase") in ("Succeeded", "Failed", "Refused"):
            return found[-1]
        return None

    plan = eventually(ended, timeout, f"the RescuePlan of {node} to end", interval=0.2)
    assert isinstance(plan, dict)
    return plan


def phases(plan: dict[str, Any]) -> list[str]:
    return [t["phase"] for t in plan["status"]["transitions"]]


def node_events(core: client.CoreV1Api, node: str, reason: str) -> list[client.CoreV1Event]:
    selector = f"involvedObject.kind=Node,involvedObject.name={node},reason={reason}"
    return list(core.list_namespaced_event("default", field_selector=selector).items)


# --- fixtures and helpers the hardening modules share ---------------------------------------


@pytest.fixture(scope="module")
def admin(cluster: ClusterState) -> client.ApiClient:
    api = api_client(cluster.kubeconfig)
    documents = deploy_documents(["crds.yaml", "controller-rbac.yaml"])
    apply_documents(api, documents, progress=lambda _: None)
    crds = [d["metadata"]["name"] for d in documents if d["kind"] == "CustomResourceDefinition"]
    wait_established(api, crds)
    return api


@pytest.fixture(scope="module")
def custom(admin: client.ApiClient) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(admin)


@pytest.fixture(autouse=True)
def clean(custom: client.CustomObjectsApi, core: client.CoreV1Api) -> Iterator[None]:
    """Every test starts and ends with no plans, no policies, no Xid signal, no cordons."""
    _clean(custom, core)
    yield
    _clean(custom, core)


def _clean(custom: client.CustomObjectsApi, core: client.CoreV1Api) -> None:
    for plan in custom.list_cluster_custom_object(GROUP, VERSION, "rescueplans")["items"]:
        name = plan["metadata"]["name"]
        if plan["metadata"].get("finalizers"):  # no controller runs between tests
            custom.patch_cluster_custom_object(
                GROUP, VERSION, "rescueplans", name, {"metadata": {"finalizers": None}}
            )
    for plural in ("rescueplans", "rescuepolicies"):
        custom.delete_collection_cluster_custom_object(GROUP, VERSION, plural)
    reset_nodes(core, touched_nodes(core))


def cordoned(core: client.CoreV1Api, node: str) -> bool:
    return bool(core.read_node(node).spec.unschedulable)


def annotations(core: client.CoreV1Api, node: str) -> dict[str, str]:
    return dict(core.read_node(node).metadata.annotations or {})


def reboot_rule(waittime: str, *, uncordon: bool = True) -> dict[str, Any]:
    attribute = {"waittime": waittime}
    if uncordon:
        attribute["unCordon"] = "true"
    return {
        "priority": 10,
        "errorCode": ["62"],
        "actions": [{"name": "cordon"}, {"name": "reboot", "attribute": attribute}],
    }
