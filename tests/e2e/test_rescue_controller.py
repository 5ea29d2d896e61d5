"""Given the local fleet and the GPU self-heal controller running as a process with its own
least-privilege identity, Xid signals on GPU nodes become RescuePlans that cordon, drain,
reboot, swap in warm standbys and uncordon, as the RescuePolicies say; the storm guard
holds the floor; a killed controller resumes without repeating; the decision API orders
plans instead of the policies; dry-run changes nothing.

Every scenario starts where a real one does: an Xid line in a GPU node's kernel log,
read by the real node agent (`blackstart rescue agent`, its own identity) that writes
the GPUXidError condition the controller acts on. Only the tests about the controller
alone (its restart, its TTL) write the condition directly, as the agent would, with the
agent's identity; their docstrings say so.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from prometheus_client.parser import text_string_to_metric_families

from blackstart.actions.xid import xid_body
from blackstart.clusters.local.kwok_nodes import node_is_ready
from blackstart.clusters.local.provider import LocalProvider
from blackstart.clusters.net import free_port
from blackstart.clusters.state import ClusterState
from blackstart.health import parse_iso
from blackstart.kube import api_client
from blackstart.rescue.install import deploy_documents, wait_established
from blackstart.rescue.wire.signal import condition_patch, merge_reports, reports_from_node, rfc3339

from .conftest import eventually, repo_root

pytestmark = pytest.mark.e2e

GROUP, VERSION = "rescue.blackstart.dev", "v1"
CONTROLLER_USER = "blackstart:rescue-controller"
AGENT_USER = "blackstart:rescue-agent"
ANNOTATIONS = (
    "rescue.blackstart.dev/cordoned-by",
    "rescue.blackstart.dev/reboot-requested",
    "rescue.blackstart.dev/replaces",
    "rescue.blackstart.dev/replaced-by-plan",
)
NOT_READY_LABEL = "node-not-ready.stage.kwok.x-k8s.io"
XID_62_LINE = "[ 1843.308145] NVRM: Xid (PCI:0000:03:00): 62, Channel 00000001"
# how long a controller or agent process may take to be ready (a bound, generous for a
# machine shared with other clusters; they are usually ready in a second or two)
READY_WITHIN_S = 90.0

# a node label the drain test opens nodes to its trainers with
TRAINERS_LABEL = "blackstart.test/trainers"


# --- the controller as a process ------------------------------------------------------------


@dataclass
class Controller:
    """``blackstart rescue controller`` as a subprocess, with its metrics endpoint."""

    process: subprocess.Popen[bytes]
    log: Path
    port: int
    args: list[str] = field(default_factory=list)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def metric(self, name: str, **labels: str) -> float:
        """The sum of the samples of ``name`` whose labels include ``labels``."""
        url = f"http://127.0.0.1:{self.port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
        return sum(
            s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
            if s.name == name and set(labels.items()) <= set(s.labels.items())
        )

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


class Controllers:
    """Starts controllers for a test; stops them afterwards."""

    def __init__(self, cluster: ClusterState, folder: Path) -> None:
        self.cluster = cluster
        self.folder = folder
        self.started: list[Controller] = []

    def start(self, *args: str) -> Controller:
        port = free_port()
        log = self.folder / f"controller-{len(self.started)}.log"
        argv = [
            sys.executable, "-m", "blackstart.cli", "rescue", "controller",
            "--kubeconfig", self.cluster.identity_kubeconfig(CONTROLLER_USER),
            "--metrics-port", str(port),
            "--drain-retry-seconds", "0.5",
            "--local-boot-seconds", "1",
            "--leader-lease-seconds", "6",  # a killed controller's Lease is taken over in ~6 s
            *args,
        ]  # fmt: skip
        with log.open("ab") as stream:
            process = subprocess.Popen(
                argv, stdout=subprocess.DEVNULL, stderr=stream, cwd=repo_root()
            )
        controller = Controller(process, log, port, list(args))
        self.started.append(controller)
        deadline = time.monotonic() + READY_WITHIN_S
        while time.monotonic() < deadline:
            if process.poll() is not None:
                pytest.fail(
                    f"the controller exited with {process.returncode}:\n{controller.text()}"
                )
            try:
                if controller.metric("blackstart_rescue_controller_ready") == 1:
                    return controller
            except (urllib.error.URLError, ConnectionError):
                pass
            time.sleep(0.1)
        pytest.fail(
            f"the controller was not ready within {READY_WITHIN_S:.0f} s:\n{controller.text()}"
        )

    def stop_all(self) -> None:
        for controller in self.started:
            controller.stop()


# --- the cluster side ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def admin(cluster: ClusterState) -> client.ApiClient:
    """The CRDs and RBAC installed as a user installs them: `blackstart rescue install`."""
    core = client.CoreV1Api(api_client(cluster.kubeconfig))

    def rescue_namespace_not_terminating() -> bool:
        try:
            return core.read_namespace("blackstart-rescue").status.phase != "Terminating"
        except ApiException as err:
            return err.status == 404

    # another module's clean-up may still be deleting it: install into a namespace that stays
    eventually(rescue_namespace_not_terminating, 180, "namespace blackstart-rescue deleted")
    done = subprocess.run(
        [sys.executable, "-m", "blackstart.cli", "rescue", "install", "--kubeconfig",
         cluster.kubeconfig],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    documents = deploy_documents()
    expected = [f"{d['kind']}/{d['metadata']['name']}" for d in documents]
    assert "ClusterRole/blackstart-rescue-controller" in expected
    applied = [line.removeprefix("applied ") for line in done.stderr.splitlines()]
    assert [line for line in applied if "/" in line] == expected, done.stderr
    assert done.stdout.strip() == f"installed {len(expected)} objects"
    api = api_client(cluster.kubeconfig)
    crds = [d["metadata"]["name"] for d in documents if d["kind"] == "CustomResourceDefinition"]
    wait_established(api, crds, timeout=1.0)  # already: the command waits for them
    return api


@pytest.fixture(scope="module")
def custom(admin: client.ApiClient) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(admin)


@pytest.fixture(scope="module")
def agent_core(cluster: ClusterState) -> client.CoreV1Api:
    """The agent's identity: what writes the Xid signal."""
    return client.CoreV1Api(api_client(cluster.identity_kubeconfig(AGENT_USER)))


