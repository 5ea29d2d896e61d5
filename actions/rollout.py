"""The telemetry service of the December 2024 incident: rolled out, staged, rolled back.

The service is what it was: a DaemonSet, ``telemetry-agent`` in namespace
``blackstart-telemetry``, one agent per node; on a local cluster its pods are
KWOK's, and the calls each agent makes are the telemetry storm's clients (see
:mod:`blackstart.actions.telemetry_storm`), one per node.

- :func:`deploy_telemetry_service`: the incident's roll-out, every node at once;
- :func:`roll_out_telemetry_service`: the fix, a staged roll-out (1 %, 10 %,
  50 %, 100 % of the nodes) that halts itself when the API server's p99 or
  its 429s cross a limit, and says at which stage it stopped;
- :func:`remove_telemetry_service`: the rollback as an operator does it, as
  admin, retrying until the API server takes the DELETE: it returns how long
  that took and how many tries failed (the lockout), then the agents stop.
"""

import contextlib
import math
import time
from collections.abc import Iterator
from typing import Any

from chaoslib.exceptions import ActivityFailed
from chaoslib.types import Configuration, Secrets
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from blackstart.actions import _telemetry_pods as pods
from blackstart.actions import telemetry_storm as storm
from blackstart.actions._checks import number
from blackstart.actions._storm import MAX_THREADS
from blackstart.health import utc_now_iso
from blackstart.kube import api_client
from blackstart.probes.lockout import rollout_health
from blackstart.target import Target, resolve_target

__all__ = [
    "deploy_telemetry_service",
    "remove_telemetry_service",
    "roll_out_telemetry_service",
]

NAMESPACE = "blackstart-telemetry"
DAEMONSET = "telemetry-agent"
SERVICE_LABEL = "blackstart.dev/telemetry"
DEFAULT_STAGES = [1.0, 10.0, 50.0, 100.0]
STORM_DEFAULTS: dict[str, Any] = {"rate_per_client": 1.0, "resources": ["pods"], "threads": 48}


def daemonset_body(image: str = "registry.k8s.io/pause:3.10") -> dict[str, Any]:
    """The telemetry agent's DaemonSet: one pod per node, every taint tolerated."""
    labels = {"app": DAEMONSET, SERVICE_LABEL: "true"}
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": DAEMONSET, "namespace": NAMESPACE, "labels": labels},
        "spec": {
            "selector": {"matchLabels": {"app": DAEMONSET}},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [{"name": "agent", "image": image}],
                    "tolerations": [{"operator": "Exists"}],
                    "terminationGracePeriodSeconds": 0,
                },
            },
        },
    }


def stage_clients(nodes: int, percent: float) -> int:
    """Agents at a stage of ``percent`` % of ``nodes`` nodes: at least one, at most all."""
    return max(1, min(nodes, math.ceil(nodes * percent / 100)))


def ramp_steps(running: int, target: int, factor: float = 2.0) -> list[int]:
    """The agent counts a stage goes through from ``running`` to ``target``: each step at
    most ``factor`` times the one before (at least one more), as a DaemonSet's pods come
    up node by node rather than all at once, so the guard sees the load grow."""
    steps: list[int] = []
    current = running
    while (current := max(current + 1, math.ceil(current * factor))) < target:
        steps.append(current)
    return [*steps, target]


def _create_service(target: Target) -> int:
    """Create the namespace and the DaemonSet (as admin); returns the number of nodes."""
    api = target.api()
    nodes = _count_nodes(target, client.CoreV1Api(api))
    _create_namespace(client.CoreV1Api(api))
    _create_daemonset(client.AppsV1Api(api), daemonset_body())
    return nodes


def _count_nodes(target: Target, core: client.CoreV1Api, selector: str = "") -> int:
    nodes = len(core.list_node(label_selector=selector).items)
    if not nodes:
        raise ActivityFailed(f"{target.describe()} has no nodes: nowhere to roll the agent out")
    return nodes


