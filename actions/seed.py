"""Seed the cluster with objects so that cluster-wide LISTs cost what they cost on a big fleet.

A fresh 60-node cluster holds a few dozen pods: listing them is cheap, and a
telemetry storm against it proves nothing. :func:`seed_objects` creates
thousands of KWOK pods (bound to the CPU nodes, never requesting GPUs, each
with an annotation payload) and ConfigMaps with a data payload, all in one
namespace labelled ``blackstart.dev/seeded=true``. :func:`remove_seeded_objects`
(the rollback) deletes them and waits until they are gone.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

import urllib3
from chaoslib.exceptions import ActivityFailed
from chaoslib.types import Configuration, Secrets
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from blackstart.arguments import whole_number as _whole
from blackstart.health import apiserver_readyz, wait_until
from blackstart.kube import namespace_gone
from blackstart.target import resolve_target

__all__ = ["remove_seeded_objects", "seed_objects"]

SEEDED_LABEL = "blackstart.dev/seeded"
DEFAULT_NAMESPACE = "blackstart-seed"
PAYLOAD_ANNOTATION = "blackstart.dev/payload"
MAX_PODS = 20000
MAX_CONFIGMAPS = 5000
MAX_PAYLOAD_KIB = 200  # annotations of one object may total 256 KiB
PAUSE_IMAGE = "registry.k8s.io/pause:3.10"


def _pod(name: str, node: str, payload: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "labels": {SEEDED_LABEL: "true", "app": "blackstart-seed"},
            "annotations": {PAYLOAD_ANNOTATION: payload},
        },
        "spec": {
            "nodeName": node,
            "containers": [{"name": "seed", "image": PAUSE_IMAGE}],
            "tolerations": [{"operator": "Exists"}],
            "terminationGracePeriodSeconds": 0,
        },
    }


def _configmap(name: str, payload: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "labels": {SEEDED_LABEL: "true"}},
        "data": {"payload": payload},
    }


def seed_objects(
    pods: int = 2000,
    configmaps: int = 200,
    payload_kib: int = 4,
    namespace: str = DEFAULT_NAMESPACE,
    node_selector: str = "blackstart.dev/role=cpu",
    workers: int = 8,
    timeout_s: float = 300.0,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> dict[str, Any]:
    """Create ``pods`` KWOK pods and ``configmaps`` ConfigMaps, each carrying ``payload_kib`` KiB.

    Pods are bound directly (``spec.nodeName``) round-robin to the nodes
    matching ``node_selector`` (default the CPU pool, so GPU capacity is
    untouched); KWOK marks them Running. Everything goes into ``namespace``
    (created, labelled ``blackstart.dev/seeded=true``). ``workers`` parallel
    creators (1-32). Returns ``{"namespace", "pods", "configmaps",
    "payload_kib", "seconds"}``. Raises when the namespace already exists
    (remove it first), when no node matches, or when creation does not finish
    within ``timeout_s``. Roll back with ``remove_seeded_objects``.
    """
    _whole("pods", pods, 0, MAX_PODS)
    _whole("configmaps", configmaps, 0, MAX_CONFIGMAPS)
    _whole("payload_kib", payload_kib, 0, MAX_PAYLOAD_KIB)
    _whole("workers", workers, 1, 32)
    if not namespace:
        raise ActivityFailed("namespace must not be empty")
    target = resolve_target(configuration, secrets)
    core = client.CoreV1Api(target.api(pool_size=workers))
    listed: list[Any] = core.list_node(label_selector=node_selector).items
    nodes = [str(n.metadata.name) for n in listed]
    if pods and not nodes:
        raise ActivityFailed(
            f"no node matches node_selector {node_selector!r}: nowhere to seed pods"
        )
    try:
        core.create_namespace(
            {  # type: ignore[arg-type]
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {"name": namespace, "labels": {SEEDED_LABEL: "true"}},
            }
        )
    except ApiException as err:
        if err.status == 409:
            raise ActivityFailed(
                f"namespace {namespace} already exists: remove it (remove_seeded_objects) "
                "or seed into another namespace"
            ) from err
        raise ActivityFailed(
            f"creating namespace {namespace} failed: {err.status} {err.reason}"
        ) from err
    payload = "x" * (payload_kib * 1024)
    started = time.monotonic()
    deadline = started + timeout_s

    def create(job: tuple[str, int]) -> None:
        kind, index = job
        if time.monotonic() > deadline:
            raise TimeoutError(f"seeding did not finish within {timeout_s:g} s")
        for attempt in range(8):
            try:
                if kind == "pod":
                    body = _pod(f"seed-{index:05d}", nodes[index % len(nodes)], payload)
                    core.create_namespaced_pod(namespace, body)  # type: ignore[arg-type]
                else:
                    body = _configmap(f"seed-{index:05d}", payload)
                    core.create_namespaced_config_map(namespace, body)  # type: ignore[arg-type]
                return
            except ApiException as err:
                if err.status == 409:
                    return
                # 403 "serviceaccount default not found": the namespace is seconds old and its
                # service account controller has not caught up yet
                no_account = err.status == 403 and "serviceaccount" in str(err.body)
                if (err.status in (429, 500, 503, 504) or no_account) and attempt < 7:
                    time.sleep(min(2.0, 0.2 * 2**attempt))
                    continue
                raise

    jobs = [("pod", i) for i in range(pods)] + [("configmap", i) for i in range(configmaps)]
    try:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(create, jobs))
    except Exception as err:
        raise ActivityFailed(
            f"seeding {namespace} failed after {time.monotonic() - started:.1f} s: {err}; "
            "run remove_seeded_objects to clean up"
        ) from err
    return {
        "namespace": namespace,
        "pods": pods,
        "configmaps": configmaps,
        "payload_kib": payload_kib,
        "nodes": len(nodes),
        "seconds": round(time.monotonic() - started, 2),
    }


def _remove_namespaces(
    core: client.CoreV1Api, namespace: str, started: float, timeout_s: float
) -> list[str]:
    """Delete the seeded namespaces' pods, ConfigMaps and the namespaces; wait until gone."""
    if namespace:
        names = [namespace]
    else:
        namespaces: list[Any] = core.list_namespace(label_selector=f"{SEEDED_LABEL}=true").items
        names = [str(n.metadata.name) for n in namespaces]
    removed = []
    for name in names:
        try:
            core.delete_collection_namespaced_pod(name, grace_period_seconds=0)
            core.delete_collection_namespaced_config_map(name)
            core.delete_namespace(name)
            removed.append(name)
        except ApiException as err:
            if err.status == 409:  # already terminating (an earlier try deleted it): wait for it
                removed.append(name)
            elif err.status != 404:
                raise
    for name in removed:
        left = max(0.0, timeout_s - (time.monotonic() - started))
        if not wait_until(partial(namespace_gone, core, name), left, 0.5, (ApiException,))[0]:
            raise ActivityFailed(
                f"namespace {name} still exists {timeout_s:g} s after it was deleted; "
                f"check `kubectl get ns {name} -o yaml` for stuck finalizers"
            )
    return removed