@pytest.fixture(scope="module", autouse=True)
def fresh_fleet(admin: client.ApiClient, core: client.CoreV1Api) -> None:
    """No Xid signal left from other test modules: every controller here starts clean."""
    reset_nodes(core, [n.metadata.name for n in core.list_node().items])


@pytest.fixture
def controllers(
    cluster: ClusterState,
    custom: client.CustomObjectsApi,
    core: client.CoreV1Api,
    tmp_path: Path,
) -> Iterator[Controllers]:
    started = Controllers(cluster, tmp_path)
    yield started
    started.stop_all()
    for plural in ("rescueplans", "rescuepolicies", "warmstandbypolicies"):
        custom.delete_collection_cluster_custom_object(GROUP, VERSION, plural)
    touched = [
        n.metadata.name
        for n in core.list_node().items
        if n.spec.unschedulable
        or set(ANNOTATIONS) & set(n.metadata.annotations or {})
        or NOT_READY_LABEL in (n.metadata.labels or {})
        or reports_from_node(n)
        or (n.metadata.labels or {}).get("blackstart.dev/standby") == "in-use"
    ]
    reset_nodes(core, touched)


@dataclass
class NodeAgent:
    """The real Xid agent of the session cluster, reading every GPU node's kernel log."""

    process: subprocess.Popen[bytes]
    log: Path
    local: LocalProvider
    cluster: ClusterState

    def log_xid(self, node: str, xid: int, pci: str = "0000:03:00") -> None:
        """Append one Xid line to ``node``'s kernel log, as the NVIDIA driver logs it."""
        line = f"[ 1843.308145] {xid_body(xid, pci, '', 4242)}"
        with self.local.kernel_log(self.cluster.name, node).open("a") as kernel_log:
            kernel_log.write(line + "\n")

    def text(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture
def agent(cluster: ClusterState, local: LocalProvider, tmp_path: Path) -> Iterator[NodeAgent]:
    """`blackstart rescue agent --cluster`: from the end of the logs, with a fresh state."""
    log = tmp_path / "agent.log"
    argv = [
        sys.executable, "-m", "blackstart.cli", "rescue", "agent", "--cluster", cluster.name,
        "--from-end", "--state-dir", str(tmp_path / "agent-state"), "--metrics-port", "0",
        "--min-write-interval", "0",  # the controller's behaviour, not the agent's pacing
    ]  # fmt: skip
    with log.open("ab") as stream:
        process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=stream, cwd=repo_root())
    started = NodeAgent(process, log, local, cluster)
    try:
        eventually(
            lambda: "; ready" in started.text() or process.poll() is not None,
            READY_WITHIN_S,
            "the agent ready",
        )
        assert process.poll() is None, f"the agent exited:\n{started.text()}"
        yield started
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


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
        if standby:
            patch["metadata"]["labels"].update(
                {"blackstart.dev/standby": "true", "blackstart.dev/pool": "standby", "app": None}
            )
        core.patch_node(name, patch)
        if reports_from_node(node):
            core.patch_node_status(
                name, {"status": {"conditions": [{"type": "GPUXidError", "$patch": "delete"}]}}
            )


def write_xid(core: client.CoreV1Api, node: str, xid: int, report_id: str | None = None) -> str:
    """Add one Xid report to ``node``'s GPUXidError condition, as the agent does; its id.

    For the tests about the controller alone; pass ``agent_core``, the agent's identity.
    """
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


def policy(custom: client.CustomObjectsApi, name: str, *rules: dict[str, Any]) -> dict[str, Any]:
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "RescuePolicy",
        "metadata": {"name": name},
        "spec": {"rules": list(rules)},
    }
    result: dict[str, Any] = custom.create_cluster_custom_object(
        GROUP, VERSION, "rescuepolicies", body
    )
    return result


def plans(custom: client.CustomObjectsApi, node: str) -> list[dict[str, Any]]:
    items = custom.list_cluster_custom_object(
        GROUP, VERSION, "rescueplans", label_selector=f"rescue.blackstart.dev/node={node}"
    )["items"]
    return sorted(items, key=lambda p: p["metadata"]["creationTimestamp"])


def ended_plan(custom: client.CustomObjectsApi, node: str, timeout: float = 30) -> dict[str, Any]:
    """The node's one plan, once it has ended."""

    def ended() -> dict[str, Any] | None:
        found = plans(custom, node)
        if found and found[-1].get("status", {}).get("phase") in ("Succeeded", "Failed"):
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


def cordoned(core: client.CoreV1Api, node: str) -> bool:
    return bool(core.read_node(node).spec.unschedulable)


CORDON_ON_62 = {"priority": 10, "errorCode": ["62"], "actions": [{"name": "cordon"}]}


# --- the vendor's demo, end to end ----------------------------------------------------------


