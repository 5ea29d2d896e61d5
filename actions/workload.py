"""A GPU workload to remediate around: a Deployment of GPU pods with a PodDisruptionBudget.

What drain has to respect on a real fleet: :func:`deploy_gpu_workload` creates,
in its own namespace, a Deployment whose pods each request whole GPU nodes'
worth of ``nvidia.com/gpu`` (KWOK runs them on the simulated GPU nodes) and a
PodDisruptionBudget, and waits until every replica runs.
:func:`remove_gpu_workload` (the rollback) deletes the namespace.
"""

import time
from typing import Any

from chaoslib.exceptions import ActivityFailed
from chaoslib.types import Configuration, Secrets
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from blackstart.arguments import whole_number as _whole
from blackstart.clusters.spec import GPU_RESOURCE
from blackstart.health import wait_until
from blackstart.kube import namespace_gone
from blackstart.target import resolve_target

__all__ = ["deploy_gpu_workload", "remove_gpu_workload"]

WORKLOAD_LABEL = "blackstart.dev/workload"
PAUSE_IMAGE = "registry.k8s.io/pause:3.10"


def deployment_body(
    name: str, replicas: int, gpus: int, node_selector: dict[str, str]
) -> dict[str, Any]:
    labels = {"app": name, WORKLOAD_LABEL: "true"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "nodeSelector": node_selector,
                    "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists"}],
                    "terminationGracePeriodSeconds": 1,
                    "containers": [
                        {
                            "name": "train",
                            "image": PAUSE_IMAGE,
                            "resources": {
                                "requests": {GPU_RESOURCE: str(gpus)},
                                "limits": {GPU_RESOURCE: str(gpus)},
                            },
                        }
                    ],
                },
            },
        },
    }


def pdb_body(name: str, max_unavailable: int) -> dict[str, Any]:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": name},
        "spec": {"maxUnavailable": max_unavailable, "selector": {"matchLabels": {"app": name}}},
    }


def deploy_gpu_workload(
    name: str = "gpu-train",
    namespace: str = "blackstart-workload",
    replicas: int = 4,
    gpus_per_pod: int = 8,
    max_unavailable: int = 1,
    node_selector: dict[str, str] | None = None,
    timeout_s: float = 60.0,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> dict[str, Any]:
    """Run ``replicas`` pods requesting ``gpus_per_pod`` GPUs each, with a PodDisruptionBudget.

    ``max_unavailable``: the PDB's ``maxUnavailable`` (a drain may evict this
    many pods at once). ``node_selector``: where the pods may run (default
    the GPU pool, ``blackstart.dev/role: gpu``). Creates ``namespace`` (it
    must not exist), waits until every replica is Running and returns
    ``{"namespace", "name", "replicas", "nodes": [...]}``. Roll back with
    ``remove_gpu_workload``.
    """
    _whole("replicas", replicas, 1, 1000)
    _whole("gpus_per_pod", gpus_per_pod, 1, 64)
    _whole("max_unavailable", max_unavailable, 0, 1000)
    selector = node_selector or {"blackstart.dev/role": "gpu"}
    target = resolve_target(configuration, secrets)
    api = target.api()
    core, apps, policy = client.CoreV1Api(api), client.AppsV1Api(api), client.PolicyV1Api(api)
    try:
        core.create_namespace(
            {  # type: ignore[arg-type]
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {"name": namespace, "labels": {WORKLOAD_LABEL: "true"}},
            }
        )
    except ApiException as err:
        if err.status == 409:
            raise ActivityFailed(
                f"namespace {namespace} already exists: remove it (remove_gpu_workload) first"
            ) from err
        raise ActivityFailed(f"creating namespace {namespace}: {err.status} {err.reason}") from err
    try:
        policy.create_namespaced_pod_disruption_budget(namespace, pdb_body(name, max_unavailable))  # type: ignore[arg-type]
        apps.create_namespaced_deployment(
            namespace,
            deployment_body(name, replicas, gpus_per_pod, selector),  # type: ignore[arg-type]
        )
    except ApiException as err:
        raise ActivityFailed(f"creating the workload {name}: {err.status} {err.body}") from err
    deadline = time.monotonic() + timeout_s
    while True:
        pods: list[Any] = core.list_namespaced_pod(namespace, label_selector=f"app={name}").items
        running = [
            p for p in pods if p.status.phase == "Running" and not p.metadata.deletion_timestamp
        ]
        if len(running) >= replicas:
            return {
                "namespace": namespace,
                "name": name,
                "replicas": replicas,
                "nodes": sorted(p.spec.node_name for p in running),
            }
        if time.monotonic() > deadline:
            raise ActivityFailed(
                f"only {len(running)} of {replicas} pods of {name} run after {timeout_s:g} s; "
                f"are there {replicas} schedulable nodes with {gpus_per_pod} free GPUs?"
            )
        time.sleep(0.5)


def remove_gpu_workload(
    namespace: str = "blackstart-workload",
    timeout_s: float = 60.0,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> dict[str, Any]:
    """Delete the workload's namespace and wait until it is gone; safe when it does not exist."""
    core = client.CoreV1Api(resolve_target(configuration, secrets).api())
    started = time.monotonic()
    try:
        core.delete_collection_namespaced_pod(namespace, grace_period_seconds=0)
        core.delete_namespace(namespace)
    except ApiException as err:
        if err.status == 404:
            return {"namespace": namespace, "deleted": False}
        raise ActivityFailed(f"deleting namespace {namespace}: {err.status} {err.reason}") from err
    gone = wait_until(lambda: namespace_gone(core, namespace), timeout_s, 0.5, (ApiException,))
    if not gone[0]:
        raise ActivityFailed(f"namespace {namespace} still exists after {timeout_s:g} s")
    return {
        "namespace": namespace,
        "deleted": True,
        "seconds": round(time.monotonic() - started, 2),
    }
