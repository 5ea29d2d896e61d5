"""The telemetry storm as the incident had it: the DaemonSet's own pods make the calls.

On a local cluster the telemetry DaemonSet's pods are KWOK's and run nothing, so
the storm's clients run in this process (:mod:`blackstart.actions._storm`). On
kind, and on a cluster of your own, the pods are real: each runs
:mod:`blackstart.telemetry_agent` (from the rescue agent's image, which carries
it) as the ServiceAccount ``blackstart-telemetry/telemetry-agent``, a non-admin
identity allowed to list what it lists and nothing else. Deleting the DaemonSet,
the incident's rollback, ends the storm; each pod also stops calling by itself
at the storm's end.

The pods write their figures to ``/var/log/blackstart/telemetry/<storm>.json``
on their node (a hostPath): on kind they are read from the node containers,
which needs no API server (the storm may have taken it down) and outlives the
pods; on another cluster from the pods' logs, while the pods exist.
"""

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from chaoslib.exceptions import ActivityFailed
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from blackstart.actions._checks import number
from blackstart.actions._storm import latency_summary
from blackstart.clusters.provider import ClusterError
from blackstart.health import utc_now_iso
from blackstart.rescue.image import image_tag
from blackstart.rescue.pacing import is_retryable_status
from blackstart.target import Target, cluster_provider
from blackstart.telemetry_agent import MAX_AGENTS, MAX_DURATION_S, MAX_RATE, PATHS

log = logging.getLogger(__name__)

FIGURES_DIR = "/var/log/blackstart/telemetry"
SERVICE_ACCOUNT = "telemetry-agent"
CONTROL_PLANE_LABEL = "node-role.kubernetes.io/control-plane"
CLUSTER_ROLE = "blackstart:telemetry-agent"
#: a staged roll-out's pods go to the nodes labelled with their storm's id, stage by stage
STAGE_LABEL = "blackstart.dev/telemetry-stage"
#: the configuration key naming the image the pods run (default: the rescue agent's)
IMAGE_KEY = "telemetry_image"
_NOT_PULLED = ("ErrImageNeverPull", "ImagePullBackOff", "ErrImagePull", "InvalidImageName")


class ImageNotPulled(ActivityFailed):  # type: ignore[misc]  # chaoslib is untyped
    """A telemetry pod cannot start: its nodes do not have (or cannot pull) the image."""


@dataclass
class PodStorm:
    """One storm the telemetry pods make, started by this process."""

    id: str
    target: Target
    pods_expected: int
    settings: dict[str, Any]
    started_at: float = field(default_factory=time.monotonic)
    started_wall: str = field(default_factory=utc_now_iso)
    ended_wall: str | None = None
    last_figures: dict[str, dict[str, Any]] = field(default_factory=dict)  # node -> figures
    staged_nodes: list[str] = field(default_factory=list)  # labelled by a staged roll-out


_storms: dict[str, PodStorm] = {}
_lock = threading.Lock()


def runs_in_pods(target: Target) -> bool:
    """Whether the telemetry DaemonSet's pods are real (any cluster but a local one)."""
    return target.provider != "local"


def latest() -> PodStorm | None:
    with _lock:
        return next(reversed(_storms.values())) if _storms else None


def find(storm_id: str) -> PodStorm | None:
    with _lock:
        return _storms.get(storm_id)


def rbac_bodies(namespace: str) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """The agents' identity: a ServiceAccount that may list what they list, and no more."""
    core = sorted(n for n, p in PATHS.items() if p.startswith("/api/v1/"))
    account = {"metadata": {"name": SERVICE_ACCOUNT, "namespace": namespace}}
    role = {
        "metadata": {"name": CLUSTER_ROLE},
        "rules": [
            {"apiGroups": [""], "resources": core, "verbs": ["list"]},
            {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list"]},
        ],
    }
    binding = {
        "metadata": {"name": CLUSTER_ROLE},
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": CLUSTER_ROLE,
        },
        "subjects": [{"kind": "ServiceAccount", "name": SERVICE_ACCOUNT, "namespace": namespace}],
    }
    return account, role, binding


def agent_arguments(storm_id: str, settings: dict[str, Any]) -> list[str]:
    """The command line of :mod:`blackstart.telemetry_agent` in each pod."""
    return [
        "python3",
        "-m",
        "blackstart.telemetry_agent",
        "--storm-id",
        storm_id,
        "--resources",
        ",".join(settings["resources"]),
        "--rate",
        f"{settings['rate_per_client']:g}",
        "--agents",
        str(settings["agents_per_pod"]),
        "--duration",
        f"{settings['duration_s']:g}",
        "--until",
        f"{settings['until']:.0f}",
        "--timeout",
        f"{settings['request_timeout_s']:g}",
        "--figures",
        f"{FIGURES_DIR}/{storm_id}.json",
    ]