def test_vendor_demo_a_xid_62_line_gives_the_xid_event_and_a_cordoned_node(
    cluster: ClusterState,
    local: LocalProvider,
    core: client.CoreV1Api,
    custom: client.CustomObjectsApi,
    controllers: Controllers,
    tmp_path: Path,
) -> None:
    node = "gpu-24"
    policy(custom, "demo", CORDON_ON_62)
    controller = controllers.start()
    agent_log = tmp_path / "agent.log"
    agent_port = free_port()
    argv = [
        sys.executable, "-m", "blackstart.cli", "rescue", "agent", "--cluster", cluster.name,
        "--from-end", "--state-dir", str(tmp_path / "agent-state"),
        "--metrics-port", str(agent_port), "--min-write-interval", "0",
    ]  # fmt: skip
    with agent_log.open("ab") as stream:
        agent = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=stream, cwd=repo_root())
    try:
        eventually(lambda: "; ready" in agent_log.read_text(), READY_WITHIN_S, "the agent ready")
        with local.kernel_log(cluster.name, node).open("a") as log:
            log.write(XID_62_LINE + "\n")
        written = time.monotonic()
        eventually(lambda: cordoned(core, node), 20, f"{node} SchedulingDisabled", interval=0.02)
        latency = time.monotonic() - written
        [event] = eventually(  # type: ignore[misc]
            lambda: node_events(core, node, "XidError"), 20, "the XidError event"
        )
    finally:
        agent.send_signal(signal.SIGTERM)
        agent.wait(timeout=20)
    assert event.type == "Warning"
    assert event.message.startswith("GPU Xid error: pci 0000:03:00, xid 62, log: Channel 00000001")
    plan = ended_plan(custom, node)
    assert plan["spec"]["xids"] == [62]
    assert plan["spec"]["rule"] == {"policy": "demo", "index": 0, "priority": 10}
    assert phases(plan) == ["Pending", "Cordoned", "Succeeded"]
    assert plan["status"]["nodeWasCordoned"] is False
    assert controller.metric("blackstart_rescue_controller_xid_to_cordon_seconds_count") == 1
    print(f"\nFIGURE vendor demo: Xid line -> node cordoned in {latency:.3f} s (agent+controller)")


# --- each action ----------------------------------------------------------------------------


def test_drain_evicts_through_the_eviction_api_retrying_a_pdb_and_skipping_daemonsets(
    core: client.CoreV1Api,
    apps: client.AppsV1Api,
    admin: client.ApiClient,
    custom: client.CustomObjectsApi,
    controllers: Controllers,
    namespace: str,
    agent: NodeAgent,
    request: pytest.FixtureRequest,
) -> None:
    node, spare = "gpu-25", "gpu-26"
    labels = {"app": "trainer"}
    # both replicas on the node to drain: the spare opens to them only once the budget has
    # refused an eviction (KWOK runs a replacement pod at once, which would reopen it).
    # Opened by a label the spare never had, not closed by a cordon: a scheduler whose
    # node cache lags (it re-lists after the outage tests before this one) placed a
    # trainer on the cordoned spare in CI.
    open_to = {TRAINERS_LABEL: namespace}
    core.patch_node(node, {"metadata": {"labels": open_to}})
    request.addfinalizer(
        lambda: [
            core.patch_node(n, {"metadata": {"labels": {TRAINERS_LABEL: None}}})
            for n in (node, spare)
        ]
    )
    affinity = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {
                        "matchExpressions": [
                            {
                                "key": "kubernetes.io/hostname",
                                "operator": "In",
                                "values": [node, spare],
                            },
                            {"key": TRAINERS_LABEL, "operator": "In", "values": [namespace]},
                        ]
                    }
                ]
            }
        }
    }
    container = {"name": "c", "image": "registry.invalid/trainer:1"}
    apps.create_namespaced_deployment(
        namespace,
        {
            "metadata": {"name": "trainer"},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {"affinity": affinity, "containers": [container]},
                },
            },
        },
    )
    apps.create_namespaced_daemon_set(
        namespace,
        {
            "metadata": {"name": "gpu-exporter"},
            "spec": {
                "selector": {"matchLabels": {"app": "exporter"}},
                "template": {
                    "metadata": {"labels": {"app": "exporter"}},
                    "spec": {
                        "nodeSelector": {"kubernetes.io/hostname": node},
                        "containers": [container],
                    },
                },
            },
        },
    )
    core.create_namespaced_pod(
        namespace,
        {
            "metadata": {"name": "scratch"},
            "spec": {
                "nodeName": node,
                "containers": [container],
                "volumes": [{"name": "tmp", "emptyDir": {}}],
            },
        },
    )
    client.PolicyV1Api(admin).create_namespaced_pod_disruption_budget(
        namespace,
        {
            "metadata": {"name": "trainer"},
            "spec": {"minAvailable": 1, "selector": {"matchLabels": labels}},
        },
    )

    def pods_on(where: str, **labels: str) -> list[client.V1Pod]:
        selector = ",".join(f"{k}={v}" for k, v in labels.items()) or None
        return [
            p
            for p in core.list_namespaced_pod(namespace, label_selector=selector).items
            if p.spec.node_name == where
            and p.metadata.deletion_timestamp is None
            and p.status.phase == "Running"
        ]

    eventually(lambda: len(pods_on(node, app="trainer")) == 2, 60, "2 trainers Running on the node")
    eventually(lambda: len(pods_on(node)) == 4, 60, "trainers, exporter and scratch Running")
    eventually(
        lambda: (
            client.PolicyV1Api(admin)
            .read_namespaced_pod_disruption_budget("trainer", namespace)
            .status.disruptions_allowed
            == 1
        ),
        30,
        "the PodDisruptionBudget to allow one disruption",
    )

    policy(
        custom,
        "drain-62",
        {
            "priority": 10,
            "errorCode": ["62"],
            "actions": [
                {"name": "cordon"},
                # the scratch pod is bare and has an emptyDir: evicted only when told, as
                # kubectl drain --force --delete-emptydir-data
                {
                    "name": "drain",
                    "attribute": {"waittime": "60s", "force": "true", "deleteEmptyDirData": "true"},
                },
            ],
        },
    )
    controller = controllers.start()
    agent.log_xid(node, 62)

    def refused_by_the_budget() -> float:
        return controller.metric(
            "blackstart_rescue_controller_api_requests_total", verb="create", code="429"
        )

    def phase() -> str:
        found = plans(custom, node)
        return str(found[0].get("status", {}).get("phase", "")) if found else "(no plan)"

    # two steps, so that a failure says which did not happen: the plan reaching its
    # drain, or the budget refusing an eviction in it (retried every 0.5 s)
    eventually(lambda: phase() == "Draining", 60, "the plan draining")
    eventually(lambda: refused_by_the_budget() >= 2, 30, "the budget refusing evictions (429)")
    assert phase() == "Draining"
    core.patch_node(spare, {"metadata": {"labels": open_to}})  # the replacement can run now
    plan = ended_plan(custom, node, timeout=60)

    assert plan["status"]["phase"] == "Succeeded", plan["status"]
    assert phases(plan) == ["Pending", "Cordoned", "Draining", "Succeeded"]
    assert plan["status"]["evictionRetries"] >= 2  # retried after each 429
    assert plan["status"]["evictedPods"] == 3  # two trainers and the unmanaged scratch pod
    assert cordoned(core, node)
    assert len(pods_on(spare, app="trainer")) == 2
    assert [p.metadata.name for p in pods_on(node)] == [
        pods_on(node, app="exporter")[0].metadata.name
    ]
    [warning] = node_events(core, node, "EvictingUnprotectedPod")
    assert f"{namespace}/scratch" in warning.message and "no controller" in warning.message