def _create_namespace(core: client.CoreV1Api) -> None:
    deadline = time.monotonic() + 120.0
    while True:  # the namespace of an earlier roll-back may still be terminating
        try:
            core.create_namespace(
                {"metadata": {"name": NAMESPACE, "labels": {SERVICE_LABEL: "true"}}}  # type: ignore[arg-type]
            )
            return
        except ApiException as err:
            if err.status != 409:
                raise ActivityFailed(
                    f"creating namespace {NAMESPACE} failed: {err.reason}"
                ) from err
        status = core.read_namespace(NAMESPACE).status
        phase = status.phase if status else None
        if phase != "Terminating":
            return
        if time.monotonic() > deadline:
            raise ActivityFailed(f"namespace {NAMESPACE} is still terminating after 120 s")
        time.sleep(1.0)


def _create_daemonset(apps: client.AppsV1Api, body: dict[str, Any]) -> None:
    try:
        apps.create_namespaced_daemon_set(NAMESPACE, body)  # type: ignore[arg-type]
    except ApiException as err:
        if err.status == 409:
            raise ActivityFailed(
                f"the telemetry service already runs (DaemonSet {NAMESPACE}/{DAEMONSET}); "
                "remove it first with remove_telemetry_service"
            ) from err
        raise ActivityFailed(f"creating DaemonSet {DAEMONSET} failed: {err.reason}") from err


def _start_pods_daemonset(
    target: Target,
    api: client.ApiClient,
    settings: dict[str, Any],
    pods_expected: int,
    configuration: Configuration,
    staged: bool = False,
) -> tuple[pods.PodStorm, str]:
    """Create the namespace, the agents' identity and the DaemonSet whose pods make the
    calls; returns the storm they belong to and their image. ``staged``: its pods go only
    to the nodes a stage labels."""
    _create_namespace(client.CoreV1Api(api))
    pods.ensure_identity(api, NAMESPACE)
    image = pods.image_for(configuration)
    storm_ = pods.new_storm(target, pods_expected, settings)
    pull = "Never" if target.provider == "kind" else "IfNotPresent"
    body = pods.pods_daemonset_body(daemonset_body(), image, storm_.id, settings, pull, staged)
    _create_daemonset(client.AppsV1Api(api), body)
    return storm_, image


def _deploy_in_pods(
    target: Target, settings: dict[str, Any], ready_timeout_s: float, configuration: Configuration
) -> dict[str, Any]:
    """The roll-out where pods are real: the DaemonSet's pods make the calls (see
    :mod:`blackstart.actions._telemetry_pods`)."""
    pods.check_settings(settings)
    number("ready_timeout_s", ready_timeout_s, 1, 900)
    # the storm's end, whenever a pod starts: no pod calls after it
    settings["until"] = time.time() + settings["duration_s"] + ready_timeout_s
    api = target.api()
    core = client.CoreV1Api(api)
    # every taint tolerated: one pod on every node but a control plane's
    nodes = _count_nodes(target, core, f"!{pods.CONTROL_PLANE_LABEL}")
    storm_, image = _start_pods_daemonset(target, api, settings, nodes, configuration)
    try:
        running = pods.wait_until_calling(
            core, NAMESPACE, f"{SERVICE_LABEL}=true", storm_, ready_timeout_s
        )
    except Exception:
        _delete_daemonset(api, 10.0)
        pods.forget(storm_)
        raise
    return {
        "storm_id": storm_.id,
        "where": "pods",
        "daemonset": f"{NAMESPACE}/{DAEMONSET}",
        "nodes": nodes,
        "pods": running,
        "image": image,
        "identity": f"system:serviceaccount:{NAMESPACE}:{pods.SERVICE_ACCOUNT}",
        "started_at": storm_.started_wall,
        **{k: v for k, v in settings.items() if k != "until"},
    }


