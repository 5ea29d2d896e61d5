"""The telemetry storm: every node's agent issuing expensive API calls at once.

In December 2024 a telemetry service rolled out to every node at once; each
node's agent made cluster-wide LIST calls with no ``resourceVersion``, and the
API servers collapsed under them. :func:`start_telemetry_storm` replays that
with N simulated node clients, all authenticated as the non-admin identity
``blackstart:telemetry`` (one user, as a DaemonSet's pods share one service
account), so API Priority and Fairness classifies and limits them like any
workload; the admin identity would be exempt and prove nothing.

Bounds, always: at most :data:`MAX_CLIENTS` clients, :data:`MAX_THREADS`
requests in flight, :data:`MAX_DURATION_S` seconds, loopback API servers only.
The storm runs in background threads of the chaos process and stops by itself
when its duration is over. Each call is what a node agent's client-go sends:
``Accept-Encoding: gzip`` (so the API server compresses the whole list), and
the body is read to the end and thrown away, never decompressed or decoded,
so the storm's own CPU stays small (at most one core: its threads share one
Python interpreter). Its connections come from their own loopback address,
:data:`STORM_SOURCE_IP`, so a network remedy can block exactly them
(``blackstart.actions.rollout.block_telemetry_network``). The number of
clients can change while it runs (:func:`scale_telemetry_storm`), as a
DaemonSet's pods come and go; :func:`stop_telemetry_storm` ends it early (the
rollback) and :func:`wait_for_telemetry_storm` waits for its end. Both return
the client-side figures: requests, answers by kind (ok, 429, other errors),
latency percentiles, bytes read and the CPU time the storm's threads used.
"""

import ipaddress
import threading
from typing import Any
from urllib.parse import urlsplit

from chaoslib.exceptions import ActivityFailed
from chaoslib.types import Configuration, Secrets

from blackstart.actions import _telemetry_pods as pods
from blackstart.actions._storm import (
    MAX_CLIENTS,
    MAX_DURATION_S,
    MAX_RATE_PER_CLIENT,
    MAX_THREADS,
    MAX_TOTAL_RATE,
    REQUEST_TIMEOUT_S,
    RESOURCE_PATHS,
    TELEMETRY_USER,
    StormSettings,
    TelemetryStorm,
)
from blackstart.arguments import flag, number, whole_number
from blackstart.target import resolve_target

__all__ = [
    "scale_telemetry_storm",
    "start_telemetry_storm",
    "stop_telemetry_storm",
    "wait_for_telemetry_storm",
]

_storms: dict[str, TelemetryStorm] = {}
_storms_lock = threading.Lock()


def active_storms() -> list[str]:
    """Ids of the storms of this process that still run (for controls and tests)."""
    with _storms_lock:
        return [storm_id for storm_id, storm in _storms.items() if storm.running]


def latest_storm_start() -> float | None:
    """``time.monotonic()`` at the start of the latest storm of this process, None if none.

    Either kind: this process's clients, or the telemetry pods it rolled out."""
    with _storms_lock:
        local = next(reversed(_storms.values())).started_at if _storms else None
    pod_storm = pods.latest()
    starts = [t for t in (local, pod_storm.started_at if pod_storm else None) if t is not None]
    return max(starts) if starts else None


def storm_report(storm_id: str = "") -> dict[str, Any]:
    """Figures of storm ``storm_id`` (default: the latest storm of this process).

    A storm the telemetry pods make reports what they wrote so far."""
    pod_storm = pods.find(storm_id) if storm_id else pods.latest()
    if pod_storm is not None and (storm_id or pod_storm.started_at == latest_storm_start()):
        return pods.report(pod_storm, pods.read_figures(pod_storm))
    return _find(storm_id).report()


def _find(storm_id: str) -> TelemetryStorm:
    with _storms_lock:
        if storm_id:
            if storm_id not in _storms:
                raise ActivityFailed(
                    f"no telemetry storm {storm_id!r} in this process; known: "
                    f"{', '.join(_storms) or 'none'}"
                )
            return _storms[storm_id]
        if not _storms:
            raise ActivityFailed(
                "no telemetry storm was started in this process: run start_telemetry_storm first"
            )
        return next(reversed(_storms.values()))