def test_reboot_through_the_local_driver_goes_not_ready_then_ready_and_uncordons(
    core: client.CoreV1Api,
    custom: client.CustomObjectsApi,
    controllers: Controllers,
    agent: NodeAgent,
) -> None:
    node = "gpu-27"
    boot_before = core.read_node(node).status.node_info.boot_id
    policy(
        custom,
        "reboot-62",
        {
            "priority": 10,
            "errorCode": ["62"],
            "actions": [
                {"name": "cordon"},
                {"name": "reboot", "attribute": {"waittime": "60s", "unCordon": "true"}},
            ],
        },
    )
    controller = controllers.start("--reboot-driver", "local")
    agent.log_xid(node, 62)
    eventually(
        lambda: not node_is_ready(core.read_node(node)), 30, f"{node} NotReady", interval=0.1
    )
    plan = ended_plan(custom, node, timeout=60)
    assert plan["status"]["phase"] == "Succeeded", plan["status"]
    assert phases(plan) == [
        "Pending", "Cordoned", "Rebooting", "WaitingReady", "Uncordoned", "Succeeded",
    ]  # fmt: skip
    after = core.read_node(node)
    assert node_is_ready(after)
    assert after.status.node_info.boot_id != boot_before
    assert plan["status"]["bootIdBeforeReboot"] == boot_before
    assert not after.spec.unschedulable
    assert NOT_READY_LABEL not in (after.metadata.labels or {})
    assert controller.metric("blackstart_rescue_controller_reboots_total", driver="local") == 1


def test_enable_warm_standby_swaps_a_standby_in_and_gpu_capacity_is_back(
    core: client.CoreV1Api,
    custom: client.CustomObjectsApi,
    controllers: Controllers,
    agent: NodeAgent,
) -> None:
    node = "gpu-28"

    def schedulable_gpus() -> int:
        return sum(
            int((n.status.allocatable or {}).get("nvidia.com/gpu", "0"))
            for n in core.list_node().items
            if not n.spec.unschedulable and node_is_ready(n)
        )

    before = schedulable_gpus()
    custom.create_cluster_custom_object(
        GROUP,
        VERSION,
        "warmstandbypolicies",
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "WarmStandbyPolicy",
            "metadata": {"name": "h100"},
            "spec": {
                "matches": [
                    {
                        "originNode": {
                            "labels": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
                        },
                        "targetNode": {"labels": {"blackstart.dev/pool": "standby"}},
                    }
                ]
            },
        },
    )
    policy(
        custom,
        "swap-79",
        {
            "priority": 10,
            "errorCode": ["79"],
            "nodeSelector": {"operator": "all", "labels": {"blackstart.dev/pool": "gpu"}},
            "actions": [{"name": "cordon"}, {"name": "enableWarmStandby"}],
        },
    )
    controllers.start()
    agent.log_xid(node, 79)
    plan = ended_plan(custom, node)
    assert plan["status"]["phase"] == "Succeeded", plan["status"]
    assert phases(plan) == ["Pending", "Cordoned", "Replaced", "Succeeded"]
    standby = plan["status"]["standbyNode"]
    assert re.fullmatch(r"standby-\d", standby)
    swapped = core.read_node(standby)
    assert not swapped.spec.unschedulable
    assert swapped.metadata.labels["blackstart.dev/pool"] == "gpu"  # the matched label
    assert swapped.metadata.labels["blackstart.dev/standby"] == "in-use"
    assert swapped.metadata.annotations["rescue.blackstart.dev/replaces"] == node
    assert cordoned(core, node)
    assert schedulable_gpus() == before  # 8 GPUs out with the node, 8 back with the standby


def test_uncordon_action_puts_the_node_back_after_the_drain(
    core: client.CoreV1Api,
    custom: client.CustomObjectsApi,
    controllers: Controllers,
    agent: NodeAgent,
) -> None:
    node = "gpu-29"
    policy(
        custom,
        "app-error",
        {
            "priority": 10,
            "errorCode": ["13"],
            "actions": [{"name": "drain", "attribute": {"waittime": "30s"}}, {"name": "unCordon"}],
        },
    )
    controllers.start()
    agent.log_xid(node, 13)
    plan = ended_plan(custom, node)
    assert phases(plan) == ["Pending", "Cordoned", "Draining", "Uncordoned", "Succeeded"]
    assert not cordoned(core, node)
    assert "rescue.blackstart.dev/cordoned-by" not in (
        core.read_node(node).metadata.annotations or {}
    )


