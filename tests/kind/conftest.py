"""One real kind cluster per test session, from the packaged kind-gpu.yaml spec.

The Docker engine is started when none answers and the node image is built
when it is missing (`.ci/bootstrap` does both ahead of time). When either
cannot be had the session fails with the reason; it is never skipped.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from blackstart.clusters.engine import EngineError, ensure_engine
from blackstart.clusters.kind_provider import KindProvider
from blackstart.clusters.node_image import NodeImageError, build_node_image
from blackstart.clusters.provider import ClusterError
from blackstart.clusters.spec import load_spec
from blackstart.clusters.state import ClusterState, load_state, state_dir_for
from blackstart.kube import api_client
from blackstart.names import CORDONED_BY_ANNOTATION, RESCUE_GROUP, RESCUE_PLANS, RESCUE_VERSION
from blackstart.paths import cache_dir
from blackstart.rescue.image import RescueImage, RescueImageError, build_images
from blackstart.rescue.install import deploy_documents
from blackstart.rescue.kind_chart import uninstall
from blackstart.rescue.wire.signal import reports_from_node

KIND_CLUSTER = os.environ.get("BLACKSTART_KIND_TEST_CLUSTER", "bs-kind-test")
KEEP_ENV = "BLACKSTART_E2E_KEEP"
#: the chart's agent.stateDir: each agent's spool and read position, a hostPath on the node
AGENT_STATE_DIR = "/var/lib/blackstart-rescue-agent"
T = TypeVar("T")


def _say(message: str) -> None:
    print(message, flush=True)


@pytest.fixture(scope="session")
def kind() -> KindProvider:
    cache = cache_dir()
    try:
        ensure_engine(cache, _say)
        image = build_node_image(cache, _say)
    except (EngineError, NodeImageError, ClusterError) as err:
        pytest.fail(f"kind tests need a Docker engine and the node image: {err}", pytrace=False)
    _say(f"node image {image.tag} ({'cached' if image.cached else 'built'})")
    return KindProvider(cache, node_image=image.tag, progress=_say)


@pytest.fixture(scope="session")
def kind_cluster(kind: KindProvider) -> Iterator[ClusterState]:
    """The kind-gpu fleet: 1 control plane, 2 GPU workers, 1 CPU worker, 1 standby.

    With BLACKSTART_E2E_KEEP=1 the cluster is left up after the session, and a session
    finds the one a kept session left (a developer's loop; CI never sets it).
    """
    keep = os.environ.get(KEEP_ENV) == "1"
    if keep and (state_dir_for(KIND_CLUSTER) / "cluster.json").exists():
        _say(f"{KEEP_ENV}=1: using the kind cluster {KIND_CLUSTER} a kept session left")
        yield load_state(KIND_CLUSTER)
        return
    kind.down(KIND_CLUSTER)  # whatever an interrupted run left
    started = time.monotonic()
    state = kind.up(load_spec("kind-gpu.yaml"), KIND_CLUSTER)
    _say(f"kind cluster {KIND_CLUSTER} up in {time.monotonic() - started:.0f} s")
    yield state
    if keep:
        _say(f"{KEEP_ENV}=1: kind cluster {KIND_CLUSTER} left up")
    else:
        kind.down(KIND_CLUSTER)


@pytest.fixture(scope="session")
def images(kind_cluster: ClusterState) -> dict[str, RescueImage]:
    """`blackstart rescue image --kind-cluster`: both images built (or current) and loaded."""
    started = time.monotonic()
    try:
        built = build_images(cache_dir(), progress=_say, kind_cluster=kind_cluster.name)
    except RescueImageError as err:
        pytest.fail(f"the rescue images could not be built: {err}", pytrace=False)
    _say(
        f"rescue images ready and loaded into {kind_cluster.name} in "
        f"{time.monotonic() - started:.0f} s: "
        + ", ".join(
            f"{i.tag} {i.size_bytes >> 20} MiB ({'cached' if i.cached else 'built'})" for i in built
        )
    )
    return {i.name: i for i in built}


@pytest.fixture(scope="session")
def core(kind_cluster: ClusterState) -> client.CoreV1Api:
    return client.CoreV1Api(api_client(kind_cluster.kubeconfig))


@pytest.fixture(scope="session")
def apps(kind_cluster: ClusterState) -> client.AppsV1Api:
    return client.AppsV1Api(api_client(kind_cluster.kubeconfig))


@pytest.fixture
def namespace(core: client.CoreV1Api, request: pytest.FixtureRequest) -> Iterator[str]:
    """A namespace of its own for one test, deleted afterwards."""
    name = "t-" + request.node.name.lower().replace("_", "-")[:50].strip("-")
    core.create_namespace({"metadata": {"name": name}})
    yield name
    core.delete_namespace(name)


def eventually(check: Callable[[], T], timeout: float, what: str, interval: float = 1.0) -> T:
    """Poll ``check()`` until it returns something truthy; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})")


def repo_root() -> Path:
    return Path(__file__).resolve().parents[2]


def remove_rescue(
    kind_cluster: ClusterState,
    core: client.CoreV1Api,
    cordoned_before: set[str],
) -> None:
    """Plans first (the controller releases their nodes), then the release and the CRDs,
    which Helm leaves; every node put back as it was for the tests after this module.

    That includes the Xid reports the tests left in the nodes' ``GPUXidError`` condition
    and the agents' spool and read position on the nodes: a controller installed later
    (the game day's) would act on those reports, cordoning a node before its experiment
    begins."""
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
    uninstall(cache_dir(), kind_cluster)
    extensions = client.ApiextensionsV1Api(api_client(kind_cluster.kubeconfig))
    for crd in deploy_documents(["crds.yaml"]):
        try:
            extensions.delete_custom_resource_definition(crd["metadata"]["name"])
        except ApiException as err:
            if err.status != 404:
                raise
    node_map = kind_cluster.extra.get("node_map")
    for worker in node_map.values() if isinstance(node_map, dict) else ():
        subprocess.run(
            ["docker", "exec", str(worker), "rm", "-rf", AGENT_STATE_DIR],
            capture_output=True,
            check=False,
        )
    for node in core.list_node().items:
        annotations = node.metadata.annotations or {}
        name = node.metadata.name
        if reports_from_node(node):
            core.patch_node_status(
                name, {"status": {"conditions": [{"type": "GPUXidError", "$patch": "delete"}]}}
            )
        if CORDONED_BY_ANNOTATION in annotations or (
            node.spec.unschedulable and name not in cordoned_before
        ):
            core.patch_node(
                name,
                {
                    "spec": {"unschedulable": True if name in cordoned_before else None},
                    "metadata": {"annotations": {CORDONED_BY_ANNOTATION: None}},
                },
            )
