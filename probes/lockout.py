"""Lockout and recovery probes: when the API server went, when an operator got back in.

- :func:`seconds_until_apiserver_unavailable`: from the storm's start until
  the API server stops answering (its ``/readyz``, or a system identity's
  small request within 5 s);
- :func:`seconds_until_admin_write`: until an admin's write is taken (a
  server-side dry-run DELETE of the telemetry DaemonSet: changes nothing);
- :func:`seconds_until_recovered`: until the API server answers a system
  identity under ``max_p99_s``, an admin call succeeds and data-plane DNS
  answers: the time to recovery of a remedy;
- :func:`rollout_health`: the staged roll-out's guard (p99 and 429s);
- :func:`control_plane_restarts`, :func:`control_plane_usage`: what the
  control plane's supervisor counted (local provider).

A probe that waits for something that never comes returns ``timeout_s + 1``,
so a range tolerance up to ``timeout_s`` fails.
"""

import time
from typing import Any

from chaoslib.exceptions import ActivityFailed
from chaoslib.types import Configuration, Secrets
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from blackstart.actions.telemetry_storm import latest_storm_start
from blackstart.clusters.processes import is_alive
from blackstart.clusters.provider import ClusterError
from blackstart.health import apiserver_readyz
from blackstart.kube import api_client
from blackstart.probes.apiserver import apiserver_request_latency, rate_429_query
from blackstart.probes.dns import DEFAULT_NAMES, query_once
from blackstart.probes.prometheus import scalar
from blackstart.target import Target, cluster_provider, local_provider, resolve_target

__all__ = [
    "control_plane_restarts",
    "control_plane_usage",
    "rollout_health",
    "seconds_until_admin_write",
    "seconds_until_apiserver_down",
    "seconds_until_apiserver_unavailable",
    "seconds_until_recovered",
]

SYSTEM_IDENTITY = "blackstart:coredns"
SMALL_PATH = "/api/v1/namespaces/default/services"
TELEMETRY_DAEMONSET = ("blackstart-telemetry", "telemetry-agent")