# --- choosing the rule ----------------------------------------------------------------------


def test_highest_priority_wins_and_any_all_selectors_match_as_written(
    core: client.CoreV1Api,
    custom: client.CustomObjectsApi,
    controllers: Controllers,
    agent: NodeAgent,
) -> None:
    policy(
        custom,
        "fleet",
        {
            "priority": 5,
            "errorCode": ["79"],
            "nodeSelector": {
                "operator": "all",
                "labels": {"blackstart.dev/pool": "gpu", "topology.kubernetes.io/zone": "zone-a"},
            },
            "actions": [{"name": "cordon"}],
        },
        {
            "priority": 30,  # highest, but "all" needs a hostname no node has
            "errorCode": ["79"],
            "nodeSelector": {
                "operator": "all",
                "labels": {"blackstart.dev/pool": "gpu", "kubernetes.io/hostname": "gpu-99"},
            },
            "actions": [{"name": "cordon"}, {"name": "reboot"}],
        },
    )
    policy(
        custom,
        "hot-node",
        {
            "priority": 20,  # "any": the hostname alone is enough
            "errorCode": ["79"],
            "nodeSelector": {
                "operator": "any",
                "labels": {"blackstart.dev/pool": "nowhere", "kubernetes.io/hostname": "gpu-30"},
            },
            "actions": [{"name": "cordon"}, {"name": "drain", "attribute": {"waittime": "30s"}}],
        },
    )
    controllers.start()
    agent.log_xid("gpu-30", 79)
    agent.log_xid("gpu-31", 79)
    hot = ended_plan(custom, "gpu-30")
    other = ended_plan(custom, "gpu-31")
    assert hot["spec"]["rule"] == {"policy": "hot-node", "index": 0, "priority": 20}
    assert [a["name"] for a in hot["spec"]["actions"]] == ["cordon", "drain"]
    assert other["spec"]["rule"] == {"policy": "fleet", "index": 0, "priority": 5}
    assert [a["name"] for a in other["spec"]["actions"]] == ["cordon"]


def test_the_global_policy_and_the_built_in_default_cordon(
    core: client.CoreV1Api,
    custom: client.CustomObjectsApi,
    controllers: Controllers,
    agent: NodeAgent,
) -> None:
    first = controllers.start()
    agent.log_xid("gpu-32", 45)  # no RescuePolicy at all: the built-in default
    default = ended_plan(custom, "gpu-32")
    assert "rule" not in default["spec"]
    assert [a["name"] for a in default["spec"]["actions"]] == ["cordon"]
    assert cordoned(core, "gpu-32")
    first.stop()

    policy(
        custom,
        "global",
        {
            "priority": 0,
            "actions": [{"name": "cordon"}, {"name": "drain", "attribute": {"waittime": "30s"}}],
        },
        CORDON_ON_62,
    )
    controllers.start()
    agent.log_xid("gpu-33", 31)
    agent.log_xid("gpu-34", 62)
    global_plan = ended_plan(custom, "gpu-33")
    specific = ended_plan(custom, "gpu-34")
    assert global_plan["spec"]["rule"] == {"policy": "global", "index": 0, "priority": 0}
    assert [a["name"] for a in global_plan["spec"]["actions"]] == ["cordon", "drain"]
    assert specific["spec"]["rule"] == {"policy": "global", "index": 1, "priority": 10}


# --- the storm guard ------------------------------------------------------------------------


def test_storm_guard_holds_the_floor_when_half_the_gpu_nodes_report_xid_48(
    core: client.CoreV1Api,
    custom: client.CustomObjectsApi,
    controllers: Controllers,
    agent: NodeAgent,
) -> None:
    storm = [f"gpu-{i}" for i in range(24)]  # half of the 48 GPU nodes
    policy(custom, "ecc", {"priority": 10, "errorCode": ["48"], "actions": [{"name": "cordon"}]})
    controller = controllers.start(
        "--max-unavailable-share", "0.25", "--max-concurrent-plans", "100"
    )
    # the whole storm at once, each GPU node's driver logging its Xid 48
    threads = [threading.Thread(target=agent.log_xid, args=(n, 48)) for n in storm]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    def out() -> list[str]:
        return [n for n in storm if cordoned(core, n)]

    def settled() -> bool:
        """12 refusals, and the 12 admitted plans ended: nothing is left to act."""
        refusals = controller.metric("blackstart_rescue_controller_storm_guard_refusals_total")
        made = [p for n in storm for p in plans(custom, n)]
        ended = [p for p in made if p.get("status", {}).get("phase") == "Succeeded"]
        return refusals == 12 and len(made) == len(ended) == 12

    eventually(settled, 90, "12 refusals and 12 plans Succeeded")
    assert len(out()) == 12  # 25% of 48
    schedulable = [
        n for n in core.list_node(label_selector="blackstart.dev/pool=gpu").items
        if not n.spec.unschedulable
    ]  # fmt: skip
    assert len(schedulable) == 36  # the floor
    refused = [n for n in storm if node_events(core, n, "RescueRefused")]
    assert sorted(refused) == sorted(set(storm) - set(out()))
    assert (
        "12 of the 48 matching nodes" in node_events(core, refused[0], "RescueRefused")[0].message
    )

    # a person puts one node back: the oldest refused incident gets the place
    back = out()[0]
    core.patch_node(back, {"spec": {"unschedulable": None}})
    eventually(lambda: len(out()) == 12 and back not in out(), 20, "one refused node admitted")
    assert len(out()) == 12


# --- restarts -------------------------------------------------------------------------------


