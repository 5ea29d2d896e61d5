"""A real kind cluster from the offline node image: nodes, GPUs, pods, DNS, the API server,
the firewall, and a clean `cluster down`.

The tests run in file order on one session cluster; the last one deletes it.
"""

from __future__ import annotations

import subprocess
import time

import pytest
from kubernetes import client

from blackstart.clusters import firewall
from blackstart.clusters.kind_provider import CLUSTER_LABEL, KIND_NETWORK, KindProvider
from blackstart.clusters.node_image import TOOLBOX_IMAGE
from blackstart.clusters.spec import GPU_RESOURCE, ROLE_LABEL, STANDBY_LABEL
from blackstart.clusters.state import ClusterState, load_state, state_dir_for
from blackstart.kube import api_client
from blackstart.probes.dns import DEFAULT_NAMES, query_once

from .conftest import KIND_CLUSTER, eventually

pytestmark = pytest.mark.kind

ETCD_IMAGE = "registry.k8s.io/etcd:3.5.24-0"


@pytest.mark.timeout(1800)
def test_every_node_is_ready_and_gpu_workers_advertise_gpus(
    kind_cluster: ClusterState, core: client.CoreV1Api
) -> None:
    nodes = {n.metadata.name: n for n in core.list_node().items}
    assert len(nodes) == 5 == kind_cluster.nodes
    for node in nodes.values():
        ready = next(c for c in node.status.conditions if c.type == "Ready")
        assert ready.status == "True", node.metadata.name
        assert node.status.node_info.kubelet_version == "v1.33.13"
        assert node.status.node_info.container_runtime_version.startswith("containerd://1.6")
    roles = {name: n.metadata.labels.get(ROLE_LABEL) for name, n in nodes.items()}
    gpu_nodes = [name for name, role in roles.items() if role in ("gpu", "standby")]
    assert len(gpu_nodes) == 3
    for name in gpu_nodes:
        assert nodes[name].status.capacity[GPU_RESOURCE] == "4"
        assert nodes[name].status.allocatable[GPU_RESOURCE] == "4"
    standby = [n for n in nodes.values() if n.metadata.labels.get(STANDBY_LABEL) == "true"]
    assert [n.spec.unschedulable for n in standby] == [True]
    assert kind_cluster.apiserver_url.startswith("https://127.0.0.1:")


def test_every_kube_system_pod_runs_from_preloaded_images(core: client.CoreV1Api) -> None:
    pods = core.list_namespaced_pod("kube-system").items
    names = {p.metadata.name.rsplit("-", 1)[0] for p in pods}
    assert {"etcd-bs-kind-test-control", "kube-apiserver-bs-kind-test-control"} <= names
    assert sum(p.metadata.name.startswith("coredns-") for p in pods) == 2
    assert sum(p.metadata.name.startswith("kube-proxy-") for p in pods) == 5
    for pod in pods:
        assert pod.status.phase == "Running", pod.metadata.name
    events = core.list_namespaced_event("kube-system").items
    assert not [e.message for e in events if e.reason == "Pulling"], "an image was pulled"


def test_a_gpu_deployment_runs_real_containers_on_gpu_workers(
    core: client.CoreV1Api, apps: client.AppsV1Api, namespace: str
) -> None:
    container = {
        "name": "trainer",
        "image": TOOLBOX_IMAGE,
        "imagePullPolicy": "Never",
        "command": ["bash", "-c", "echo training on $(hostname); sleep 3600"],
        "resources": {"limits": {GPU_RESOURCE: "2"}},
    }
    apps.create_namespaced_deployment(
        namespace,
        {
            "metadata": {"name": "trainer"},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"app": "trainer"}},
                "template": {
                    "metadata": {"labels": {"app": "trainer"}},
                    "spec": {"containers": [container], "terminationGracePeriodSeconds": 1},
                },
            },
        },
    )

    def running() -> list[client.V1Pod]:
        pods = core.list_namespaced_pod(namespace, label_selector="app=trainer").items
        ok = [
            p
            for p in pods
            if p.status.phase == "Running"
            and p.status.container_statuses
            and p.status.container_statuses[0].state.running
        ]
        return ok if len(ok) == 2 else []

    pods = eventually(running, 120, "2 GPU pods Running")
    nodes = {p.spec.node_name for p in pods}
    for node in nodes:
        labels = core.read_node(node).metadata.labels
        assert labels[ROLE_LABEL] == "gpu", f"GPU pod on {node} ({labels[ROLE_LABEL]})"
    log = core.read_namespaced_pod_log(pods[0].metadata.name, namespace)
    assert log.startswith("training on trainer-")


