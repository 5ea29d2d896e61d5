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
when its duration is over; :func:`stop_telemetry_storm` ends it early (the
rollback) and :func:`wait_for_telemetry_storm` waits for its end. Both return
the client-side figures: requests, answers by kind (ok, 429, other errors),
latency percentiles, bytes read and the CPU time the storm's threads used.
"""

import heapq
import ipaddress
import random
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit

from chaoslib.exceptions import ActivityFailed
from chaoslib.types import Configuration, Secrets
from kubernetes import client

from blackstart.arguments import flag, number, whole_number
from blackstart.health import utc_now_iso
from blackstart.stats import percentile
from blackstart.target import resolve_target

__all__ = [
    "start_telemetry_storm",
    "stop_telemetry_storm",
    "wait_for_telemetry_storm",
]

TELEMETRY_USER = "blackstart:telemetry"
MAX_CLIENTS = 5000
MAX_THREADS = 64
MAX_DURATION_S = 600.0
MAX_RATE_PER_CLIENT = 10.0
MAX_TOTAL_RATE = 2000.0
REQUEST_TIMEOUT_S = 30.0
_LATENCY_SAMPLES = 200_000  # latencies kept for percentiles; beyond, a reservoir sample

# What a node telemetry agent lists, and where (the telemetry identity may list these).
RESOURCE_PATHS = {
    "pods": "/api/v1/pods",
    "nodes": "/api/v1/nodes",
    "configmaps": "/api/v1/configmaps",
    "services": "/api/v1/services",
    "endpoints": "/api/v1/endpoints",
    "events": "/api/v1/events",
    "namespaces": "/api/v1/namespaces",
    "endpointslices": "/apis/discovery.k8s.io/v1/endpointslices",
}


@dataclass
class StormFigures:
    """What the storm's clients saw; updated under the storm's lock."""

    requests: int = 0
    ok: int = 0
    throttled: int = 0  # HTTP 429 from API Priority and Fairness (or max-inflight)
    errors: int = 0
    error_kinds: Counter[str] = field(default_factory=Counter)
    by_resource: Counter[str] = field(default_factory=Counter)
    bytes_read: int = 0
    latencies: list[float] = field(default_factory=list)
    late_requests: int = 0  # issued more than one period after they were due
    thread_cpu_s: float = 0.0

    def record_latency(self, seconds: float) -> None:
        if len(self.latencies) < _LATENCY_SAMPLES:
            self.latencies.append(seconds)
        else:  # reservoir sampling keeps the percentiles honest beyond the cap
            slot = random.randrange(self.requests)
            if slot < _LATENCY_SAMPLES:
                self.latencies[slot] = seconds


@dataclass
class StormSettings:
    clients: int
    rate_per_client: float
    duration_s: float
    resources: tuple[str, ...]
    limit: int | None
    threads: int
    synchronized: bool
    request_timeout_s: float


class TelemetryStorm:
    """One storm: simulated clients scheduled on a bounded pool of threads."""

    def __init__(self, api: client.ApiClient, settings: StormSettings, cluster: str | None):
        self.id = f"storm-{uuid.uuid4().hex[:8]}"
        self.api = api
        self.settings = settings
        self.cluster = cluster
        self.figures = StormFigures()
        self.lock = threading.Lock()
        self.stop_event = threading.Event()
        self.threads: list[threading.Thread] = []
        self.started_at = time.monotonic()
        self.started_wall = utc_now_iso()
        self.ended_wall: str | None = None
        self.stopped_early = False
        self._queue: list[tuple[float, int, int]] = []  # (due, client, request number)
        self._finished = threading.Event()
        self._running = 0

    # ------------------------------------------------------------- scheduling
    def start(self) -> None:
        s = self.settings
        period = 1.0 / s.rate_per_client
        now = time.monotonic()
        self.started_at = now
        for client_no in range(s.clients):
            # the incident: every agent fired at the same moment; otherwise spread over a period
            offset = random.uniform(0, 0.05) if s.synchronized else random.uniform(0, period)
            self._queue.append((now + offset, client_no, 0))
        heapq.heapify(self._queue)
        self._running = s.threads
        for index in range(s.threads):
            thread = threading.Thread(
                target=self._worker, name=f"blackstart-{self.id}-{index}", daemon=True
            )
            self.threads.append(thread)
            thread.start()

    def _next(self) -> tuple[float, int, int] | None:
        with self.lock:
            if not self._queue:
                return None
            return heapq.heappop(self._queue)

    def _worker(self) -> None:
        s = self.settings
        period = 1.0 / s.rate_per_client
        deadline = self.started_at + s.duration_s
        try:
            while not self.stop_event.is_set():
                item = self._next()
                if item is None:
                    return
                due, client_no, number = item
                if due >= deadline:
                    return  # the earliest due request is past the end: the storm is over
                wait = due - time.monotonic()
                if wait > 0 and self.stop_event.wait(wait):
                    return
                lateness = time.monotonic() - due
                resource = s.resources[(client_no + number) % len(s.resources)]
                self._one_request(resource, late=lateness > period)
                next_due = max(due + period, time.monotonic())
                with self.lock:
                    heapq.heappush(self._queue, (next_due, client_no, number + 1))
        finally:
            cpu = time.thread_time()
            with self.lock:
                self.figures.thread_cpu_s += cpu
                self._running -= 1
                if self._running == 0:
                    self.ended_wall = utc_now_iso()
                    self._finished.set()

    def _one_request(self, resource: str, late: bool) -> None:
        s = self.settings
        query: dict[str, Any] = {}
        if s.limit:
            query["limit"] = s.limit
        url = f"{self.api.configuration.host}{RESOURCE_PATHS[resource]}"
        if query:
            url += "?" + urlencode(query)
        started = time.monotonic()
        status: int | None = None
        size = 0
        kind = ""
        try:
            response = self.api.rest_client.request(  # type: ignore[no-untyped-call]
                "GET",
                url,
                headers={"Accept": "application/json", "User-Agent": "blackstart-telemetry-agent"},
                _request_timeout=s.request_timeout_s,
            )
            data = response.read()
            size = len(data) if data else 0
            status = response.status
        except Exception as err:  # timeouts, refused and reset connections: all are errors
            kind = type(err).__name__
        elapsed = time.monotonic() - started
        with self.lock:
            f = self.figures
            f.requests += 1
            f.by_resource[resource] += 1
            f.bytes_read += size
            f.record_latency(elapsed)
            if late:
                f.late_requests += 1
            if status is not None and 200 <= status < 300:
                f.ok += 1
            elif status == 429:
                f.throttled += 1
            else:
                f.errors += 1
                f.error_kinds[kind or f"HTTP {status}"] += 1

    # ------------------------------------------------------------------ control
    def stop(self, timeout: float) -> None:
        if not self._finished.is_set():
            self.stopped_early = True
        self.stop_event.set()
        self.join(timeout)

    def join(self, timeout: float) -> bool:
        finished = self._finished.wait(timeout)
        if finished:
            for thread in self.threads:
                thread.join(1.0)
        return finished

    @property
    def running(self) -> bool:
        return not self._finished.is_set()

    def report(self) -> dict[str, Any]:
        """The storm's figures as a JSON-able dict."""
        with self.lock:
            f = self.figures
            latencies = list(f.latencies)
            elapsed = time.monotonic() - self.started_at
            s = self.settings
            return {
                "storm_id": self.id,
                "cluster": self.cluster,
                "state": "running"
                if self.running
                else ("stopped" if self.stopped_early else "finished"),
                "started_at": self.started_wall,
                "ended_at": self.ended_wall,
                "elapsed_s": round(min(elapsed, s.duration_s + s.request_timeout_s + 5), 3),
                "clients": s.clients,
                "threads": s.threads,
                "rate_per_client": s.rate_per_client,
                "target_rps": round(s.clients * s.rate_per_client, 3),
                "duration_s": s.duration_s,
                "resources": list(s.resources),
                "limit": s.limit,
                "requests": f.requests,
                "ok": f.ok,
                "throttled_429": f.throttled,
                "errors": f.errors,
                "error_kinds": dict(f.error_kinds),
                "by_resource": dict(f.by_resource),
                "late_requests": f.late_requests,
                "achieved_rps": round(f.requests / elapsed, 3) if elapsed > 0 else 0.0,
                "bytes_read": f.bytes_read,
                "latency_s": {
                    "p50": _round(percentile(latencies, 0.50)),
                    "p90": _round(percentile(latencies, 0.90)),
                    "p99": _round(percentile(latencies, 0.99)),
                    "max": _round(max(latencies) if latencies else None),
                },
                "client_cpu_s": round(f.thread_cpu_s, 3),
            }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


_storms: dict[str, TelemetryStorm] = {}
_storms_lock = threading.Lock()


def active_storms() -> list[str]:
    """Ids of the storms of this process that still run (for controls and tests)."""
    with _storms_lock:
        return [storm_id for storm_id, storm in _storms.items() if storm.running]


def storm_report(storm_id: str = "") -> dict[str, Any]:
    """Figures of storm ``storm_id`` (default: the latest storm of this process)."""
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
    return StormSettings(
        clients=int(clients),
        rate_per_client=float(rate_per_client),
        duration_s=float(duration_s),
        resources=chosen,
        limit=int(limit) if limit else None,
        threads=min(int(threads), int(clients)),
        synchronized=synchronized,
        request_timeout_s=float(request_timeout_s),
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

    Returns ``{"storm_id", "state": "running", ...}``; collect the figures with
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
    )
    target = resolve_target(configuration, secrets)
    api = target.identity_api(identity, pool_size=settings.threads)
    _check_loopback(api.configuration.host)
    storm = TelemetryStorm(api, settings, target.cluster)
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