def test_a_controller_killed_mid_drain_resumes_without_repeating_a_step_or_the_reboot(
    core: client.CoreV1Api,
    apps: client.AppsV1Api,
    admin: client.ApiClient,
    custom: client.CustomObjectsApi,
    controllers: Controllers,
    namespace: str,
    agent_core: client.CoreV1Api,
) -> None:
    """About the controller alone (killed twice, it resumes its plan): the Xid condition is
    written directly, as the agent writes it, with the agent's identity."""
    node = "gpu-35"
    labels = {"app": "pinned"}
    apps.create_namespaced_deployment(
        namespace,
        {
            "metadata": {"name": "pinned"},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "nodeSelector": {"kubernetes.io/hostname": node},
                        "containers": [{"name": "c", "image": "registry.invalid/x:1"}],
                    },
                },
            },
        },
    )
    policy_api = client.PolicyV1Api(admin)
    policy_api.create_namespaced_pod_disruption_budget(
        namespace,
        {
            "metadata": {"name": "all"},
            "spec": {"minAvailable": 2, "selector": {"matchLabels": labels}},
        },
    )
    eventually(
        lambda: (
            (
                policy_api.read_namespaced_pod_disruption_budget(
                    "all", namespace
                ).status.current_healthy
                or 0
            )
            == 2
        ),
        60,
        "2 pinned pods healthy",
    )
    boot_before = core.read_node(node).status.node_info.boot_id
    policy(
        custom,
        "full",
        {
            "priority": 10,
            "errorCode": ["62"],
            "actions": [
                {"name": "cordon"},
                {"name": "drain", "attribute": {"waittime": "2min"}},
                {"name": "reboot", "attribute": {"waittime": "60s", "unCordon": "true"}},
            ],
        },
    )
    first = controllers.start()
    write_xid(agent_core, node, 62)

    def status() -> dict[str, Any]:
        found = plans(custom, node)
        return found[0].get("status", {}) if found else {}

    eventually(lambda: status().get("phase") == "Draining", 30, "the plan Draining")
    eventually(  # the budget refuses every eviction: the drain is stuck
        lambda: (
            status().get("evictionRetries", 0) >= 1
            or first.metric(
                "blackstart_rescue_controller_api_requests_total", verb="create", code="429"
            )
            >= 1
        ),
        30,
        "an eviction refused by the budget",
    )
    drain_started = status()["drainStartedAt"]
    first.stop(signal.SIGKILL)

    policy_api.delete_namespaced_pod_disruption_budget("all", namespace)
    second = controllers.start()
    assert "(1 resumed)" in second.text()
    eventually(lambda: status().get("phase") in ("Rebooting", "WaitingReady"), 30, "rebooting")
    eventually(lambda: node_events(core, node, "Rebooting"), 30, "the Rebooting event")
    second.stop(signal.SIGKILL)  # and again, mid-reboot
    third = controllers.start()
    assert "(1 resumed)" in third.text()

    plan = ended_plan(custom, node, timeout=60)
    assert plan["status"]["phase"] == "Succeeded", plan["status"]
    assert phases(plan) == [
        "Pending", "Cordoned", "Draining", "Rebooting", "WaitingReady", "Uncordoned", "Succeeded",
    ]  # fmt: skip
    assert plan["status"]["drainStartedAt"] == drain_started
    assert plan["status"]["evictedPods"] == 2
    assert third.metric("blackstart_rescue_controller_reboots_total") == 0  # not ordered again
    assert core.read_node(node).status.node_info.boot_id != boot_before
    assert len(node_events(core, node, "Rebooting")) == 1


# --- the decision API -----------------------------------------------------------------------


def test_decision_api_orders_plans_and_answers_each_error_as_the_vendor(
    core: client.CoreV1Api,
    custom: client.CustomObjectsApi,
    controllers: Controllers,
    tmp_path: Path,
    agent: NodeAgent,
) -> None:
    token = "e2e-token-7f3a"
    (tmp_path / "token").write_text(token + "\n")
    port = free_port()
    policy(custom, "ignored", CORDON_ON_62)
    controller = controllers.start(
        "--decision-api", f"127.0.0.1:{port}", "--token-file", str(tmp_path / "token"),
        "--max-unavailable-share", "0.02",
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/v1/rescue-actions"

    def post(body: object, auth: str | None = token) -> tuple[int, dict[str, Any], dict[str, str]]:
        headers = {"Content-Type": "application/json"}
        if auth:
            headers["Authorization"] = f"Bearer {auth}"
        request = urllib.request.Request(url, json.dumps(body).encode(), headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, json.loads(response.read()), dict(response.headers)
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read()), dict(err.headers)

    order = {
        "nodeName": "gpu-36",
        "xid": 62,
        "escalateTime": "",
        "actions": [{"name": "cordon", "waittime": ""}, {"name": "drain", "waittime": "10min"}],
    }
    # the policy is not acted on: plans come from orders only
    agent.log_xid("gpu-38", 62)
    status, body, _ = post({**order, "nodeName": "gpu-99"})
    assert (status, body) == (
        400,
        {
            "code": "Error",
            "message": "Parameter error:nodeName 'gpu-99' is not a node of this cluster",
        },
    )
    status, body, _ = post({**order, "actions": [{"name": "drain", "waittime": "soon"}]})
    assert status == 400 and body["message"].startswith(
        "Parameter error:actions[0].waittime: waittime 'soon' is not a duration"
    )
    status, body, _ = post({**order, "actions": [{"name": "powerCycle", "waittime": ""}]})
    assert status == 400 and body["message"].startswith(
        "Parameter error:actions[0].name: unknown action 'powerCycle'"
    )
    status, body, _ = post({**order, "actions": [{"name": "enableWarmStandby", "waittime": ""}]})
    assert (status, body) == (
        422,
        {
            "code": "Error",
            "message": "Failures to meet preconditions enableWarmStandby (it needs cordon, "
            "drain or reboot among the same actions)",
        },
    )
    status, body, _ = post(order, auth="wrong")
    assert (status, body) == (401, {"code": "Error", "message": "Unauthorized"})

    status, body, headers = post(order)
    assert (status, body) == (200, {"code": "Success", "message": "Success"})
    location = headers["Location"]
    eventually(lambda: cordoned(core, "gpu-36"), 20, "gpu-36 cordoned by the order")

    def get_plan() -> dict[str, Any]:
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}{location}", headers={"Authorization": f"Bearer {token}"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            result: dict[str, Any] = json.loads(response.read())["plan"]
            return result

    eventually(
        lambda: get_plan()["status"].get("phase") == "Succeeded", 20, "the ordered plan done"
    )
    assert get_plan()["source"] == "decision-api"

    # gpu-36 stays cordoned by its plan: with 2% of 48 GPU nodes, one is the limit
    status, body, _ = post({**order, "nodeName": "gpu-37"})
    assert (status, body) == (429, {"code": "Error", "message": "Exceed the maximum plans limit 1"})
    assert not cordoned(core, "gpu-37")
    eventually(
        lambda: controller.metric("blackstart_rescue_controller_xids_total", xid="62") == 1,
        30,
        "the controller to see the Xid 62 the agent reported on gpu-38",
    )
    assert plans(custom, "gpu-38") == []
    assert not cordoned(core, "gpu-38")
    assert (
        controller.metric("blackstart_rescue_controller_decision_api_requests_total", code="400")
        == 3
    )