def pods_daemonset_body(
    base: dict[str, Any],
    image: str,
    storm_id: str,
    settings: dict[str, Any],
    pull_policy: str = "IfNotPresent",
    staged: bool = False,
) -> dict[str, Any]:
    """``base`` (the service's DaemonSet) with pods that run the telemetry agent.

    ``pull_policy``: ``Never`` on kind, whose nodes have the images blackstart loaded
    and must never reach out for one; ``IfNotPresent`` elsewhere (your registry).
    ``staged``: the pods go only to the nodes a staged roll-out labelled for this storm
    (:data:`STAGE_LABEL`), so the roll-out grows and shrinks by labelling nodes."""
    body: dict[str, Any] = json.loads(json.dumps(base))
    spec = body["spec"]["template"]["spec"]
    body["metadata"].setdefault("annotations", {})["blackstart.dev/storm-id"] = storm_id
    field_env = [
        {"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}}
        for name, path in (("NODE_NAME", "spec.nodeName"), ("POD_NAME", "metadata.name"))
    ]
    spec["serviceAccountName"] = SERVICE_ACCOUNT
    if staged:
        spec["nodeSelector"] = {STAGE_LABEL: storm_id}
    # every node that runs workloads, as in the incident; not a control plane's own node
    # (a managed control plane has none, and kind's has none of blackstart's images)
    not_control_plane = {"key": CONTROL_PLANE_LABEL, "operator": "DoesNotExist"}
    spec["affinity"] = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": [not_control_plane]}]
            }
        }
    }
    spec["containers"] = [
        {
            "name": "agent",
            "image": image,
            "imagePullPolicy": pull_policy,
            "command": agent_arguments(storm_id, settings),
            "env": field_env,
            "resources": {
                "requests": {"cpu": "10m", "memory": "32Mi"},
                "limits": {"memory": "256Mi"},
            },
            "volumeMounts": [{"name": "figures", "mountPath": FIGURES_DIR}],
        }
    ]
    spec["volumes"] = [
        {"name": "figures", "hostPath": {"path": FIGURES_DIR, "type": "DirectoryOrCreate"}}
    ]
    return body


def storm_settings(
    rate_per_client: float,
    resources: list[str] | None,
    agents_per_pod: int,
    duration_s: float,
    request_timeout_s: float,
) -> dict[str, Any]:
    """The pods' storm as the roll-out actions' arguments give it (checked by
    :func:`check_settings`)."""
    return {
        "rate_per_client": rate_per_client,
        "resources": list(resources or ["pods"]),
        "agents_per_pod": agents_per_pod,
        "duration_s": duration_s,
        "request_timeout_s": request_timeout_s,
    }


def check_settings(settings: dict[str, Any]) -> None:
    """Bounds of the pods' storm, named in the error (the agents check them again)."""
    number("rate_per_client", settings["rate_per_client"], 0.01, MAX_RATE)
    number("agents_per_pod", settings["agents_per_pod"], 1, MAX_AGENTS, integer=True)
    number("duration_s", settings["duration_s"], 1, MAX_DURATION_S)
    number("request_timeout_s", settings["request_timeout_s"], 0.5, 120)
    unknown = [r for r in settings["resources"] if r not in PATHS]
    if unknown or not settings["resources"]:
        raise ActivityFailed(
            f"resources must name one or more of {', '.join(PATHS)}; unknown: "
            f"{', '.join(map(str, unknown)) or '(none given)'}"
        )


def ensure_identity(api: client.ApiClient, namespace: str) -> None:
    """Create the agents' ServiceAccount, ClusterRole and binding (those there are kept)."""
    account, role, binding = rbac_bodies(namespace)
    rbac = client.RbacAuthorizationV1Api(api)
    creates: tuple[tuple[Callable[[Any], object], dict[str, Any]], ...] = (
        (lambda b: client.CoreV1Api(api).create_namespaced_service_account(namespace, b), account),
        (rbac.create_cluster_role, role),
        (rbac.create_cluster_role_binding, binding),
    )
    for create, body in creates:
        try:
            create(body)
        except ApiException as err:
            if err.status != 409:
                raise ActivityFailed(
                    f"creating the telemetry agents' identity ({body['metadata']['name']}) "
                    f"failed: {err.reason}"
                ) from err