def _seconds(name: str, value: Any, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise ActivityFailed(f"{name} must be a number from {low:g} to {high:g}, not {value!r}")
    return float(value)


def _system_answers(api: client.ApiClient, within_s: float) -> tuple[bool, float]:
    """One small request through ``api`` (a system identity's): (answered 2xx in time, seconds)."""
    started = time.monotonic()
    try:
        response = api.rest_client.request(  # type: ignore[no-untyped-call]
            "GET", f"{api.configuration.host}{SMALL_PATH}", _request_timeout=within_s
        )
        response.read()
        ok = 200 <= response.status < 300
    except Exception:
        ok = False
    return ok, time.monotonic() - started


def seconds_until_apiserver_unavailable(
    timeout_s: float = 120.0,
    answer_within_s: float = 5.0,
    identity: str = SYSTEM_IDENTITY,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> float:
    """Seconds from the start of this run's telemetry storm until the API server is unavailable.

    Unavailable: ``/readyz`` does not answer 200 within 2 s, or a small
    request as ``identity`` (a system component, not exempt from API Priority
    and Fairness) gets no answer within ``answer_within_s``, twice in a row.
    Counted from the latest storm's start (from now when no storm runs in
    this process). Checks once a second; returns ``timeout_s + 1`` when the
    API server stays available. Changes nothing.
    """
    limit = _seconds("timeout_s", timeout_s, 1, 3600)
    within = _seconds("answer_within_s", answer_within_s, 0.5, 60)
    target = resolve_target(configuration, secrets)
    admin = api_client(target.kubeconfig, target.context, pool_size=1, timeout=2.0)
    system = target.identity_api(identity, 1)
    origin = latest_storm_start() or time.monotonic()
    misses = 0
    while time.monotonic() - origin < limit:
        tick = time.monotonic()
        ready, _ = apiserver_readyz(admin, 2.0)
        answered = ready and _system_answers(system, within)[0]
        misses = 0 if answered else misses + 1
        if misses >= 2:
            return round(time.monotonic() - origin, 3)
        time.sleep(max(0.0, 1.0 - (time.monotonic() - tick)))
    return limit + 1.0


def seconds_until_apiserver_down(
    timeout_s: float = 120.0, configuration: Configuration = None, secrets: Secrets = None
) -> float:
    """Seconds from the start of this run's telemetry storm until kube-apiserver's process is
    gone (OOM-killed, crashed), checked every 0.2 s. Local provider only.

    For faults that must land while the API server is down, not merely slow.
    Returns ``timeout_s + 1`` when it never went down. Changes nothing.
    """
    limit = _seconds("timeout_s", timeout_s, 1, 3600)
    target = resolve_target(configuration, secrets)
    provider = local_provider(target, "seconds_until_apiserver_down")
    kc = provider.kwok_cluster(str(target.cluster))
    origin = latest_storm_start() or time.monotonic()
    while time.monotonic() - origin < limit:
        if not is_alive(kc.pid("kube-apiserver")):
            return round(time.monotonic() - origin, 3)
        time.sleep(0.2)
    return limit + 1.0


def seconds_until_admin_write(
    timeout_s: float = 60.0,
    attempt_timeout_s: float = 5.0,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> float:
    """Seconds until the API server takes an admin's write, tried once a second.

    The write is a server-side dry run of deleting the telemetry DaemonSet
    (``blackstart-telemetry/telemetry-agent``): nothing changes, and an answer
    of 200 or 404 both mean the admin got through. Each try waits at most
    ``attempt_timeout_s``. Returns ``timeout_s + 1`` when no try got through.
    """
    limit = _seconds("timeout_s", timeout_s, 0.5, 3600)
    attempt = _seconds("attempt_timeout_s", attempt_timeout_s, 0.2, 60)
    target = resolve_target(configuration, secrets)
    apps = client.AppsV1Api(api_client(target.kubeconfig, target.context, 1, timeout=attempt))
    started = time.monotonic()
    while time.monotonic() - started < limit:
        tick = time.monotonic()
        try:
            apps.delete_namespaced_daemon_set(
                TELEMETRY_DAEMONSET[1], TELEMETRY_DAEMONSET[0], dry_run="All",
                _request_timeout=attempt,
            )  # fmt: skip
            return round(time.monotonic() - started, 3)
        except ApiException as err:
            if err.status == 404:
                return round(time.monotonic() - started, 3)
        except Exception:
            pass  # refused, reset, timed out: the admin is locked out for now
        time.sleep(max(0.0, 1.0 - (time.monotonic() - tick)))
    return limit + 1.0


def _dns_answers(target: Target) -> bool:
    if not target.dns_server:
        return True  # no DNS to check on this target
    host, _, port = target.dns_server.rpartition(":")
    return query_once(host, int(port), DEFAULT_NAMES[0], "A", 0.5)[0] == "ok"


def seconds_until_recovered(
    max_p99_s: float = 1.0,
    timeout_s: float = 300.0,
    identity: str = SYSTEM_IDENTITY,
    dns: bool = True,
    stable_checks: int = 3,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> float:
    """Seconds from now until the cluster has recovered: the time to recovery of a remedy.

    Recovered: ``/readyz`` answers, an admin GET succeeds, three small
    requests as ``identity`` each answer within ``max_p99_s`` (the API
    server's p99 for system traffic is back under the limit) and, with
    ``dns``, CoreDNS resolves ``kubernetes.default.svc``, all in one check,
    and ``stable_checks`` checks in a row (a second apart) pass: the time
    returned is that of the first of them. Returns ``timeout_s + 1`` when it
    never recovered. Changes nothing.
    """
    limit = _seconds("max_p99_s", max_p99_s, 0.01, 60)
    wait = _seconds("timeout_s", timeout_s, 1, 3600)
    target = resolve_target(configuration, secrets)
    admin = api_client(target.kubeconfig, target.context, pool_size=1, timeout=5.0)
    core = client.CoreV1Api(admin)
    system = target.identity_api(identity, 1)
    needed = int(_seconds("stable_checks", stable_checks, 1, 60))
    started = time.monotonic()
    streak: list[float] = []
    while time.monotonic() - started < wait:
        tick = time.monotonic()
        if _recovered(target, admin, core, system, limit, dns):
            streak.append(tick - started)
            if len(streak) >= needed:
                return round(streak[0], 3)
        else:
            streak = []
        time.sleep(max(0.0, 1.0 - (time.monotonic() - tick)))
    return wait + 1.0


def _recovered(
    target: Target,
    admin: client.ApiClient,
    core: client.CoreV1Api,
    system: client.ApiClient,
    limit: float,
    dns: bool,
) -> bool:
    if not apiserver_readyz(admin, 2.0)[0]:
        return False
    try:
        core.read_namespace("default", _request_timeout=5.0)
    except Exception:
        return False
    for _ in range(3):
        ok, seconds = _system_answers(system, max(limit * 2, 2.0))
        if not ok or seconds > limit:
            return False
    return not dns or _dns_answers(target)


def rollout_health(
    max_p99_s: float = 1.0,
    max_429_per_s: float = 5.0,
    requests: int = 5,
    identity: str = SYSTEM_IDENTITY,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> dict[str, Any]:
    """The staged roll-out's guard: is the API server healthy enough to go on?

    Times ``requests`` small GETs as ``identity`` and reads the API server's
    429 answers per second over the last 30 s from Prometheus (when the
    target has one). Returns ``{"healthy", "p99_s", "rate_429", "errors",
    "reason"}``: unhealthy when a request failed, the p99 is above
    ``max_p99_s`` or 429s are above ``max_429_per_s``. Changes nothing.
    """
    _seconds("max_p99_s", max_p99_s, 0.01, 60)
    _seconds("max_429_per_s", max_429_per_s, 0, 100000)
    latency = apiserver_request_latency(
        requests,
        identity,
        "",
        max(2.0, 3 * float(max_p99_s)),
        configuration=configuration,
        secrets=secrets,
    )
    target = resolve_target(configuration, secrets)
    rate: float | None = None
    if target.prometheus_url:
        try:
            rate = scalar(target.prometheus_url, rate_429_query("30s"), 0.0)
        except ActivityFailed:
            rate = None  # Prometheus itself is starved: judge by latency alone
    p99 = float(latency["p99_seconds"])
    reasons = []
    if latency["errors"]:
        reasons.append(f"{latency['errors']} of {requests} requests failed ({latency['answers']})")
    if p99 > max_p99_s:
        reasons.append(f"p99 {p99:.2f} s above {max_p99_s:g} s")
    if rate is not None and rate > max_429_per_s:
        reasons.append(f"{rate:.1f} 429s/s above {max_429_per_s:g}")
    return {
        "healthy": not reasons,
        "p99_s": p99,
        "rate_429": None if rate is None else round(rate, 3),
        "errors": latency["errors"],
        "reason": "; ".join(reasons) or "healthy",
    }


def control_plane_restarts(
    component: str = "kube-apiserver", configuration: Configuration = None, secrets: Secrets = None
) -> int:
    """How many times ``component`` was restarted after an OOM kill, a crash or a failed
    liveness probe: by the local supervisor since the cluster was created, or on kind by
    the control-plane node's kubelet (its pod's restart count). Changes nothing."""
    target = resolve_target(configuration, secrets)
    provider = cluster_provider(target, "control_plane_restarts")
    try:
        return provider.restarts(str(target.cluster), component)
    except ClusterError as err:
        raise ActivityFailed(f"could not count the restarts of {component}: {err}") from err


def control_plane_usage(
    configuration: Configuration = None, secrets: Secrets = None
) -> dict[str, Any]:
    """What the control plane uses now within its bounds: its cgroup's memory, peak, limit,
    CPU seconds and quota, OOM kills (the local control plane's cgroup, or kind's
    control-plane node container); per component restarts. Changes nothing."""
    target = resolve_target(configuration, secrets)
    provider = cluster_provider(target, "control_plane_usage")
    try:
        return provider.control_plane_usage(str(target.cluster))
    except ClusterError as err:
        raise ActivityFailed(f"could not read the control plane's usage: {err}") from err
