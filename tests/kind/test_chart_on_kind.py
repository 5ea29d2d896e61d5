"""The self-heal controller as users deploy it: the Helm chart on a real kind cluster.

The images `blackstart rescue image` built are loaded into the nodes; `helm install`
puts the CRDs, RBAC, the controller Deployment and the agent DaemonSet on the
cluster, and the agent pods read each GPU worker's kernel-log file (a kind node
shares the host's /dev/kmsg, so blackstart gives each its own file). A Xid 62 line
written into a worker's log must get that worker cordoned by the controller pod.

Not tested here yet (issue 12): a reboot plan through a node-side rebooter, an
agent pod killed mid-burst, the game day on kind.
"""

from __future__ import annotations

import random
import subprocess
import time
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from blackstart.actions.xid import format_lines, xid_body
from blackstart.clusters.kind import KMSG_CONTAINER_PATH
from blackstart.clusters.kind_provider import KindProvider
from blackstart.clusters.state import ClusterState
from blackstart.clusters.toolchain import resolve
from blackstart.kube import api_client
from blackstart.names import (
    CORDONED_BY_ANNOTATION,
    RESCUE_GROUP,
    RESCUE_PLANS,
    RESCUE_VERSION,
    ROLE_LABEL,
)
from blackstart.paths import cache_dir
from blackstart.rescue.image import RescueImage
from blackstart.rescue.install import deploy_documents
from blackstart.rescue.wire.signal import CONDITION_TYPE, parse_condition_message

from .conftest import eventually

pytestmark = pytest.mark.kind

RELEASE = "blackstart-rescue"
NAMESPACE = "blackstart-rescue"
GPU_SELECTOR = "nvidia.com/gpu.present=true"


def _helm() -> str:
    toolchain, _missing = resolve(cache_dir())
    if "helm" not in toolchain.paths:
        pytest.fail("the kind tests need helm: run `blackstart toolchain install`", pytrace=False)
    return str(toolchain.paths["helm"])


def _chart() -> Path:
    return Path(str(resources.files("blackstart.rescue").joinpath("deploy", "chart")))


