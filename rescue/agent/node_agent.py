"""The GPU Xid node agent: kernel log in, Xid signal on the Node out.

One :class:`XidAgent` serves one real node (``/dev/kmsg``) or many simulated
ones (one kernel log file each). Two threads:

- the *reader* polls every log (one ``stat`` per file per ``poll_interval`` when
  nothing happens), parses new lines with :class:`~blackstart.rescue.wire.xid.XidParser`
  and spools the Xids together with the new cursor, in one transaction
  (:class:`~blackstart.rescue.agent.spool.AgentStore`);
- the *sender* waits until a node's Xids form a finished burst (no new one for
  ``burst_window`` seconds), then makes at most two writes for the whole burst
  (:mod:`blackstart.rescue.wire.signal`): the ``GPUXidError`` condition patch on
  ``nodes/status``, then the ``XidError`` Warning Event. Only then do the Xids
  leave the spool.

It never LISTs anything. It GETs a node only when it does not know the node's
condition yet (first Xid after start), and keeps the condition it last wrote.
Every request takes a token from a bucket (``max_rps``); after a 429, a 5xx or a
connection error the sender backs off exponentially with full jitter, honouring
``Retry-After``. With nothing to report it makes no request at all.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from urllib3.exceptions import HTTPError

from blackstart.rescue.agent.kmsg import (
    DEFAULT_KMSG_PATH,
    UNKNOWN_BOOT_ID,
    Cursor,
    KernelLogReader,
    KmsgReader,
    SourceKind,
    TextLogReader,
    host_boot_id,
    record_id,
)
from blackstart.rescue.agent.spool import AgentStore, StoreBatch
from blackstart.rescue.pacing import TokenBucket, backoff_delay, retry_after_seconds
from blackstart.rescue.wire.signal import (
    XidSighting,
    burst_due,
    coalesce,
    condition_patch,
    event_body,
    event_name,
    merge_reports,
    reports_from_node,
)
from blackstart.rescue.wire.xid import XidParser

__all__ = ["AgentMetrics", "AgentOptions", "NodeLog", "RequestHook", "XidAgent"]

log = logging.getLogger("blackstart.rescue.agent.node_agent")

RequestHook = Callable[[str, str, str], None]
"""Called after every API request with (verb, resource, HTTP status or "error")."""

_T = TypeVar("_T")
_STRATEGIC_MERGE = "application/strategic-merge-patch+json"
_MAX_EVENT_NAMES = 256  # per node, for not re-posting a burst's Event after a partial failure


@dataclass(frozen=True)
class NodeLog:
    """One node and where its kernel log is.

    ``kind`` ``"file"``: a text log file (a simulated node, or a copy of dmesg).
    ``kind`` ``"kmsg"``: the kernel's ``/dev/kmsg`` device at ``path``.
    ``boot_id``: the node's boot id when known up front (kmsg: read from
    ``/proc`` when not given); for files it is otherwise learned from the Node's
    ``status.nodeInfo.bootID``.
    """

    node: str
    path: str
    kind: SourceKind = "file"
    boot_id: str | None = None

    @property
    def source(self) -> str:
        return f"{self.kind}:{self.path}"


@dataclass(frozen=True)
class AgentOptions:
    """How the agent paces itself; the defaults suit one agent per node."""

    state_dir: Path
    max_rps: float = 5.0
    burst_window: float = 0.2
    poll_interval: float = 0.1
    backoff_base: float = 0.5
    backoff_cap: float = 10.0
    request_timeout: tuple[float, float] = (3.0, 10.0)
    event_namespace: str = "default"
    from_end: bool = False
    max_batch: int = 500


class AgentMetrics:
    """The agent's Prometheus metrics, in a registry of their own."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        prefix = "blackstart_rescue_agent"
        self.lines_read = Counter(
            f"{prefix}_log_lines", "Kernel log lines read.", registry=self.registry
        )
        self.xids_seen = Counter(
            f"{prefix}_xids_seen", "Xid lines seen, by Xid code.", ["xid"], registry=self.registry
        )
        self.reports_sent = Counter(
            f"{prefix}_reports_sent",
            "Xid lines reported to the API server (left the spool).",
            registry=self.registry,
        )
        self.bursts_sent = Counter(
            f"{prefix}_bursts_sent",
            "Bursts reported (one per node and burst).",
            registry=self.registry,
        )
        self.api_requests = Counter(
            f"{prefix}_api_requests",
            "Kubernetes API requests, by verb, resource and HTTP status ('error': no response).",
            ["verb", "resource", "code"],
            registry=self.registry,
        )
        self.spool_depth = Gauge(
            f"{prefix}_spool_depth", "Xid lines waiting in the spool.", registry=self.registry
        )
        self.delivery_seconds = Histogram(
            f"{prefix}_delivery_seconds",
            "Seconds from reading an Xid line to the node condition holding it.",
            buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300),
            registry=self.registry,
        )
        self.backoffs = Counter(
            f"{prefix}_backoffs",
            "Times the sender backed off after a failed request.",
            registry=self.registry,
        )

    def requests(self, verb: str | None = None) -> float:
        """Total API requests so far (of ``verb`` only, when given), any status."""
        total = 0.0
        for metric in self.api_requests.collect():
            for sample in metric.samples:
                if sample.name.endswith("_total") and verb in (None, sample.labels["verb"]):
                    total += sample.value
        return total