# --- dry run, malformed policies, an administrator's cordon ---------------------------------


def test_dry_run_records_the_plan_and_changes_nothing(
    core: client.CoreV1Api,
    custom: client.CustomObjectsApi,
    controllers: Controllers,
    tmp_path: Path,
    agent: NodeAgent,
) -> None:
    node = "gpu-38"
    boot_before = core.read_node(node).status.node_info.boot_id
    policy(
        custom,
        "everything",
        {
            "priority": 10,
            "errorCode": ["62"],
            "actions": [
                {"name": "cordon"},
                {"name": "drain", "attribute": {"waittime": "30s"}},
                {"name": "reboot", "attribute": {"waittime": "60s", "unCordon": "true"}},
            ],
        },
    )
    journal = tmp_path / "plans.jsonl"
    controllers.start("--dry-run", "--journal", str(journal))
    agent.log_xid(node, 62)
    plan = ended_plan(custom, node)
    assert plan["spec"]["dryRun"] is True
    assert plan["status"]["phase"] == "Succeeded"
    messages = [t.get("message", "") for t in plan["status"]["transitions"][1:]]
    assert all(m.startswith("dry run: would") for m in messages), messages
    # the plan ended after its last step: a real cordon or reboot would show by now
    after = core.read_node(node)
    assert not after.spec.unschedulable
    assert after.status.node_info.boot_id == boot_before
    assert NOT_READY_LABEL not in (after.metadata.labels or {})
    lines = [json.loads(line) for line in journal.read_text().splitlines()]
    assert [line["phase"] for line in lines][:2] == ["Pending", "Cordoned"]
    assert all(line["dryRun"] for line in lines)


@pytest.mark.parametrize(
    ("rule", "field"),
    [
        (
            {
                "priority": 10,
                "errorCode": ["62"],
                "actions": [{"name": "drain", "attribute": {"waittime": "ten minutes"}}],
            },
            "spec.rules[0].actions[0].attribute.waittime",
        ),
        (
            {
                "priority": 10,
                "errorCode": ["62"],
                "nodeSelector": {"operator": "some", "labels": {"a": "b"}},
                "actions": [{"name": "cordon"}],
            },
            "spec.rules[0].nodeSelector.operator",
        ),
        (
            {"priority": 0, "errorCode": ["62"], "actions": [{"name": "cordon"}]},
            "spec.rules[0].errorCode",
        ),
        (
            {"priority": 10, "errorCode": ["62"], "actions": [{"name": "enableWarmStandby"}]},
            "spec.rules[0].actions",
        ),
        (
            {"priority": 10, "errorCode": ["6200"], "actions": [{"name": "cordon"}]},
            "spec.rules[0].errorCode[0]",
        ),
    ],
)
def test_malformed_policies_are_rejected_by_the_api_server_naming_the_field(
    custom: client.CustomObjectsApi, rule: dict[str, Any], field: str
) -> None:
    with pytest.raises(ApiException) as caught:
        policy(custom, "malformed", rule)
    assert caught.value.status == 422
    assert field in json.loads(caught.value.body)["message"]


def test_an_administrators_cordon_is_never_undone(
    core: client.CoreV1Api,
    custom: client.CustomObjectsApi,
    controllers: Controllers,
    agent: NodeAgent,
) -> None:
    node = "gpu-39"
    core.patch_node(node, {"spec": {"unschedulable": True}})  # kubectl cordon by a person
    policy(
        custom,
        "reboot-62",
        {
            "priority": 10,
            "errorCode": ["62"],
            "actions": [
                {"name": "cordon"},
                {"name": "reboot", "attribute": {"waittime": "60s", "unCordon": "true"}},
                {"name": "unCordon"},
            ],
        },
    )
    controllers.start()
    agent.log_xid(node, 62)
    plan = ended_plan(custom, node, timeout=60)
    assert plan["status"]["phase"] == "Succeeded"
    assert plan["status"]["nodeWasCordoned"] is True
    assert "Uncordoned" not in phases(plan)
    assert cordoned(core, node)
    assert node_events(core, node, "LeftCordoned")


