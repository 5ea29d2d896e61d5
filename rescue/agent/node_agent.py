"""The GPU Xid node agent: kernel log in, Xid signal on the Node out.

One :class:`XidAgent` serves one real node (``/dev/kmsg``) or many simulated
ones (one kernel log file each). Two threads:

- the *reader* polls every log (one ``stat`` per file per ``poll_interval`` when
  nothing happens), parses new lines with :class:`~blackstart.rescue.wire.xid.XidParser`
  and spools the Xids together with the new cursor, in one transaction
  (:class:`~blackstart.rescue.agent.spool.AgentStore`); identical lines share
  one spool row. When the spool cannot be written, the reader goes back to the
  saved cursor and reads the lines again. Every Xid carries the kernel's own
  time (the node's boot time plus the kernel timestamp) and its boot id, so a
  line read late is still known for as old as it is. With no saved cursor (a
  first start, a wiped state directory) or a corrupt one, a log is read from
  its end, with a warning: what it already holds is not reported as new.
- the *sender* (:class:`~blackstart.rescue.agent.sender.XidSender`) writes the
  ``GPUXidError`` condition once a node's Xids form a finished burst, at most
  one write per node per ``min_write_interval``, and the ``XidError`` Event
  best-effort. A node's agent needs one; a process that serves many simulated
  nodes runs ``senders`` of them, each for its share of the nodes, so a burst on
  many nodes is written in parallel as the nodes' own agents would (one request
  budget for all).

It never LISTs anything. It GETs each node once at start while no Xid is due
(``prefetch``; else at the node's first Xid), and keeps the condition it last wrote.
Every request takes a token from a bucket (``max_rps``); after a 429, a 5xx or a
connection error the sender backs off exponentially with full jitter, honouring
``Retry-After``. With nothing to report it makes no request at all.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

from kubernetes import client

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
from blackstart.rescue.agent.metrics import AgentMetrics
from blackstart.rescue.agent.paced_api import PacedApi, RequestHook, Stopped
from blackstart.rescue.agent.sender import SenderOptions, XidSender
from blackstart.rescue.agent.spool import AgentStore, StoreBatch
from blackstart.rescue.wire.signal import XidSighting
from blackstart.rescue.wire.xid import XidParser, log_epoch

__all__ = ["AgentMetrics", "AgentOptions", "NodeLog", "RequestHook", "XidAgent"]

log = logging.getLogger("blackstart.rescue.agent.node_agent")


@dataclass(frozen=True)
class NodeLog:
    """One node and where its kernel log is.

    ``kind`` ``"file"``: a text log file (a simulated node, or a copy of dmesg).
    ``kind`` ``"kmsg"``: the kernel's ``/dev/kmsg`` device at ``path``.
    ``boot_id``: the node's boot id when known up front (kmsg: read from
    ``/proc`` when not given); for files it is otherwise learned from the Node's
    ``status.nodeInfo.bootID``. ``boot_time``: when the node booted (epoch
    seconds), what the kernel's seconds-since-boot timestamps count from (kmsg:
    this host's when not given); without it such lines carry no kernel time.
    """

    node: str
    path: str
    kind: SourceKind = "file"
    boot_id: str | None = None
    boot_time: float | None = None

    @property
    def source(self) -> str:
        return f"{self.kind}:{self.path}"


@dataclass(frozen=True)
class AgentOptions:
    """How the agent paces itself; the defaults suit one agent per node.

    ``min_write_interval``: seconds between two writes for one node (the first
    after a quiet spell goes at once). ``collapse_window``: identical Xids this
    close together add to one report. ``from_start``: read a log with no saved
    cursor from its beginning (default: from its end, what it holds is old).
    ``prefetch``: read each node once at start, while nothing is due, so that its
    first Xid is one write.
    """

    state_dir: Path
    max_rps: float = 5.0
    burst_window: float = 0.05
    poll_interval: float = 0.05
    backoff_base: float = 0.5
    backoff_cap: float = 10.0
    request_timeout: tuple[float, float] = (3.0, 10.0)
    event_namespace: str = "default"
    from_start: bool = False
    max_batch: int = 500
    min_write_interval: float = 10.0
    collapse_window: float = 600.0
    senders: int = 1
    prefetch: bool = True

    def sender_options(self) -> SenderOptions:
        return SenderOptions(
            # a burst spans at least one read of the logs: lines the kernel wrote together
            # but a read split stay one report
            burst_window=max(self.burst_window, self.poll_interval),
            min_write_interval=self.min_write_interval,
            collapse_window=self.collapse_window,
            backoff_base=self.backoff_base,
            backoff_cap=self.backoff_cap,
            request_timeout=self.request_timeout,
            event_namespace=self.event_namespace,
            max_batch=self.max_batch,
            prefetch=self.prefetch,
        )


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
        self.store = AgentStore(options.state_dir)
        self._clock = clock
        self._stop = threading.Event()
        # set when a sender learned a boot id the reader waits for: read again at once
        self._read_now = threading.Event()
        self._awaiting_boot: set[str] = set()  # nodes whose lines wait for their boot id
        self._threads: list[threading.Thread] = []
        self._closed = False
        if options.senders < 1:
            raise ValueError(f"the agent needs at least one sender, not {options.senders}")
        paced = PacedApi(options.max_rps, self._stop, self.metrics, on_request)
        core = client.CoreV1Api(api)
        shares = [self.logs[i :: options.senders] for i in range(options.senders)]
        self.senders = [
            XidSender(
                self.store,
                core,
                paced,
                options.sender_options(),
                self.metrics,
                {entry.node: entry.boot_id for entry in share},
                clock,
                on_boot_id=self._read_now.set,
            )
            for share in shares
            if share
        ]
        self._sender_of = {node: sender for sender in self.senders for node in sender.nodes}
        self._wakes = [threading.Event() for _ in self.senders]  # one per sender, in order
        self._parsers = {entry.node: XidParser() for entry in logs}
        self._boot_times: dict[str, float | None] = {}
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
            *(
                threading.Thread(
                    target=self._sender_loop,
                    args=(sender, wake),
                    name=f"xid-sender-{i}",
                    daemon=True,
                )
                for i, (sender, wake) in enumerate(zip(self.senders, self._wakes, strict=True))
            ),
        ]
        for thread in self._threads:
            thread.start()
        log.info(
            "reading %d kernel log(s); at most %.1f requests/s, one write per node per %g s; "
            "spool %s (%d waiting)",
            len(self.logs),
            self.options.max_rps,
            self.options.min_write_interval,
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
        self._read_now.set()
        self._wake_senders()

    def _wake_senders(self) -> None:
        for wake in self._wakes:
            wake.set()

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
        saved, problem = self.store.saved_cursor(entry.node, entry.source)
        self._persisted[entry.node] = saved
        from_end = saved is None and not self.options.from_start
        if from_end:
            log.warning(
                "node %s: the saved read position of %s is %s (a first start, a wiped or damaged "
                "state directory); reading it from its end: Xids it already holds are not "
                "reported (--from-start reports them)",
                entry.node,
                entry.path,
                problem,
            )
        if entry.kind == "kmsg":
            boot = entry.boot_id or host_boot_id()
            self._sender_of[entry.node].state(entry.node).boot_id = boot
            # printk stamps count from boot on the monotonic clock
            self._boot_times[entry.node] = entry.boot_time or time.time() - time.monotonic()
            return KmsgReader(saved, boot, path=entry.path or DEFAULT_KMSG_PATH, from_end=from_end)
        self._boot_times[entry.node] = entry.boot_time
        return TextLogReader(
            entry.path,
            saved,
            boot_id=functools.partial(self._known_boot_id, entry.node),
            from_end=from_end,
        )

    def read_logs_once(self, only: Collection[str] | None = None) -> list[XidSighting]:
        """Read every log once (``only``: the logs of these nodes); spool the Xids found
        with the new cursors. Returns the new Xids.

        When the spool cannot be written, every log read goes back to its saved
        cursor (the lines are read again next time) and the error is raised.
        """
        batches: list[StoreBatch] = []
        for entry in self.logs if only is None else [e for e in self.logs if e.node in only]:
            batch = self._read_one(entry)
            if batch is not None:
                batches.append(batch)
        if not batches:
            return []
        try:
            added = self.store.record(batches)
        except Exception:
            self.metrics.spool_failures.inc()
            for batch in batches:
                self._readers[batch.node].rewind(self._persisted.get(batch.node))
            raise
        for batch in batches:
            self._persisted[batch.node] = batch.cursor
        for sighting in added[:20]:
            log.info(
                "node %s: Xid %d on pci %s (%s) spooled as %s",
                sighting.node,
                sighting.xid,
                sighting.pci,
                sighting.message[:80],
                sighting.id,
            )
        if len(added) > 20:
            log.info("... and %d more Xid line(s) spooled", len(added) - 20)
        for sighting in added:
            self.metrics.xids_seen.labels(xid=str(sighting.xid)).inc()
        if added:
            self.metrics.spool_depth.set(self.store.depth())
            self._wake_senders()
        return added

    def _read_one(self, entry: NodeLog) -> StoreBatch | None:
        reader = self._readers[entry.node]
        try:
            records = reader.read()
        except OSError as err:
            log.warning("cannot read the kernel log of %s (%s): %s", entry.node, entry.path, err)
            return None
        if not records:
            if reader.cursor != self._persisted.get(entry.node):
                # a first position (from the end), a rotation or a new boot: keep it
                return StoreBatch(entry.node, entry.source, reader.cursor)
            return None
        self.metrics.lines_read.inc(len(records))
        parser = self._parsers[entry.node]
        boot_time = self._boot_times.get(entry.node)
        events = [(record, parser.feed(record.text)) for record in records]
        sender = self._sender_of[entry.node]
        if any(e is not None and not r.boot_id for r, e in events):
            boot = sender.known_boot_id(entry.node)
            if boot is None:
                # the sender GETs the node; read these lines again once it knows the boot
                # (never a GET here: with many simulated nodes it would stall every read)
                sender.want_boot_id(entry.node)
                self._awaiting_boot.add(entry.node)
                self._wake_senders()
                reader.rewind(self._persisted.get(entry.node))
                return None
        sightings: list[XidSighting] = []
        for record, event in events:
            if event is None:
                continue
            boot = record.boot_id or sender.known_boot_id(entry.node) or UNKNOWN_BOOT_ID
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
                    logged_at=log_epoch(event.timestamp, boot_time, record.read_at),
                    boot_id=boot,
                    gpu_instance=event.gpu_instance,
                    compute_instance=event.compute_instance,
                )
            )
        return StoreBatch(entry.node, entry.source, reader.cursor, sightings)

    def _known_boot_id(self, node: str) -> str:
        return self._sender_of[node].state(node).boot_id or ""

    def _reader_loop(self) -> None:
        last_full = time.monotonic()
        while True:
            woken = self._read_now.wait(
                max(0.0, last_full + self.options.poll_interval - time.monotonic())
            )
            self._read_now.clear()
            if self._stop.is_set():
                return
            try:
                if woken and time.monotonic() < last_full + self.options.poll_interval:
                    # a boot id came: read again only the logs that waited for one
                    waiting, self._awaiting_boot = self._awaiting_boot, set()
                    self.read_logs_once(only=waiting)
                    continue
                last_full = time.monotonic()
                self._awaiting_boot = set()
                self.read_logs_once()
            except Exception:
                log.exception("reading the kernel logs failed; reading again from the saved cursor")

    # ------------------------------------------------------------------ sending
    def deliver_due_once(self) -> float | None:
        """Make the one write that is due first in each sender (see
        :meth:`XidSender.deliver_due_once`); the soonest wait, None when nothing waits."""
        waits = [w for w in (s.deliver_due_once() for s in self.senders) if w is not None]
        return min(waits) if waits else None

    def _sender_loop(self, sender: XidSender, wake: threading.Event) -> None:
        while not self._stop.is_set():
            try:
                wait = sender.deliver_due_once()
            except Stopped:
                return
            except Exception:
                log.exception("reporting Xids failed unexpectedly; backing off")
                wait = sender.back_off_unexpected()
            if wait is None:
                wake.wait(1.0)
                wake.clear()
            elif wait > 0:
                wake.wait(wait)
                wake.clear()