def _run(argv: list[str], timeout: float = 300) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    assert done.returncode == 0, f"{' '.join(argv)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def installed(
    kind_cluster: ClusterState, images: dict[str, RescueImage], core: client.CoreV1Api
) -> Iterator[float]:
    """`helm install --wait` of the chart with the images loaded; its seconds."""
    helm = _helm()
    kubeconfig = ["--kubeconfig", kind_cluster.kubeconfig]
    started = time.monotonic()
    done = subprocess.run(
        [helm, "install", RELEASE, str(_chart()), "--namespace", NAMESPACE, "--create-namespace",
         *kubeconfig, "--wait", "--timeout", "240s",
         "--set", "image.pullPolicy=Never",  # loaded by `kind load`, no registry
         "--set", f"agent.kernelLog={KMSG_CONTAINER_PATH}"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        report = _pods_report(core)
        _uninstall(helm, kubeconfig, kind_cluster, core)
        pytest.fail(f"helm install failed: {done.stderr.strip()}\n{report}")
    seconds = time.monotonic() - started
    print(f"\nFIGURE helm install --wait of the rescue chart on kind: {seconds:.1f} s")
    try:
        yield seconds
    finally:
        _uninstall(helm, kubeconfig, kind_cluster, core)


def _uninstall(
    helm: str, kubeconfig: list[str], kind_cluster: ClusterState, core: client.CoreV1Api
) -> None:
    """Plans first (the controller releases their nodes), then the release and the CRDs,
    which Helm leaves; every node put back as it was for the tests after this module."""
    custom = client.CustomObjectsApi(api_client(kind_cluster.kubeconfig))
    custom.delete_collection_cluster_custom_object(RESCUE_GROUP, RESCUE_VERSION, RESCUE_PLANS)

    def plans_left() -> list[Any]:
        items: list[Any] = custom.list_cluster_custom_object(
            RESCUE_GROUP, RESCUE_VERSION, RESCUE_PLANS
        )["items"]
        return items

    deadline = time.monotonic() + 60
    while plans_left() and time.monotonic() < deadline:
        time.sleep(1)
    for plan in plans_left():  # the controller did not release it: do not leave it stuck
        custom.patch_cluster_custom_object(
            RESCUE_GROUP,
            RESCUE_VERSION,
            RESCUE_PLANS,
            plan["metadata"]["name"],
            {"metadata": {"finalizers": None}},
        )
    _run([helm, "uninstall", RELEASE, "--namespace", NAMESPACE, *kubeconfig, "--wait"])
    extensions = client.ApiextensionsV1Api(api_client(kind_cluster.kubeconfig))
    for crd in deploy_documents(["crds.yaml"]):
        try:
            extensions.delete_custom_resource_definition(crd["metadata"]["name"])
        except ApiException as err:
            if err.status != 404:
                raise
    for node in core.list_node(label_selector=GPU_SELECTOR).items:
        annotations = node.metadata.annotations or {}
        if node.spec.unschedulable or CORDONED_BY_ANNOTATION in annotations:
            core.patch_node(
                node.metadata.name,
                {
                    "spec": {"unschedulable": None},
                    "metadata": {"annotations": {CORDONED_BY_ANNOTATION: None}},
                },
            )


def _pods_report(core: client.CoreV1Api) -> str:
    """What the release's pods are doing: phase, container states, the end of their logs."""
    lines = []
    for pod in core.list_namespaced_pod(NAMESPACE).items:
        name = pod.metadata.name
        lines.append(f"pod {name} on {pod.spec.node_name}: {pod.status.phase}")
        for status in pod.status.container_statuses or []:
            lines.append(f"  {status.name} ready={status.ready} state={status.state}")
        try:
            log = core.read_namespaced_pod_log(name, NAMESPACE, tail_lines=20)
        except ApiException as err:
            log = f"(no log: {err.reason})"
        lines += [f"  | {line}" for line in str(log).splitlines()]
    events = core.list_namespaced_event(NAMESPACE).items
    lines += [f"event {e.reason} {e.involved_object.name}: {e.message}" for e in events[-15:]]
    return "\n".join(lines)


def _agent_ready_on(core: client.CoreV1Api, node: str) -> bool:
    pods = core.list_namespaced_pod(
        NAMESPACE,
        label_selector="app.kubernetes.io/name=rescue-agent",
        field_selector=f"spec.nodeName={node}",
    ).items
    if len(pods) != 1 or pods[0].status.phase != "Running":
        return False
    try:
        log = core.read_namespaced_pod_log(pods[0].metadata.name, NAMESPACE)
    except ApiException:
        return False
    return "; ready" in log


def _write_xid(kind: KindProvider, cluster: str, node: str, xid: int) -> None:
    """One Xid line in kmsg form, as the driver prints it, appended to the node's log."""
    path = kind.kernel_log(cluster, node)
    uptime = float(Path("/proc/uptime").read_text().split()[0])  # the nodes' kernel is ours
    body = xid_body(xid, "0000:3b:00", "", random.randint(1000, 60000))
    [line] = format_lines([body], "kmsg", node, path, time.time() - uptime)
    with path.open("a") as log:
        log.write(line + "\n")


def test_a_xid_62_line_in_a_workers_log_gets_it_cordoned_by_the_controller_pod(
    installed: float, kind: KindProvider, kind_cluster: ClusterState, core: client.CoreV1Api
) -> None:
    # the agent runs on every node with GPUs: the two GPU workers and the warm standby
    with_gpus = core.list_node(label_selector=GPU_SELECTOR).items
    apps = client.AppsV1Api(api_client(kind_cluster.kubeconfig))
    agents = apps.read_namespaced_daemon_set("rescue-agent", NAMESPACE).status
    assert agents.number_ready == agents.desired_number_scheduled == len(with_gpus) == 3
    gpu_nodes = sorted(
        n.metadata.name for n in with_gpus if n.metadata.labels.get(ROLE_LABEL) == "gpu"
    )
    assert len(gpu_nodes) == 2, gpu_nodes
    controller = client.AppsV1Api(api_client(kind_cluster.kubeconfig))
    assert controller.read_namespaced_deployment(
        "rescue-controller", NAMESPACE
    ).status.ready_replicas
    node, other = gpu_nodes
    eventually(lambda: _agent_ready_on(core, node), 60, f"the agent pod on {node} ready")
    assert not core.read_node(node).spec.unschedulable

    written = time.monotonic()
    _write_xid(kind, kind_cluster.name, node, 62)
    eventually(
        lambda: core.read_node(node).spec.unschedulable, 60, f"{node} cordoned", interval=0.1
    )
    seconds = time.monotonic() - written
    print(f"\nFIGURE Xid 62 line -> {node} cordoned by the controller pod: {seconds:.2f} s")

    conditions = {c.type: c for c in core.read_node(node).status.conditions}
    assert conditions[CONDITION_TYPE].status == "True"  # written by the agent pod
    assert [r["xid"] for r in parse_condition_message(conditions[CONDITION_TYPE].message)] == [62]
    annotations = core.read_node(node).metadata.annotations or {}
    assert CORDONED_BY_ANNOTATION in annotations  # the controller's cordon, not someone's
    assert not core.read_node(other).spec.unschedulable
    assert CONDITION_TYPE not in {c.type for c in core.read_node(other).status.conditions}
