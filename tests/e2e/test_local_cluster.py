"""Given the default GPU fleet on a real local control plane, the parts a game day
relies on behave like a real cluster's."""

from __future__ import annotations

import dns.resolver
import pytest
from kubernetes import client
from prometheus_api_client import PrometheusConnect

from blackstart.clusters.local.kwok_nodes import node_is_ready
from blackstart.clusters.spec import GPU_RESOURCE, POOL_LABEL, load_spec
from blackstart.clusters.state import ClusterState

from .conftest import eventually

pytestmark = pytest.mark.e2e


def resolver(cluster: ClusterState) -> dns.resolver.Resolver:
    host, port = cluster.dns_address.rsplit(":", 1)
    r = dns.resolver.Resolver(configure=False)
    r.nameservers = [host]
    r.port = int(port)
    r.lifetime = 3.0
    return r


def test_every_node_of_the_default_fleet_is_ready(cluster: ClusterState, core: client.CoreV1Api):
    spec = load_spec()
    nodes = core.list_node().items
    ready = [n for n in nodes if node_is_ready(n)]
    assert len(ready) >= 50
    assert len(ready) == len(spec.nodes()) == cluster.nodes
    gpu_nodes = [n for n in nodes if n.metadata.labels.get(POOL_LABEL) == "gpu"]
    assert len(gpu_nodes) == spec.count("gpu")
    assert all(n.status.allocatable[GPU_RESOURCE] == "8" for n in gpu_nodes)
    standby = [n for n in nodes if n.metadata.labels.get(POOL_LABEL) == "standby"]
    assert standby and all(n.spec.unschedulable for n in standby)


def test_gpu_pods_land_only_on_gpu_nodes_and_run(
    core: client.CoreV1Api, apps: client.AppsV1Api, namespace: str
):
    labels = {"app": "trainer"}
    apps.create_namespaced_deployment(
        namespace,
        {
            "metadata": {"name": "trainer"},
            "spec": {
                "replicas": 6,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "containers": [
                            {
                                "name": "train",
                                "image": "trainer:fake",
                                "resources": {"limits": {GPU_RESOURCE: "8"}},
                            }
                        ]
                    },
                },
            },
        },
    )

    def running() -> list[client.V1Pod]:
        pods = core.list_namespaced_pod(namespace, label_selector="app=trainer").items
        ok = [p for p in pods if p.status.phase == "Running"]
        return ok if len(ok) == 6 else []

    pods = eventually(running, 60, "6 GPU pods Running")
    assert isinstance(pods, list)
    node_pools = {
        p.spec.node_name: core.read_node(p.spec.node_name).metadata.labels[POOL_LABEL] for p in pods
    }
    assert set(node_pools.values()) == {"gpu"}
    # 8 GPUs per pod on 8-GPU nodes: one pod per node
    assert len(node_pools) == 6


def test_service_name_resolves_through_coredns_to_its_cluster_ip(
    cluster: ClusterState, core: client.CoreV1Api, namespace: str
):
    svc = core.create_namespaced_service(
        namespace,
        {
            "metadata": {"name": "inference"},
            "spec": {"selector": {"app": "x"}, "ports": [{"port": 80}]},
        },
    )
    r = resolver(cluster)
    name = f"inference.{namespace}.svc.cluster.local"

    def answer() -> list[str]:
        try:
            return [a.to_text() for a in r.resolve(name, "A")]
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer, dns.exception.Timeout):
            return []

    assert eventually(answer, 20, f"{name} to resolve") == [svc.spec.cluster_ip]


def test_headless_service_resolves_to_its_ready_endpoints(
    cluster: ClusterState, core: client.CoreV1Api, apps: client.AppsV1Api, namespace: str
):
    labels = {"app": "workers"}
    apps.create_namespaced_deployment(
        namespace,
        {
            "metadata": {"name": "workers"},
            "spec": {
                "replicas": 3,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {"containers": [{"name": "w", "image": "worker:fake"}]},
                },
            },
        },
    )
    core.create_namespaced_service(
        namespace,
        {
            "metadata": {"name": "workers"},
            "spec": {"clusterIP": "None", "selector": labels, "ports": [{"port": 7000}]},
        },
    )

    def pod_ips() -> set[str]:
        pods = core.list_namespaced_pod(namespace, label_selector="app=workers").items
        ips = {p.status.pod_ip for p in pods if p.status.phase == "Running" and p.status.pod_ip}
        return ips if len(ips) == 3 else set()

    ips = eventually(pod_ips, 60, "3 worker pods Running with IPs")
    r = resolver(cluster)
    name = f"workers.{namespace}.svc.cluster.local"

    def answer() -> set[str]:
        try:
            got = {a.to_text() for a in r.resolve(name, "A")}
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer, dns.exception.Timeout):
            return set()
        return got if got == ips else set()

    assert eventually(answer, 30, f"{name} to resolve to the pod IPs {ips}") == ips


def test_prometheus_scrapes_the_apiserver_request_counter(cluster: ClusterState):
    prom = PrometheusConnect(url=cluster.prometheus_url, disable_ssl=True)

    def samples() -> list[dict[str, object]]:
        result: list[dict[str, object]] = prom.custom_query(
            'sum by (verb) (apiserver_request_total{job="kube-apiserver"})'
        )
        return result

    result = eventually(samples, 40, "apiserver_request_total in Prometheus", interval=2)
    assert isinstance(result, list)
    verbs = {r["metric"]["verb"] for r in result}  # type: ignore[index]
    assert "LIST" in verbs or "GET" in verbs
    assert sum(float(r["value"][1]) for r in result) > 0  # type: ignore[index]


def test_prometheus_scrapes_coredns_and_every_control_plane_component(cluster: ClusterState):
    prom = PrometheusConnect(url=cluster.prometheus_url, disable_ssl=True)
    wanted = {"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "coredns"}

    def up_jobs() -> set[str]:
        jobs = {r["metric"]["job"] for r in prom.custom_query("up == 1")}
        return jobs if wanted <= jobs else set()

    assert wanted <= eventually(up_jobs, 40, f"targets {wanted} up", interval=2)  # type: ignore[operator]