def _check_loopback(host_url: str) -> None:
    host = urlsplit(host_url).hostname or ""
    if host == "localhost":
        return
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ActivityFailed(
            f"the telemetry storm only runs against a loopback API server, not {host_url}: "
            "blackstart's load generators never leave the machine"
        )


def _number(name: str, value: Any, low: float, high: float, integer: bool = False) -> float:
    if integer:
        return float(whole_number(name, value, int(low), int(high)))
    return number(name, value, low, high)


def storm_settings(
    clients: int,
    rate_per_client: float,
    duration_s: float,
    resources: list[str] | None,
    limit: int | None,
    threads: int,
    synchronized: bool,
    request_timeout_s: float,
    compressed: bool = True,
) -> StormSettings:
    """Check every argument against the bounds; raise naming the one that is wrong."""
    _number("clients", clients, 1, MAX_CLIENTS, integer=True)
    _number("rate_per_client", rate_per_client, 0.01, MAX_RATE_PER_CLIENT)
    _number("duration_s", duration_s, 1, MAX_DURATION_S)
    _number("threads", threads, 1, MAX_THREADS, integer=True)
    _number("request_timeout_s", request_timeout_s, 0.5, 120)
    total = clients * rate_per_client
    if total > MAX_TOTAL_RATE:
        raise ActivityFailed(
            f"clients x rate_per_client = {total:g} requests/s is above the bound of "
            f"{MAX_TOTAL_RATE:g}; lower one of them"
        )
    chosen = tuple(resources or ["pods"])
    unknown = [r for r in chosen if r not in RESOURCE_PATHS]
    if unknown or not chosen:
        raise ActivityFailed(
            f"resources {unknown or chosen} not known; choose from {', '.join(RESOURCE_PATHS)}"
        )
    if limit is not None:
        _number("limit", limit, 1, 100000, integer=True)
    flag("synchronized", synchronized)
    flag("compressed", compressed)
    return StormSettings(
        clients=int(clients),
        rate_per_client=float(rate_per_client),
        duration_s=float(duration_s),
        resources=chosen,
        limit=int(limit) if limit else None,
        threads=min(int(threads), int(clients)),
        synchronized=synchronized,
        request_timeout_s=float(request_timeout_s),
        compressed=compressed,
    )