def deploy_telemetry_service(
    duration_s: float = 90.0,
    rate_per_client: float = 1.0,
    resources: list[str] | None = None,
    threads: int = 48,
    clients: int = 0,
    request_timeout_s: float = 15.0,
    agents_per_pod: int = 1,
    ready_timeout_s: float = 120.0,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> dict[str, Any]:
    """Roll the telemetry service out to every node at once, as in December 2024.

    Creates the DaemonSet ``blackstart-telemetry/telemetry-agent`` and starts
    its agents: one per node (or ``clients``), each LISTing ``resources``
    (default ``["pods"]``) cluster-wide ``rate_per_client`` times a second
    without resourceVersion, for ``duration_s`` seconds at most (the storm
    stops by itself). ``threads``: requests in flight at most (1-64);
    ``request_timeout_s``: how long an agent waits for one answer. Returns
    the storm's figures plus ``{"daemonset", "nodes"}``. Roll back with
    ``remove_telemetry_service``.

    On kind or a cluster of your own the pods are real and make the calls
    themselves, as the ServiceAccount ``telemetry-agent`` (one pod per node,
    each standing for ``agents_per_pod`` agents; ``threads`` and ``clients``
    do not apply), from the image of the configuration key ``telemetry_image``
    (default: the rescue agent's, which kind clusters with the rescue chart
    have). It returns once every pod runs (``ready_timeout_s``), with
    ``{"storm_id", "where": "pods", "pods", "image", "identity", ...}``.
    """
    target = resolve_target(configuration, secrets)
    if pods.runs_in_pods(target):
        settings = pods.storm_settings(
            rate_per_client, resources, agents_per_pod, duration_s, request_timeout_s
        )
        return _deploy_in_pods(target, settings, ready_timeout_s, configuration)
    nodes = _create_service(target)
    agents = clients or nodes
    try:
        result = storm.start_telemetry_storm(
            clients=agents,
            rate_per_client=rate_per_client,
            duration_s=duration_s,
            resources=resources or ["pods"],
            threads=threads,
            request_timeout_s=request_timeout_s,
            configuration=configuration,
            secrets=secrets,
        )
    except Exception:
        _delete_daemonset(target.api(), 10.0)
        raise
    return {**result, "daemonset": f"{NAMESPACE}/{DAEMONSET}", "nodes": nodes}


def _check_stages(stages: list[float]) -> list[float]:
    if not isinstance(stages, list) or not stages:
        raise ActivityFailed(f"stages must be a list of percentages such as [1, 10, 50, 100], "
                             f"not {stages!r}")  # fmt: skip
    values = []
    for value in stages:
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 100:
            raise ActivityFailed(
                f"each stage must be a percentage above 0 up to 100, not {value!r}"
            )
        values.append(float(value))
    if values != sorted(values):
        raise ActivityFailed(f"stages must grow, not {stages!r}")
    return values


def roll_out_telemetry_service(
    stages: list[float] | None = None,
    hold_s: float = 20.0,
    max_p99_s: float = 1.0,
    max_429_per_s: float = 5.0,
    rate_per_client: float = 1.0,
    resources: list[str] | None = None,
    duration_s: float = 300.0,
    check_every_s: float = 2.0,
    agents_per_pod: int = 1,
    request_timeout_s: float = 15.0,
    ready_timeout_s: float = 120.0,
    ramp_factor: float = 2.0,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> dict[str, Any]:
    """Roll the telemetry service out in stages and halt when the API server suffers.

    ``stages``: percentages of the nodes that run the agent, in order
    (default ``[1, 10, 50, 100]``). Each stage runs ``hold_s`` seconds while
    the guard (``blackstart.probes.lockout.rollout_health``), every
    ``check_every_s``, times small requests as a system identity and reads
    the API server's 429 rate: when
    the p99 is above ``max_p99_s`` or 429s above ``max_429_per_s`` per
    second, or the API server does not answer, the roll-out halts and goes
    back to the last healthy stage (none when the first one failed). A stage
    does not start its agents all at once: they come up in steps of at most
    ``ramp_factor`` times the agents running (:func:`ramp_steps`), one guard
    check after each, as a DaemonSet's pods come up node by node; a jump
    from 6 agents to 30 at once could take the API server down before the
    first check (measured on 2026-12-02: it did). (On kind a stage labels
    its nodes at once: on the default kind fleet's 4 workers its stages are
    1, 2 and 4 pods, no more than doubling anyway.) After a halt the action
    waits, up to ``hold_s``, until the guard finds the API server healthy at
    the stage kept: ``"recovered_s"`` (None when it did not recover in time). The
    agents keep running at that stage until ``duration_s`` ends or
    ``remove_telemetry_service`` (the rollback) runs.

    Returns ``{"stopped_at_percent", "stopped_at_clients", "completed",
    "reason", "stages": [{"percent", "clients", "p99_s", "rate_429",
    "healthy"}], "kept_percent", "kept_clients", "nodes"}``.

    On kind or a cluster of your own the stages are the DaemonSet's real pods
    (see ``deploy_telemetry_service``; ``agents_per_pod``,
    ``request_timeout_s`` and ``ready_timeout_s`` as there): a stage labels
    its share of the nodes (by name order) and their pods start; a halt takes
    the label off the nodes past the last healthy stage and their pods go.
    The result then also has ``"where": "pods"`` and ``"pods"`` per stage.
    """
    chosen = _check_stages(stages if stages is not None else list(DEFAULT_STAGES))
    number("hold_s", hold_s, 1, 300)
    number("max_p99_s", max_p99_s, 0.01, 60)
    number("max_429_per_s", max_429_per_s, 0, 10000)
    number("check_every_s", check_every_s, 0.5, 60)
    number("ramp_factor", ramp_factor, 1.1, 100)
    target = resolve_target(configuration, secrets)
    if pods.runs_in_pods(target):
        guard = {"hold_s": float(hold_s), "every_s": float(check_every_s),
                 "max_p99_s": max_p99_s, "max_429_per_s": max_429_per_s}  # fmt: skip
        settings = pods.storm_settings(
            rate_per_client, resources, agents_per_pod, duration_s, request_timeout_s
        )
        return _roll_out_in_pods(
            target, chosen, guard, settings, ready_timeout_s, configuration, secrets
        )
    nodes = _create_service(target)
    history: list[dict[str, Any]] = []
    kept: dict[str, Any] | None = None
    reason = "every stage stayed healthy"
    storm_id = ""
    running = 0
    recovered_s: float | None = None
    for percent in chosen:
        stage = stage_clients(nodes, percent)
        for clients in ramp_steps(running, stage, ramp_factor):
            if not storm_id:
                started = storm.start_telemetry_storm(
                    clients=clients,
                    rate_per_client=rate_per_client,
                    duration_s=duration_s,
                    resources=resources or ["pods"],
                    threads=min(MAX_THREADS, max(1, nodes)),
                    synchronized=False,
                    configuration=configuration,
                    secrets=secrets,
                )
                storm_id = str(started["storm_id"])
            else:
                storm.scale_telemetry_storm(clients, storm_id, configuration, secrets)
            running = clients
            # a step on the way: one check; the stage's own count: held for hold_s
            held = hold_s if clients == stage else check_every_s
            health = _watch_stage(float(held), float(check_every_s), max_p99_s, max_429_per_s,
                                  configuration, secrets)  # fmt: skip
            if not health["healthy"]:
                break
        step = {"percent": percent, "clients": running, "at": utc_now_iso(), **health}
        history.append(step)
        if not health["healthy"]:
            reason = f"halted on the way to {percent:g} % ({running} agents): {health['reason']}"
            if kept is not None:
                storm.scale_telemetry_storm(kept["clients"], storm_id, configuration, secrets)
            else:
                storm.stop_telemetry_storm(storm_id, configuration=configuration, secrets=secrets)
            recovered_s = _seconds_until_healthy(float(hold_s), float(check_every_s), max_p99_s,
                                                 max_429_per_s, configuration, secrets)  # fmt: skip
            break
        kept = step
    last = history[-1]
    return {
        "nodes": nodes,
        "completed": all(s["healthy"] for s in history) and len(history) == len(chosen),
        "stopped_at_percent": last["percent"],
        "stopped_at_clients": last["clients"],
        "kept_percent": kept["percent"] if kept else 0.0,
        "kept_clients": kept["clients"] if kept else 0,
        "reason": reason,
        "stages": history,
        "storm_id": storm_id,
        "recovered_s": recovered_s,
    }


def _roll_out_in_pods(
    target: Target,
    chosen: list[float],
    guard: dict[str, float],
    settings: dict[str, Any],
    ready_timeout_s: float,
    configuration: Configuration,
    secrets: Secrets,
) -> dict[str, Any]:
    """The staged roll-out where pods are real: each stage labels more nodes, a halt
    takes the label off the nodes past the last healthy stage."""
    pods.check_settings(settings)
    number("ready_timeout_s", ready_timeout_s, 1, 900)
    settings["until"] = time.time() + settings["duration_s"] + ready_timeout_s * len(chosen)
    api = target.api()
    core = client.CoreV1Api(api)
    order = pods.rollout_order(core)
    if not order:
        raise ActivityFailed(f"{target.describe()} has no nodes: nowhere to roll the agent out")
    storm_, image = _start_pods_daemonset(target, api, settings, 0, configuration, staged=True)
    try:
        return _run_pod_stages(core, storm_, order, chosen, guard, ready_timeout_s,
                               configuration, secrets) | {"image": image}  # fmt: skip
    except Exception:  # the roll-out failed (not halted): nothing of it is left behind
        _delete_daemonset(api, 10.0)
        pods.label_stage(core, storm_.staged_nodes, None, timeout_s=10.0)
        pods.forget(storm_)
        raise


def _run_pod_stages(
    core: client.CoreV1Api,
    storm_: pods.PodStorm,
    order: list[str],
    chosen: list[float],
    guard: dict[str, float],
    ready_timeout_s: float,
    configuration: Configuration,
    secrets: Secrets,
) -> dict[str, Any]:
    history: list[dict[str, Any]] = []
    kept: dict[str, Any] | None = None
    reason = "every stage stayed healthy"
    agents = int(storm_.settings["agents_per_pod"])
    for percent in chosen:
        count = stage_clients(len(order), percent)
        adding = order[len(storm_.staged_nodes) : count]
        storm_.staged_nodes = order[:count]  # recorded first: the rollback unlabels them
        storm_.pods_expected = count
        unlabelled = pods.label_stage(core, adding, storm_.id)
        health = _stage_started(core, storm_, unlabelled, ready_timeout_s)
        if health is None:
            health = _watch_stage(guard["hold_s"], guard["every_s"], guard["max_p99_s"],
                                  guard["max_429_per_s"], configuration, secrets)  # fmt: skip
        step = {"percent": percent, "pods": count, "clients": count * agents,
                "at": utc_now_iso(), **health}  # fmt: skip
        history.append(step)
        if not health["healthy"]:
            reason = f"halted at {percent:g} % ({count} pods): {health['reason']}"
            keep = int(kept["pods"]) if kept else 0
            stuck = pods.label_stage(core, order[keep:count], None)
            storm_.staged_nodes = order[:keep] + stuck
            storm_.pods_expected = keep
            if stuck:
                reason += (f"; the label could not be taken off {', '.join(stuck)} (the "
                           "rollback deletes the DaemonSet)")  # fmt: skip
            break
        kept = step
    last = history[-1]
    return {
        "where": "pods",
        "storm_id": storm_.id,
        "daemonset": f"{NAMESPACE}/{DAEMONSET}",
        "identity": f"system:serviceaccount:{NAMESPACE}:{pods.SERVICE_ACCOUNT}",
        "nodes": len(order),
        "completed": all(s["healthy"] for s in history) and len(history) == len(chosen),
        "stopped_at_percent": last["percent"],
        "stopped_at_clients": last["clients"],
        "kept_percent": kept["percent"] if kept else 0.0,
        "kept_clients": kept["clients"] if kept else 0,
        "kept_pods": kept["pods"] if kept else 0,
        "reason": reason,
        "stages": history,
    }


def _stage_started(
    core: client.CoreV1Api, storm_: pods.PodStorm, unlabelled: list[str], timeout_s: float
) -> dict[str, Any] | None:
    """None once the stage's pods all run; else why the stage counts as unhealthy. An image
    the nodes lack fails the roll-out (a mistake, not the API server's health)."""
    why = ""
    if unlabelled:
        why = f"could not label {', '.join(unlabelled)}"
    else:
        try:
            pods.wait_until_calling(core, NAMESPACE, f"{SERVICE_LABEL}=true", storm_, timeout_s)
        except pods.ImageNotPulled:
            raise
        except ActivityFailed as err:  # not every pod ran in time
            why = str(err)
        except Exception as err:  # the API server did not answer while the pods started
            why = f"the API server did not answer: {_short(err)}"
    if not why:
        return None
    return {"healthy": False, "p99_s": None, "rate_429": None, "errors": 0, "reason": why}


def _guard_checks(
    limit_s: float,
    every_s: float,
    max_p99_s: float,
    max_429_per_s: float,
    configuration: Configuration,
    secrets: Secrets,
) -> Iterator[dict[str, Any]]:
    """The guard's verdict every ``every_s`` for ``limit_s`` (the last one at the end)."""
    deadline = time.monotonic() + limit_s
    while True:
        time.sleep(max(0.0, min(every_s, deadline - time.monotonic())))
        yield rollout_health(max_p99_s, max_429_per_s, 3, configuration=configuration,
                             secrets=secrets)  # fmt: skip
        if time.monotonic() >= deadline:
            return


def _watch_stage(
    hold_s: float,
    every_s: float,
    max_p99_s: float,
    max_429_per_s: float,
    configuration: Configuration,
    secrets: Secrets,
) -> dict[str, Any]:
    """Check the guard every ``every_s`` through a stage's ``hold_s``; stop at the first breach
    (an overload can take the API server down well within one stage)."""
    checks = 0
    health: dict[str, Any] = {}
    for health in _guard_checks(hold_s, every_s, max_p99_s, max_429_per_s, configuration, secrets):
        checks += 1
        if not health["healthy"]:
            break
    return {**health, "checks": checks}


def _seconds_until_healthy(
    limit_s: float,
    every_s: float,
    max_p99_s: float,
    max_429_per_s: float,
    configuration: Configuration,
    secrets: Secrets,
) -> float | None:
    """After a halt: seconds until the guard finds the API server healthy again at the stage
    kept (the requests the halted step left queued drain first); None if not in ``limit_s``."""
    started = time.monotonic()
    for health in _guard_checks(limit_s, every_s, max_p99_s, max_429_per_s, configuration, secrets):
        if health["healthy"]:
            return round(time.monotonic() - started, 2)
    return None


def _delete_daemonset(api: client.ApiClient, timeout_s: float) -> str:
    """One DELETE of the DaemonSet: ``deleted``, ``absent``, or raises why it failed."""
    apps = client.AppsV1Api(api)
    try:
        apps.delete_namespaced_daemon_set(DAEMONSET, NAMESPACE, _request_timeout=timeout_s)
        return "deleted"
    except ApiException as err:
        if err.status == 404:
            return "absent"
        raise


def remove_telemetry_service(
    timeout_s: float = 300.0,
    attempt_timeout_s: float = 5.0,
    retry_every_s: float = 1.0,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> dict[str, Any]:
    """Roll the telemetry service back as an operator would: delete its DaemonSet as admin.

    Tries the DELETE every ``retry_every_s`` seconds, each try waiting at most
    ``attempt_timeout_s``, until the API server takes it (or ``timeout_s``
    passes): during an overload that is the lockout, measured. Once the
    DaemonSet is gone its agents stop (the storm ends), and the namespace is
    deleted. The rollback of ``deploy_telemetry_service`` and
    ``roll_out_telemetry_service``; safe when nothing is deployed.

    Returns ``{"seconds_until_deleted", "failed_tries", "tries", "errors":
    {kind: n}, "outcome": "deleted"|"absent", "storm": figures}``. Raises
    when the DELETE never succeeded within ``timeout_s`` (the storm is
    stopped all the same, so the cluster can recover).
    """
    number("timeout_s", timeout_s, 1, 3600)
    number("attempt_timeout_s", attempt_timeout_s, 0.5, 60)
    number("retry_every_s", retry_every_s, 0, 60)
    target = resolve_target(configuration, secrets)
    # no client retries: every try is one request, as an operator's kubectl delete is
    api = api_client(target.kubeconfig, target.context, pool_size=2, timeout=attempt_timeout_s)
    started = time.monotonic()
    errors: dict[str, int] = {}
    tries = 0
    outcome = ""
    while True:
        tries += 1
        try:
            outcome = _delete_daemonset(api, float(attempt_timeout_s))
            break
        except Exception as err:
            kind = f"HTTP {err.status}" if isinstance(err, ApiException) else _short(err)
            errors[kind] = errors.get(kind, 0) + 1
        if time.monotonic() - started >= timeout_s:
            break
        time.sleep(float(retry_every_s))
    seconds = round(time.monotonic() - started, 3)
    pod_storm = pods.latest() if pods.runs_in_pods(target) else None
    if pod_storm is not None:
        figures = _end_pod_storm(target, pod_storm, deleted=bool(outcome))
    else:
        figures = storm.stop_telemetry_storm(configuration=configuration, secrets=secrets)
    if not outcome:
        stopped = (
            "its pods stop calling by themselves at the storm's end"
            if pod_storm is not None
            else "its agents were stopped so the API server can recover"
        )
        raise ActivityFailed(
            f"the telemetry DaemonSet could not be deleted in {timeout_s:g} s ({tries} tries: "
            f"{errors}); {stopped}"
        )
    # the namespace goes with a later try if this one fails; the agents are gone already
    with contextlib.suppress(Exception):
        client.CoreV1Api(target.api()).delete_namespace(NAMESPACE, _request_timeout=10)
    return {
        "outcome": outcome,
        "seconds_until_deleted": seconds,
        "tries": tries,
        "failed_tries": tries - 1,
        "errors": errors,
        "storm": figures,
    }


def _end_pod_storm(target: Target, pod_storm: pods.PodStorm, deleted: bool) -> dict[str, Any]:
    """After the DELETE: wait (a minute at most) for the pods to go, then the figures."""
    core = client.CoreV1Api(target.api())
    deadline = time.monotonic() + 60.0
    while deleted and time.monotonic() < deadline:
        try:
            gone = not core.list_namespaced_pod(
                NAMESPACE, label_selector=f"{SERVICE_LABEL}=true", _request_timeout=5
            ).items
        except Exception:  # the API server may still be recovering
            gone = False
        if gone:
            break
        time.sleep(1.0)
    figures = pods.read_figures(pod_storm)
    if pod_storm.staged_nodes:  # a staged roll-out's labels; a later try takes what is left
        pod_storm.staged_nodes = pods.label_stage(core, pod_storm.staged_nodes, None)
    if deleted:
        pod_storm.ended_wall = utc_now_iso()
        with contextlib.suppress(Exception):  # a later try removes what this one could not
            pods.remove_identity(target.api())
    return pods.report(pod_storm, figures)


def _short(err: Exception) -> str:
    text = str(err)
    for word in ("Connection refused", "timed out", "Connection reset", "Max retries"):
        if word in text:
            return word
    return type(err).__name__