def remove_identity(api: client.ApiClient) -> None:
    """Delete the ClusterRole and its binding (the ServiceAccount goes with the namespace)."""
    rbac = client.RbacAuthorizationV1Api(api)
    for delete in (rbac.delete_cluster_role_binding, rbac.delete_cluster_role):
        try:
            delete(CLUSTER_ROLE)
        except ApiException as err:
            if err.status != 404:
                raise


def rollout_order(core: client.CoreV1Api) -> list[str]:
    """The nodes the pods go to, in a staged roll-out's order (by name): all but a control
    plane's."""
    items = core.list_node(label_selector=f"!{CONTROL_PLANE_LABEL}").items
    return sorted(str(node.metadata.name) for node in items if node.metadata)


def label_stage(
    core: client.CoreV1Api, nodes: list[str], storm_id: str | None, timeout_s: float = 30.0
) -> list[str]:
    """Put the stage label of ``storm_id`` on ``nodes`` (None: take it off); the DaemonSet's
    pods follow. A PATCH the API server may take later (no answer, 429, 5xx: it may be
    struggling, and that is when a halt happens) is tried again until ``timeout_s``; one
    it refused for good (403, 400, 422...) is not. Returns the nodes it could not change."""
    patch = {"metadata": {"labels": {STAGE_LABEL: storm_id}}}
    deadline = time.monotonic() + timeout_s
    failed = []
    for node in nodes:
        while True:
            try:
                core.patch_node(node, patch, _request_timeout=5)
                break
            except ApiException as err:
                if err.status == 404:  # the node is gone: nothing to label
                    break
                may_pass_later = err.status == 0 or is_retryable_status(err.status)
                if not may_pass_later or time.monotonic() > deadline:
                    log.warning("labelling node %s failed: %s %s", node, err.status, err.reason)
                    failed.append(node)
                    break
            except Exception:  # no answer at all
                if time.monotonic() > deadline:
                    failed.append(node)
                    break
            time.sleep(0.5)
    return failed


def image_for(configuration: dict[str, Any] | None) -> str:
    chosen = (configuration or {}).get(IMAGE_KEY)
    return str(chosen) if chosen else image_tag("agent")


def new_storm(target: Target, pods_expected: int, settings: dict[str, Any]) -> PodStorm:
    storm = PodStorm(f"storm-{uuid.uuid4().hex[:8]}", target, pods_expected, settings)
    with _lock:
        _storms[storm.id] = storm
    return storm


def forget(storm: PodStorm) -> None:
    """Drop a storm whose roll-out failed (its DaemonSet deleted)."""
    with _lock:
        _storms.pop(storm.id, None)


def wait_until_calling(
    core: client.CoreV1Api, namespace: str, selector: str, storm: PodStorm, timeout_s: float
) -> int:
    """Wait until every expected pod runs; fail naming an image the nodes do not have.

    The storm may take the API server down before every pod's status reaches it (on
    a small control plane it does, within seconds): while the API server does not
    answer, a pod counts as calling once its figures are on its node, read through
    the engine (a cluster blackstart made). Returns how many pods run or call.
    """
    deadline = time.monotonic() + timeout_s
    running = 0
    while True:
        listed = _list_pods(core, namespace, selector)
        pods = listed if isinstance(listed, list) else []
        running = sum(1 for p in pods if p.status and p.status.phase == "Running")
        for pod in pods:
            for status in (pod.status.container_statuses or []) if pod.status else []:
                waiting = status.state.waiting if status.state else None
                if waiting and waiting.reason in _NOT_PULLED:
                    raise ImageNotPulled(
                        f"telemetry pod {_name(pod)} cannot start: {waiting.reason} for "
                        f"image {status.image}. Load it into the cluster's nodes (blackstart "
                        f"rescue image --kind-cluster NAME), or set the configuration key "
                        f"{IMAGE_KEY!r} to an image they can pull"
                    )
        if isinstance(listed, str):
            running = max(running, _calling_by_their_figures(storm))
        if running >= storm.pods_expected:
            return running
        if time.monotonic() > deadline:
            unanswered = (
                f" (the API server's last answer: {listed})" if isinstance(listed, str) else ""
            )
            raise ActivityFailed(
                f"{running} of {storm.pods_expected} telemetry pods running after "
                f"{timeout_s:g} s{unanswered}"
            )
        time.sleep(1.0)