def test_ended_plans_are_deleted_after_the_ttl(
    core: client.CoreV1Api,
    custom: client.CustomObjectsApi,
    controllers: Controllers,
    agent_core: client.CoreV1Api,
) -> None:
    """About the controller alone (its clean-up of ended plans): the Xid condition is written
    directly, as the agent writes it, with the agent's identity."""
    node = "gpu-37"
    ttl = ("--plans-ttl", "3s", "--max-report-age", "3s", "--reboot-cap", "3/3s")
    controllers.start(*ttl)
    write_xid(agent_core, node, 62)
    plan = ended_plan(custom, node)
    assert plan["status"]["phase"] == "Succeeded"
    eventually(lambda: plans(custom, node) == [], 15, "the ended plan deleted after 3 s")
    assert cordoned(core, node)  # the record goes, the node stays as the plan left it


# --- the reboot drivers for real nodes: annotation (kured style) and webhook ----------------


def reboot_host(local: LocalProvider, cluster: ClusterState, node: str) -> None:
    """What the host does when told to reboot: NotReady, then Ready with a new boot id."""
    local.mark_node_not_ready(cluster.name, node)
    local.mark_node_ready(cluster.name, node)


REBOOT_62 = {
    "priority": 10,
    "errorCode": ["62"],
    "actions": [
        {"name": "cordon"},
        {"name": "reboot", "attribute": {"waittime": "60s", "unCordon": "true"}},
    ],
}


def test_reboot_through_the_annotation_driver_waits_for_the_nodes_own_agent(
    cluster: ClusterState,
    local: LocalProvider,
    core: client.CoreV1Api,
    custom: client.CustomObjectsApi,
    controllers: Controllers,
    agent: NodeAgent,
) -> None:
    """The controller annotates the node; the node's agent (played here, as kured would)
    reboots the host on seeing it; the controller waits for Ready, then clears the
    annotation and uncordons."""
    node = "gpu-44"
    boot_before = core.read_node(node).status.node_info.boot_id
    policy(custom, "reboot-annotation", REBOOT_62)
    controller = controllers.start("--reboot-driver", "annotation")
    agent.log_xid(node, 62)

    def requested() -> str | None:
        annotations = core.read_node(node).metadata.annotations or {}
        return annotations.get("rescue.blackstart.dev/reboot-requested")

    plan_name = eventually(requested, 30, f"the reboot-requested annotation on {node}")
    (plan,) = plans(custom, node)
    assert plan_name == plan["metadata"]["name"]
    assert plan["status"]["phase"] in ("Rebooting", "WaitingReady")  # waits for the host
    assert node_is_ready(core.read_node(node))  # nothing rebooted it but its own agent
    reboot_host(local, cluster, node)
    ended = ended_plan(custom, node, timeout=60)
    assert ended["status"]["phase"] == "Succeeded", ended["status"]
    assert phases(ended) == [
        "Pending", "Cordoned", "Rebooting", "WaitingReady", "Uncordoned", "Succeeded",
    ]  # fmt: skip
    after = core.read_node(node)
    assert after.status.node_info.boot_id != boot_before
    assert "rescue.blackstart.dev/reboot-requested" not in (after.metadata.annotations or {})
    assert not after.spec.unschedulable
    assert controller.metric("blackstart_rescue_controller_reboots_total", driver="annotation") == 1


class RebootWebhook:
    """A fleet API on loopback that takes reboot orders: records them, answers ``status``,
    and reboots the node (in the background) when it accepts."""

    def __init__(self, local: LocalProvider, cluster: ClusterState, token: str, status: int):
        import http.server

        self.orders: list[tuple[dict[str, Any], str]] = []
        webhook = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                webhook.orders.append((body, self.headers.get("Authorization", "")))
                answer = b'{"accepted": true}' if status < 300 else b'{"error": "fleet API down"}'
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)
                if status < 300:
                    threading.Thread(
                        target=reboot_host, args=(local, cluster, body["node"]), daemon=True
                    ).start()

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1/reboots"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize(("status", "outcome"), [(202, "Succeeded"), (503, "Failed")])
def test_reboot_through_the_webhook_driver_posts_the_order_and_fails_visibly_on_an_error(
    cluster: ClusterState,
    local: LocalProvider,
    core: client.CoreV1Api,
    custom: client.CustomObjectsApi,
    controllers: Controllers,
    agent: NodeAgent,
    tmp_path: Path,
    status: int,
    outcome: str,
) -> None:
    node = "gpu-45" if status < 300 else "gpu-46"
    boot_before = core.read_node(node).status.node_info.boot_id
    token = f"fleet-token-{status}"
    (tmp_path / "token").write_text(token + "\n")
    webhook = RebootWebhook(local, cluster, token, status)
    try:
        policy(custom, "reboot-webhook", REBOOT_62)
        controllers.start(
            "--reboot-driver", "webhook", "--webhook-url", webhook.url,
            "--webhook-token-file", str(tmp_path / "token"),
        )  # fmt: skip
        agent.log_xid(node, 62)
        plan = ended_plan(custom, node, timeout=60)
    finally:
        webhook.close()
    ((order, authorization),) = webhook.orders  # one order, never repeated
    assert authorization == f"Bearer {token}"
    assert (order["node"], order["plan"], order["action"]) == (
        node,
        plan["metadata"]["name"],
        "reboot",
    )
    assert parse_iso(order["requestedAt"])  # an RFC 3339 time
    assert plan["status"]["phase"] == outcome, plan["status"]
    after = core.read_node(node)
    if outcome == "Succeeded":
        assert "Uncordoned" in phases(plan)
        assert after.status.node_info.boot_id != boot_before
        assert not after.spec.unschedulable
    else:
        message = plan["status"]["transitions"][-1].get("message", "")
        assert f"reboot webhook {webhook.url} answered 503 for node {node}" in message
        assert "fleet API down" in message
        assert after.status.node_info.boot_id == boot_before
        assert after.spec.unschedulable  # left cordoned for a person to look at