def test_a_pod_resolves_and_reaches_a_service_through_coredns(
    core: client.CoreV1Api, apps: client.AppsV1Api, namespace: str
) -> None:
    # A real server (etcd's HTTP health endpoint) behind a Service, reached by name
    # from a pod that must not share its node: CoreDNS, kube-proxy and the pod
    # network between nodes all take part.
    server = {
        "name": "etcd",
        "image": ETCD_IMAGE,
        "imagePullPolicy": "Never",
        "command": [
            "etcd",
            "--data-dir=/tmp/etcd",
            "--listen-client-urls=http://0.0.0.0:2379",
            "--advertise-client-urls=http://127.0.0.1:2379",
        ],
    }
    apps.create_namespaced_deployment(
        namespace,
        {
            "metadata": {"name": "store"},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": "store"}},
                "template": {
                    "metadata": {"labels": {"app": "store"}},
                    "spec": {"containers": [server]},
                },
            },
        },
    )
    core.create_namespaced_service(
        namespace,
        {
            "metadata": {"name": "store"},
            "spec": {"selector": {"app": "store"}, "ports": [{"port": 80, "targetPort": 2379}]},
        },
    )
    store = eventually(
        lambda: [
            p
            for p in core.list_namespaced_pod(namespace, label_selector="app=store").items
            if p.status.phase == "Running"
        ],
        120,
        "the store pod Running",
    )[0]
    host = f"store.{namespace}.svc.cluster.local"
    script = (
        f"getent hosts {host} && exec 3<>/dev/tcp/{host}/80 && "
        "printf 'GET /health HTTP/1.0\\r\\n\\r\\n' >&3 && cat <&3"
    )
    core.create_namespaced_pod(
        namespace,
        {
            "metadata": {"name": "client"},
            "spec": {
                "restartPolicy": "Never",
                "affinity": {
                    "podAntiAffinity": {
                        "requiredDuringSchedulingIgnoredDuringExecution": [
                            {
                                "labelSelector": {"matchLabels": {"app": "store"}},
                                "topologyKey": "kubernetes.io/hostname",
                            }
                        ]
                    }
                },
                "containers": [
                    {
                        "name": "client",
                        "image": TOOLBOX_IMAGE,
                        "imagePullPolicy": "Never",
                        "command": ["bash", "-c", script],
                    }
                ],
            },
        },
    )

    def finished() -> str:
        pod = core.read_namespaced_pod("client", namespace)
        return pod.status.phase if pod.status.phase in ("Succeeded", "Failed") else ""

    phase = eventually(finished, 90, "the client pod to finish")
    log = core.read_namespaced_pod_log("client", namespace)
    assert phase == "Succeeded", log
    service_ip = core.read_namespaced_service("store", namespace).spec.cluster_ip
    assert log.splitlines()[0].split()[0] == service_ip
    assert '"health":"true"' in log
    client_pod = core.read_namespaced_pod("client", namespace)
    assert client_pod.spec.node_name != store.spec.node_name


def test_the_api_server_stops_and_starts_through_the_provider(
    kind: KindProvider, kind_cluster: ClusterState
) -> None:
    name = kind_cluster.name
    api = client.CoreV1Api(api_client(kind_cluster.kubeconfig))
    started = time.monotonic()
    assert kind.stop_component(name, "kube-apiserver") is True
    stopped_after = time.monotonic() - started
    with pytest.raises(Exception):  # noqa: B017 - any connection error will do
        api.list_node(_request_timeout=5)
    status = {s.name: s for s in kind.status(name)}
    assert status["kube-apiserver"].state == "stopped"
    assert not status["kube-apiserver"].healthy
    assert status["etcd"].state == "running"
    assert kind.stop_component(name, "kube-apiserver") is False  # already stopped
    started = time.monotonic()
    kind.start_component(name, "kube-apiserver")
    back_after = time.monotonic() - started
    print(f"API server stopped in {stopped_after:.0f} s, back in {back_after:.0f} s")
    assert len(api.list_node(_request_timeout=10).items) == 5
    assert {s.name: s for s in kind.status(name)}["kube-apiserver"].healthy