def _list_pods(core: client.CoreV1Api, namespace: str, selector: str) -> list[Any] | str:
    """The storm's pods, or why the API server gave none: down or overloaded (the storm),
    or refusing for a moment (a restarted API server answers 403 until its authorizer's
    caches have synced)."""
    try:
        return list(
            core.list_namespaced_pod(namespace, label_selector=selector, _request_timeout=10).items
        )
    except ApiException as err:
        return f"HTTP {err.status} {err.reason}"
    except (HTTPError, OSError) as err:  # refused, reset, timed out
        return type(err).__name__


def _calling_by_their_figures(storm: PodStorm) -> int:
    """Pods whose figures for this storm are on their nodes (0 where nodes cannot be read)."""
    if storm.target.state is None:
        return 0
    try:
        return len(read_figures(storm))
    except (ClusterError, ActivityFailed):
        return 0


def read_figures(storm: PodStorm) -> dict[str, dict[str, Any]]:
    """Each pod's latest figures, by node: from the node containers on kind, else pod logs."""
    found: dict[str, dict[str, Any]] = {}
    target = storm.target
    if target.state is not None:  # a cluster blackstart made: from its nodes
        provider = cluster_provider(target, "reading the telemetry pods' figures")
        texts = provider.read_node_files(target.state.name, f"{FIGURES_DIR}/{storm.id}.json")
        for node, text in texts.items():
            try:
                found[node] = json.loads(text)
            except ValueError:  # caught mid-write: the file is replaced whole, try next time
                continue
    else:
        found = _figures_from_logs(target, storm.id)
    with _lock:
        storm.last_figures.update(found)
        return dict(storm.last_figures)


def _figures_from_logs(target: Target, storm_id: str) -> dict[str, dict[str, Any]]:
    from blackstart.actions.rollout import NAMESPACE, SERVICE_LABEL

    core = client.CoreV1Api(target.api())
    found: dict[str, dict[str, Any]] = {}
    try:
        pods = core.list_namespaced_pod(NAMESPACE, label_selector=f"{SERVICE_LABEL}=true").items
        for pod in pods:
            log = core.read_namespaced_pod_log(_name(pod), NAMESPACE, tail_lines=5)
            for line in reversed(log.splitlines()):
                if storm_id in line:
                    figures = json.loads(line)
                    found[str(figures.get("node") or _name(pod))] = figures
                    break
    except (ApiException, ValueError, OSError):  # the API server may not answer
        pass
    return found


def report(storm: PodStorm, figures: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The pods' figures summed, in the shape of the local storm's report."""
    pods = list(figures.values())
    latencies = [x for f in pods for x in f.get("latencies", [])]
    requests = sum(int(f.get("requests", 0)) for f in pods)
    kinds: dict[str, int] = {}
    for f in pods:
        for kind, n in (f.get("error_kinds") or {}).items():
            kinds[kind] = kinds.get(kind, 0) + int(n)
    elapsed = max((float(f.get("elapsed_s", 0.0)) for f in pods), default=0.0)
    running = any(f.get("state") == "running" for f in pods)
    s = storm.settings
    clients = storm.pods_expected * s["agents_per_pod"]
    state = "stopped" if storm.ended_wall else "running" if running else "finished"
    return {
        "storm_id": storm.id,
        "cluster": storm.target.cluster,
        "where": "pods",
        "state": state,
        "started_at": storm.started_wall,
        "ended_at": storm.ended_wall,
        "elapsed_s": round(elapsed, 3),
        "pods": storm.pods_expected,
        "pods_reporting": len(pods),
        "clients": clients,
        "rate_per_client": s["rate_per_client"],
        "target_rps": round(clients * s["rate_per_client"] * len(s["resources"]), 3),
        "duration_s": s["duration_s"],
        "resources": list(s["resources"]),
        "requests": requests,
        "ok": sum(int(f.get("ok", 0)) for f in pods),
        "throttled_429": sum(int(f.get("throttled_429", 0)) for f in pods),
        "errors": sum(int(f.get("errors", 0)) for f in pods),
        "error_kinds": kinds,
        "achieved_rps": round(requests / elapsed, 3) if elapsed > 0 else 0.0,
        "bytes_read": sum(int(f.get("bytes_read", 0)) for f in pods),
        "latency_s": latency_summary(latencies),
        "client_cpu_s": round(sum(float(f.get("client_cpu_s", 0.0)) for f in pods), 3),
    }


def _name(pod: client.V1Pod) -> str:
    return str(pod.metadata.name) if pod.metadata else ""
