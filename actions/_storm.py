"""The telemetry storm's engine: simulated node agents on a bounded pool of threads.

:class:`TelemetryStorm` schedules each agent's calls (one per period, all due
at once when synchronized), sends them from the agents' own loopback address
with the telemetry identity's certificate, reads each body to the end and
throws it away, and keeps the figures. The activities that start, scale and
stop it are in :mod:`blackstart.actions.telemetry_storm`.
"""

import heapq
import random
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import urllib3
from kubernetes import client

from blackstart.health import utc_now_iso
from blackstart.stats import percentile as percentile
from blackstart.telemetry_agent import PATHS

TELEMETRY_USER = "blackstart:telemetry"
MAX_CLIENTS = 5000
MAX_THREADS = 64
MAX_DURATION_S = 600.0
MAX_RATE_PER_CLIENT = 10.0
MAX_TOTAL_RATE = 2000.0
REQUEST_TIMEOUT_S = 30.0
STORM_SOURCE_IP = "127.0.0.2"  # the telemetry agents' own address: a firewall rule can block it
READ_CHUNK = 256 * 1024
_LATENCY_SAMPLES = 200_000  # latencies kept for percentiles; beyond, a reservoir sample

# What a node telemetry agent lists, and where (the telemetry identity may list these).
RESOURCE_PATHS = PATHS


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
    compressed: bool = True
    source_ip: str = STORM_SOURCE_IP


def storm_pool(api: client.ApiClient, settings: StormSettings) -> urllib3.PoolManager:
    """Connections for the storm's agents: the identity's TLS, from :data:`STORM_SOURCE_IP`."""
    cfg = api.configuration
    return urllib3.PoolManager(
        num_pools=2,
        maxsize=settings.threads,
        block=False,
        cert_reqs="CERT_REQUIRED" if cfg.verify_ssl else "CERT_NONE",
        ca_certs=cfg.ssl_ca_cert,
        cert_file=cfg.cert_file,
        key_file=cfg.key_file,
        source_address=(settings.source_ip, 0) if settings.source_ip else None,
        retries=False,
    )


class TelemetryStorm:
    """One storm: simulated clients scheduled on a bounded pool of threads."""

    def __init__(
        self,
        api: client.ApiClient,
        settings: StormSettings,
        cluster: str | None,
        max_threads: int | None = None,
    ):
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
        self.active_clients = settings.clients
        self.clients_started = settings.clients
        self._parked: list[int] = []
        self.max_threads = max(settings.threads, min(max_threads or 0, MAX_THREADS))
        self.pool = storm_pool(api, settings)
        self._wake = threading.Condition(self.lock)
        self.headers = {"Accept": "application/json", "User-Agent": "blackstart-telemetry-agent"}
        if settings.compressed:
            self.headers["Accept-Encoding"] = "gzip"

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
        for _ in range(s.threads):
            self._add_thread()

    def _add_thread(self) -> None:
        thread = threading.Thread(
            target=self._worker, name=f"blackstart-{self.id}-{len(self.threads)}", daemon=True
        )
        self.threads.append(thread)
        thread.start()

    def set_clients(self, clients: int) -> None:
        """Grow or shrink the storm to ``clients`` agents while it runs."""
        with self.lock:
            now = time.monotonic()
            period = 1.0 / self.settings.rate_per_client
            wake = [c for c in self._parked if c < clients]
            self._parked = [c for c in self._parked if c >= clients]
            for client_no in [*wake, *range(self.clients_started, clients)]:
                heapq.heappush(self._queue, (now + random.uniform(0, period), client_no, 0))
            self.clients_started = max(self.clients_started, clients)
            self.active_clients = clients
            grow = min(self.max_threads, clients) - len(self.threads)
            if grow > 0 and not self._finished.is_set():
                self._running += grow
                for _ in range(grow):
                    self._add_thread()
            self._wake.notify_all()

    def _next(self) -> tuple[float, int, int] | None:
        with self.lock:
            if not self._queue:
                return None
            return heapq.heappop(self._queue)

    def _worker(self) -> None:
        s = self.settings
        period = 1.0 / s.rate_per_client
        deadline = self.started_at + s.duration_s
        counted = 0.0  # this thread's CPU seconds already added to the figures
        try:
            while not self.stop_event.is_set():
                item = self._next()
                if item is None:  # every agent's request is in flight: wait for one to return
                    if time.monotonic() >= deadline:
                        return
                    with self.lock:
                        self._wake.wait(0.2)
                    continue
                due, client_no, number = item
                if due >= deadline:
                    return  # the earliest due request is past the end: the storm is over
                if client_no >= self.active_clients:
                    with self.lock:  # scaled down: this agent is gone; keep it for a regrowth
                        self._parked.append(client_no)
                    continue
                wait = due - time.monotonic()
                if wait > 0 and self.stop_event.wait(wait):
                    return
                lateness = time.monotonic() - due
                resource = s.resources[(client_no + number) % len(s.resources)]
                self._one_request(resource, late=lateness > period)
                next_due = max(due + period, time.monotonic())
                cpu = time.thread_time()
                with self.lock:
                    heapq.heappush(self._queue, (next_due, client_no, number + 1))
                    self._wake.notify()
                    self.figures.thread_cpu_s += cpu - counted  # the figure grows as it runs
                counted = cpu
        finally:
            cpu = time.thread_time()
            with self.lock:
                self.figures.thread_cpu_s += cpu - counted
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
            response = self.pool.request(
                "GET",
                url,
                headers=self.headers,
                preload_content=False,
                decode_content=False,
                timeout=urllib3.Timeout(total=s.request_timeout_s),
            )
            try:
                # read to the end and throw away: no decompression, no JSON decoding
                for chunk in response.stream(READ_CHUNK, decode_content=False):
                    size += len(chunk)
            finally:
                response.release_conn()
            status = response.status
        except Exception as err:  # timeouts, refused and reset connections: all are errors
            kind = _error_kind(err)
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
                "clients": self.active_clients,
                "clients_at_start": s.clients,
                "threads": s.threads,
                "compressed": s.compressed,
                "source_ip": s.source_ip,
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
                "latency_s": latency_summary(latencies),
                "client_cpu_s": round(f.thread_cpu_s, 3),
            }


def _error_kind(err: Exception) -> str:
    """A short name for why a request failed: the innermost cause urllib3 wraps."""
    reason = getattr(err, "reason", None)
    if isinstance(reason, Exception):
        text = str(reason)
        for word in ("Connection refused", "Connection reset", "timed out", "Read timed out"):
            if word in text:
                return word
        return type(reason).__name__
    return type(err).__name__


def latency_summary(latencies: list[float]) -> dict[str, float | None]:
    """p50, p90, p99 and max of ``latencies`` in seconds (None when there are none)."""
    return {
        "p50": _round(percentile(latencies, 0.50)),
        "p90": _round(percentile(latencies, 0.90)),
        "p99": _round(percentile(latencies, 0.99)),
        "max": _round(max(latencies) if latencies else None),
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)