def test_a_frozen_scheduler_shows_as_hung_and_resumes(
    kind: KindProvider, kind_cluster: ClusterState
) -> None:
    name = kind_cluster.name
    pid = kind.hang_component(name, "kube-scheduler")
    try:
        status = {s.name: s for s in kind.status(name)}["kube-scheduler"]
        assert (status.state, status.pid) == ("hung", pid)
    finally:
        assert kind.resume_component(name, "kube-scheduler") == pid
    assert {s.name: s for s in kind.status(name)}["kube-scheduler"].state == "running"


def test_coredns_restarts_as_kubelet_starts_its_killed_containers_and_answers_again(
    kind: KindProvider, kind_cluster: ClusterState, core: client.CoreV1Api
) -> None:
    """The incident's restart (a crash or an OOM kill, which needs no API server): the same
    pods, each container started again by kubelet; data-plane DNS answers afterwards."""

    def restarts() -> dict[str, int]:
        listed = core.list_namespaced_pod("kube-system", label_selector="k8s-app=kube-dns").items
        return {
            p.metadata.name: sum(c.restart_count for c in p.status.container_statuses or [])
            for p in listed
        }

    before = restarts()
    assert len(before) == 2, before
    kind.restart_coredns(kind_cluster.name)

    def all_restarted() -> dict[str, int]:
        now = restarts()
        return now if all(now.get(n, 0) > c for n, c in before.items()) else {}

    after = eventually(all_restarted, 60, "each CoreDNS container restarted by kubelet")
    assert set(after) == set(before)  # a crash restart, not a roll-out: the same pods
    host, _, port = load_state(kind_cluster.name).dns_address.rpartition(":")
    eventually(
        lambda: query_once(host, int(port), DEFAULT_NAMES[0], "A", 1.0)[0] == "ok",
        60,
        f"data-plane DNS to answer at {host}:{port} again",
    )


def test_a_rebooted_gpu_worker_comes_back_with_a_new_boot_id_and_its_gpus(
    kind: KindProvider, kind_cluster: ClusterState, core: client.CoreV1Api
) -> None:
    node = kind_cluster.extra["node_map"]["gpu-1"]  # type: ignore[index]
    before = core.read_node(node).status.node_info.boot_id
    after = kind.reboot_node(kind_cluster.name, "gpu-1")
    assert after and after != before
    status = core.read_node(node).status
    assert status.node_info.boot_id == after
    assert status.allocatable[GPU_RESOURCE] == "4"
    assert kind.kernel_log(kind_cluster.name, node).name == "gpu-1.log"


def test_container_egress_is_confined_by_the_installed_firewall(
    kind_cluster: ClusterState,
) -> None:
    firewall.check_rules(engine_running=True)
    rules = firewall.read_rules("iptables", firewall.CHAIN)
    assert f"-A {firewall.CHAIN} -i br-+ -j DROP" in rules
    assert rules.index(f"-A {firewall.CHAIN} -o br-+ -j RETURN") < rules.index(
        f"-A {firewall.CHAIN} -i br-+ -j DROP"
    )
    network_id = subprocess.run(
        ["docker", "network", "inspect", KIND_NETWORK, "--format", "{{.Id}}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    bridge = f"br-{network_id[:12]}"
    links = subprocess.run(["ip", "-o", "link", "show", bridge], capture_output=True, text=True)
    assert links.returncode == 0, f"the kind network's bridge {bridge} does not exist"
    assert bridge.startswith("br-")  # matched by the br-+ rules


def test_cluster_down_leaves_no_container_network_or_state(
    kind: KindProvider, kind_cluster: ClusterState
) -> None:
    removed = kind.down(kind_cluster.name)
    assert any(r.endswith("control-plane") for r in removed)
    left = subprocess.run(
        ["docker", "ps", "-a", "-q", "--filter", f"label={CLUSTER_LABEL}={KIND_CLUSTER}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert left == []
    networks = subprocess.run(
        ["docker", "network", "ls", "--format", "{{.Name}}"], capture_output=True, text=True
    ).stdout.split()
    assert KIND_NETWORK not in networks
    assert not state_dir_for(kind_cluster.name, kind.cache).exists()