def start_telemetry_storm(
    clients: int = 48,
    rate_per_client: float = 1.0,
    duration_s: float = 30.0,
    resources: list[str] | None = None,
    limit: int | None = None,
    threads: int = 16,
    synchronized: bool = True,
    request_timeout_s: float = REQUEST_TIMEOUT_S,
    identity: str = TELEMETRY_USER,
    compressed: bool = True,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> dict[str, Any]:
    """Start N simulated node agents listing the whole cluster; returns at once.

    - ``clients``: simulated node agents (one per node, as a DaemonSet has), 1-5000.
    - ``rate_per_client``: LIST calls per second each agent issues (at most 10).
    - ``duration_s``: the storm stops by itself after this many seconds (at most 600).
    - ``resources``: what each agent lists cluster-wide, in turn: any of ``pods``,
      ``nodes``, ``configmaps``, ``services``, ``endpoints``, ``events``,
      ``namespaces``, ``endpointslices`` (default ``["pods"]``).
    - ``limit``: page size; ``null`` (default) lists everything in one response,
      the most expensive call. No ``resourceVersion`` is sent, so every call is a
      consistent read.
    - ``threads``: requests in flight at most (1-64); with more clients than
      threads, agents whose turn comes while all threads wait are served late
      (counted in ``late_requests``), as agents blocked on a slow API server are.
    - ``synchronized``: all agents fire at the same moment (the incident), else
      spread over one period.
    - ``identity``: the non-admin identity to send as (default ``blackstart:telemetry``).
    - ``compressed``: ask for gzip as client-go does (default); the API server
      then compresses every list, which costs it CPU, and the agents never
      decompress what they read.

    The agents connect from :data:`STORM_SOURCE_IP` (127.0.0.2). Returns
    ``{"storm_id", "state": "running", ...}``; collect the figures with
    ``wait_for_telemetry_storm`` or ``stop_telemetry_storm`` (the rollback).
    Raises when an argument is out of bounds, the API server is not on
    loopback, or the target is not a blackstart local cluster.
    """
    settings = storm_settings(
        clients,
        rate_per_client,
        duration_s,
        resources,
        limit,
        threads,
        synchronized,
        request_timeout_s,
        compressed,
    )
    target = resolve_target(configuration, secrets)
    api = target.identity_api(identity, pool_size=settings.threads)
    _check_loopback(api.configuration.host)
    storm = TelemetryStorm(api, settings, target.cluster, max_threads=threads)
    with _storms_lock:
        _storms[storm.id] = storm
    storm.start()
    return storm.report()


def stop_telemetry_storm(
    storm_id: str = "",
    timeout_s: float = 40.0,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> dict[str, Any]:
    """Stop the telemetry storm(s) of this process now and return the figures.

    ``storm_id``: the storm to stop; empty stops every storm of this process
    and returns the figures of the latest. Requests in flight finish (each
    is bounded by its timeout). The rollback of ``start_telemetry_storm``;
    safe when the storm already ended or none was started (then returns
    ``{"state": "none"}``).
    """
    _number("timeout_s", timeout_s, 0.1, 600)
    with _storms_lock:
        chosen = [_storms[storm_id]] if storm_id in _storms else list(_storms.values())
    if storm_id and storm_id not in _storms:
        raise ActivityFailed(f"no telemetry storm {storm_id!r} in this process")
    if not chosen:
        return {"state": "none", "storms": []}
    for storm in chosen:
        storm.stop_event.set()
    for storm in chosen:
        storm.stop(timeout_s)
    still = [s.id for s in chosen if s.running]
    if still:
        raise ActivityFailed(
            f"telemetry storm(s) {', '.join(still)} did not stop within {timeout_s:g} s"
        )
    return chosen[-1].report()


def scale_telemetry_storm(
    clients: int,
    storm_id: str = "",
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> dict[str, Any]:
    """Change how many node agents the running storm has, as scaling its DaemonSet would.

    ``clients``: the new number of agents (1-5000); agents above it stop
    calling at once (their requests in flight finish), new ones start within
    one period. ``storm_id``: default the latest storm of this process.
    Returns the storm's figures with ``clients_before``. Raises when the
    storm is not running or the new rate would pass the bound.
    """
    _number("clients", clients, 1, MAX_CLIENTS, integer=True)
    storm = _find(storm_id)
    if not storm.running:
        raise ActivityFailed(f"telemetry storm {storm.id} is over: nothing to scale")
    total = clients * storm.settings.rate_per_client
    if total > MAX_TOTAL_RATE:
        raise ActivityFailed(
            f"{clients} agents x {storm.settings.rate_per_client:g}/s = {total:g} requests/s "
            f"is above the bound of {MAX_TOTAL_RATE:g}"
        )
    before = storm.active_clients
    storm.set_clients(int(clients))
    report = storm.report()
    report["clients_before"] = before
    return report


def wait_for_telemetry_storm(
    storm_id: str = "",
    timeout_s: float = 660.0,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> dict[str, Any]:
    """Wait until the telemetry storm has run its course and return its figures.

    ``storm_id``: default the latest storm of this process. Raises when it
    is still running after ``timeout_s`` seconds.
    """
    _number("timeout_s", timeout_s, 0.1, 3600)
    storm = _find(storm_id)
    if not storm.join(timeout_s):
        raise ActivityFailed(f"telemetry storm {storm.id} still runs after {timeout_s:g} s")
    return storm.report()