def remove_seeded_objects(
    namespace: str = "",
    timeout_s: float = 180.0,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> dict[str, Any]:
    """Delete seeded objects and wait until their namespaces are gone (the rollback of seeding).

    ``namespace``: one namespace to remove; empty removes every namespace
    labelled ``blackstart.dev/seeded=true``. Pods are deleted at once (grace
    period 0). Safe when nothing is seeded: returns ``{"removed": []}``.
    Raises when a namespace still exists after ``timeout_s`` seconds. An API
    server that is still coming back (after a storm, say) gets up to
    ``timeout_s`` to answer.
    """
    target = resolve_target(configuration, secrets)
    core = client.CoreV1Api(target.api())
    started = time.monotonic()
    while True:  # an API server that goes away meanwhile (OOM-killed, restarting) is waited for
        try:
            removed = _remove_namespaces(core, namespace, started, timeout_s)
            break
        except (ApiException, urllib3.exceptions.HTTPError) as err:
            status = getattr(err, "status", None)
            if isinstance(err, ApiException) and status not in (429, 500, 503, 504):
                raise ActivityFailed(f"removing seeded objects failed: {status} {err}") from err
            if time.monotonic() - started > timeout_s:
                raise ActivityFailed(
                    f"the API server of {target.describe()} did not take the deletions within "
                    f"{timeout_s:g} s ({type(err).__name__}); the seeded objects are still there"
                ) from err
            wait_until(lambda: apiserver_readyz(target.api(1), 2.0)[0], 30.0, 1.0)
    return {"removed": removed, "seconds": round(time.monotonic() - started, 2)}