class _Retry(Exception):
    """A request failed in a way worth retrying later; carries the server's Retry-After."""

    def __init__(self, what: str, retry_after: float | None = None) -> None:
        super().__init__(what)
        self.retry_after = retry_after


class _NodeGone(Exception):
    """The Node does not exist (404): its Xids cannot be reported."""


class _Stopped(Exception):
    """The agent is stopping."""


@dataclass
class _NodeState:
    boot_id: str | None = None
    uid: str | None = None
    reports: list[dict[str, Any]] | None = None  # the condition's reports as last written
    events: OrderedDict[str, None] = field(default_factory=OrderedDict)


class XidAgent:
    """Reports the Xid errors in the kernel logs of ``logs`` to the API server.

    ``api`` is an ApiClient (see :func:`blackstart.kube.api_client`); make it
    with no client-side retries so the agent's own backoff decides. ``on_request``
    sees every request (tests count writes with it). Call :meth:`start` and
    :meth:`stop`, or :meth:`run` to block until :meth:`stop` from elsewhere.
    """

    def __init__(
        self,
        logs: Sequence[NodeLog],
        api: client.ApiClient,
        options: AgentOptions,
        metrics: AgentMetrics | None = None,
        on_request: RequestHook | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not logs:
            raise ValueError("the agent needs at least one node and kernel log to read")
        names = [entry.node for entry in logs]
        if len(set(names)) != len(names):
            raise ValueError(f"a node appears twice in the agent's logs: {sorted(names)}")
        self.logs = list(logs)
        self.options = options
        self.metrics = metrics or AgentMetrics()
        self.core = client.CoreV1Api(api)
        self.store = AgentStore(options.state_dir)
        self._on_request = on_request
        self._clock = clock
        self._bucket = TokenBucket(options.max_rps)
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._threads: list[threading.Thread] = []
        self._closed = False
        self._states = {entry.node: _NodeState(boot_id=entry.boot_id) for entry in logs}
        self._parsers = {entry.node: XidParser() for entry in logs}
        self._attempt = 0
        self._backoff_until = 0.0
        self._state_lock = threading.Lock()
        self._readers: dict[str, KernelLogReader] = {}
        self._persisted: dict[str, Cursor | None] = {}
        for entry in self.logs:
            self._readers[entry.node] = self._open_reader(entry)
        self.metrics.spool_depth.set(self.store.depth())

    # ------------------------------------------------------------------ running
    def start(self) -> None:
        """Start the reader and sender threads."""
        if self._threads:
            raise RuntimeError("the agent is already running")
        self._threads = [
            threading.Thread(target=self._reader_loop, name="xid-reader", daemon=True),
            threading.Thread(target=self._sender_loop, name="xid-sender", daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        log.info(
            "reading %d kernel log(s); at most %.1f requests/s; spool %s (%d waiting)",
            len(self.logs),
            self.options.max_rps,
            self.store.path,
            self.store.depth(),
        )

    def stop(self, timeout: float = 15.0) -> None:
        """Stop both threads and close the logs and the spool. Spooled Xids stay spooled."""
        self.stop_soon()
        for thread in self._threads:
            thread.join(timeout)
        if not self._closed:
            self._closed = True
            for reader in self._readers.values():
                reader.close()
            self.store.close()

    def stop_soon(self) -> None:
        """Ask the threads to stop, without waiting (safe in a signal handler)."""
        self._stop.set()
        self._wake.set()

    def run(self) -> None:
        """Start, block until :meth:`stop_soon` is called (e.g. by a signal), then stop."""
        self.start()
        while not self._stop.wait(1.0):
            pass
        self.stop()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    # ------------------------------------------------------------------ reading
    def _open_reader(self, entry: NodeLog) -> KernelLogReader:
        saved = self.store.cursor(entry.node, entry.source)
        self._persisted[entry.node] = saved
        if entry.kind == "kmsg":
            boot = entry.boot_id or host_boot_id()
            self._states[entry.node].boot_id = boot
            return KmsgReader(
                saved, boot, path=entry.path or DEFAULT_KMSG_PATH, from_end=self.options.from_end
            )
        return TextLogReader(
            entry.path,
            saved,
            boot_id=functools.partial(self._known_boot_id, entry.node),
            from_end=self.options.from_end,
        )

    def read_logs_once(self) -> list[XidSighting]:
        """Read every log once; spool the Xids found with the new cursors. Returns the new Xids."""
        batches: list[StoreBatch] = []
        for entry in self.logs:
            reader = self._readers[entry.node]
            try:
                records = reader.read()
            except OSError as err:
                log.warning(
                    "cannot read the kernel log of %s (%s): %s", entry.node, entry.path, err
                )
                continue
            if not records:
                if reader.cursor != self._persisted.get(entry.node):
                    # a first position (--from-end), a rotation or a new boot: keep it
                    batches.append(StoreBatch(entry.node, entry.source, reader.cursor))
                continue
            self.metrics.lines_read.inc(len(records))
            parser = self._parsers[entry.node]
            sightings: list[XidSighting] = []
            for record in records:
                event = parser.feed(record.text)
                if event is None:
                    continue
                boot = record.boot_id or self._learn_boot_id(entry.node)
                sightings.append(
                    XidSighting(
                        id=record_id(boot, record.position),
                        node=entry.node,
                        xid=event.xid,
                        pci=event.pci,
                        uuid=event.uuid,
                        message=event.message,
                        read_at=record.read_at,
                        log_time=event.timestamp,
                    )
                )
            batches.append(StoreBatch(entry.node, entry.source, reader.cursor, sightings))
        if not batches:
            return []
        added = self.store.record(batches)
        for batch in batches:
            self._persisted[batch.node] = batch.cursor
        for sighting in added:
            self.metrics.xids_seen.labels(xid=str(sighting.xid)).inc()
            log.info(
                "node %s: Xid %d on pci %s (%s) spooled as %s",
                sighting.node,
                sighting.xid,
                sighting.pci,
                sighting.message[:80],
                sighting.id,
            )
        if added:
            self.metrics.spool_depth.set(self.store.depth())
            self._wake.set()
        return added

    def _known_boot_id(self, node: str) -> str:
        return self._states[node].boot_id or ""

    def _learn_boot_id(self, node: str) -> str:
        """The node's boot id from one GET, when the API server answers right away."""
        state = self._states[node]
        if state.boot_id:
            return state.boot_id
        if self._clock() >= self._backoff_until:
            try:
                self._fetch_node(node)
            except (_Retry, _NodeGone, _Stopped) as err:
                log.warning("node %s: boot id unknown (%s); ids use %r", node, err, UNKNOWN_BOOT_ID)
        return state.boot_id or UNKNOWN_BOOT_ID

    def _reader_loop(self) -> None:
        while not self._stop.wait(self.options.poll_interval):
            try:
                self.read_logs_once()
            except Exception:
                log.exception("reading the kernel logs failed; trying again")

    # ------------------------------------------------------------------ sending
    def _sender_loop(self) -> None:
        while not self._stop.is_set():
            try:
                wait = self.deliver_due_once()
            except _Stopped:
                return
            except Exception:
                log.exception("reporting Xids failed unexpectedly; backing off")
                wait = self._back_off(None)
            if wait is None:
                self._wake.wait(1.0)
                self._wake.clear()
            elif wait > 0:
                self._wake.wait(wait)
                self._wake.clear()

    def deliver_due_once(self) -> float | None:
        """Report one finished burst, if any is due.

        Returns 0.0 after a report, the seconds to wait before the next burst is
        due or the backoff ends, or None when the spool is empty.
        """
        now = self._clock()
        if now < self._backoff_until:
            return self._backoff_until - now
        bursts = self.store.bursts()
        if not bursts:
            return None
        window = self.options.burst_window
        due = [b for b in bursts if burst_due(b.first_read, b.last_read, now, window)]
        if not due:
            soonest = min(
                min(b.last_read + window, b.first_read + max(1.0, 5 * window)) for b in bursts
            )
            return max(0.01, soonest - now)
        try:
            self._deliver(due[0].node)
        except _Retry as err:
            return self._back_off(err)
        self._attempt = 0
        return 0.0

    def _back_off(self, err: _Retry | None) -> float:
        retry_after = err.retry_after if err is not None else None
        delay = backoff_delay(
            self._attempt, self.options.backoff_base, self.options.backoff_cap, retry_after
        )
        self._attempt += 1
        self._backoff_until = self._clock() + delay
        self.metrics.backoffs.inc()
        if err is not None:
            log.warning(
                "API request failed (%s); %d Xid(s) stay spooled; retry %d in %.2f s",
                err,
                self.store.depth(),
                self._attempt,
                delay,
            )
        return delay

    def _deliver(self, node: str) -> None:
        sightings = self.store.pending(node, self.options.max_batch)
        if not sightings:
            return
        state = self._states.setdefault(node, _NodeState())
        try:
            if state.reports is None:
                self._fetch_node(node)
            self._write_condition(node, state, sightings)
            self._write_event(node, state, sightings)
        except _NodeGone:
            log.error(
                "node %s does not exist; dropping its %d spooled Xid(s)", node, len(sightings)
            )
        else:
            self.metrics.reports_sent.inc(len(sightings))
            self.metrics.bursts_sent.inc()
        self.store.acknowledge(node, [s.id for s in sightings])
        self.metrics.spool_depth.set(self.store.depth())

    def _write_condition(self, node: str, state: _NodeState, sightings: list[XidSighting]) -> None:
        new = [report.to_json() for report in coalesce(sightings)]
        written = {r.get("id"): r for r in state.reports or []}
        if all(written.get(report["id"]) == report for report in new):
            return  # already in the condition (a retry after the Event failed)
        with self._state_lock:
            merged = merge_reports(state.reports or [], new)
        now = self._clock()
        body = condition_patch(merged, now)
        result = self._request(
            "patch",
            "nodes/status",
            lambda: self.core.patch_node_status_with_http_info(
                node,
                body,
                _content_type=_STRATEGIC_MERGE,
                _request_timeout=self.options.request_timeout,
            ),
        )
        with self._state_lock:
            state.reports = merged
        self._remember_node(node, result)
        done = self._clock()
        for sighting in sightings:
            self.metrics.delivery_seconds.observe(max(0.0, done - sighting.read_at))
        log.info(
            "node %s: condition GPUXidError now holds %d report(s) (%d new Xid line(s))",
            node,
            len(merged),
            len(sightings),
        )

    def _write_event(self, node: str, state: _NodeState, sightings: list[XidSighting]) -> None:
        name = event_name(node, sightings[0].id)
        if name in state.events:
            return
        body = event_body(
            node, state.uid, sightings, self._clock(), namespace=self.options.event_namespace
        )
        try:
            self._request(
                "create",
                "events",
                lambda: self.core.create_namespaced_event_with_http_info(
                    self.options.event_namespace,
                    body,  # type: ignore[arg-type]
                    _request_timeout=self.options.request_timeout,
                ),
            )
        except _NodeGone:
            log.error(
                "cannot create Event %s: namespace %s not found; the condition holds the Xids",
                name,
                self.options.event_namespace,
            )
        except _AlreadyExists:
            pass  # posted before a failure or restart: the burst has its Event
        state.events[name] = None
        while len(state.events) > _MAX_EVENT_NAMES:
            state.events.popitem(last=False)

    def _fetch_node(self, node: str) -> None:
        result = self._request(
            "get",
            "nodes",
            lambda: self.core.read_node_with_http_info(
                node, _request_timeout=self.options.request_timeout
            ),
        )
        state = self._states.setdefault(node, _NodeState())
        with self._state_lock:
            # the reader may GET while the sender patches: never replace what was written since
            if state.reports is None:
                state.reports = reports_from_node(result)
        self._remember_node(node, result)

    def _remember_node(self, node: str, obj: Any) -> None:
        state = self._states.setdefault(node, _NodeState())
        metadata = getattr(obj, "metadata", None)
        uid = getattr(metadata, "uid", None)
        if uid:
            state.uid = str(uid)
        info = getattr(getattr(obj, "status", None), "node_info", None)
        boot = getattr(info, "boot_id", None)
        entry_boot = next((e.boot_id for e in self.logs if e.node == node), None)
        if boot and not entry_boot:
            state.boot_id = str(boot)

    # ------------------------------------------------------------------ requests
    def _request(self, verb: str, resource: str, call: Callable[[], Any]) -> Any:
        """One paced API request; returns the response object, raises the agent's errors."""
        if not self._bucket.take(self._stop):
            raise _Stopped()
        try:
            response = call()
        except ApiException as err:
            self._count(verb, resource, str(err.status))
            if err.status == 404:
                raise _NodeGone() from err
            if err.status == 409:
                raise _AlreadyExists() from err
            raise _Retry(
                f"{verb} {resource}: {err.status} {err.reason}",
                retry_after_seconds(err.headers),
            ) from err
        except (HTTPError, OSError) as err:
            self._count(verb, resource, "error")
            raise _Retry(f"{verb} {resource}: {type(err).__name__}: {err}") from err
        # *_with_http_info answers (data, status, headers); newer clients an ApiResponse
        if isinstance(response, tuple):
            data, status = response[0], response[1]
        else:
            data, status = getattr(response, "data", response), getattr(response, "status_code", 0)
        self._count(verb, resource, str(status or 200))
        return data

    def _count(self, verb: str, resource: str, code: str) -> None:
        self.metrics.api_requests.labels(verb=verb, resource=resource, code=code).inc()
        if self._on_request is not None:
            self._on_request(verb, resource, code)


class _AlreadyExists(Exception):
    """409: the object is there already."""
