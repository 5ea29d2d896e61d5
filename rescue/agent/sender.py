"""The agent's sending side: spooled Xids become the Node condition and an Event, paced per node.

Each node gets at most one write per ``min_write_interval`` seconds, so one bad
job logging Xids on a thousand nodes costs the API server at most a hundred
writes a second, not thousands. The first write after a quiet spell goes at
once, with what the read that found the burst held (no burst window first: every
millisecond here is one before the controller can cordon); lines of the same
burst read within ``burst_window`` after it are its tail, written once when the
burst is finished (quiet for a window), not an interval later.
A write slot goes to the ``GPUXidError`` condition when it has Xids it does not
hold yet; otherwise the condition and the ``XidError`` Event take turns. An
Event never holds back a Xid the condition lacks: such a write waits only for
the condition's own interval (at most one condition write per interval), so a
node's writes are at most one condition and one Event per interval. The
condition is what the controller acts on: the spool is acknowledged as soon as
the condition holds the Xids. The Event is best-effort: a repeat of the same
Xid adds to the ``count`` of the Event already there (as Kubernetes event
series do); an Event the API server refuses is logged and dropped, it never
holds back the condition.

With ``prefetch`` (the default), the sender reads each of its nodes once while
nothing is due: the condition as it stands and the boot id. A first Xid after
the agent starts is then one write (the condition), not a read and then a write:
a node's own agent makes one GET at start; a process serving many simulated
nodes makes one per node, within its request budget, before any Xid comes.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from kubernetes import client

from blackstart.rescue.agent.kmsg import UNKNOWN_BOOT_ID
from blackstart.rescue.agent.metrics import AgentMetrics
from blackstart.rescue.agent.paced_api import AlreadyExists, ApiRetry, NotFound, PacedApi
from blackstart.rescue.agent.spool import AgentStore, PendingReport
from blackstart.rescue.pacing import backoff_delay
from blackstart.rescue.wire.signal import (
    XidSighting,
    condition_patch,
    fold_reports,
    key_of_report,
    reports_from_node,
)
from blackstart.rescue.wire.xid_event import (
    event_body,
    event_name,
    event_series_patch,
)

__all__ = ["SenderOptions", "XidSender"]

log = logging.getLogger("blackstart.rescue.agent.sender")

_STRATEGIC_MERGE = "application/strategic-merge-patch+json"
_MERGE = "application/merge-patch+json"


@dataclass(frozen=True)
class SenderOptions:
    """How the sender paces itself (see ``AgentOptions`` of the node agent)."""

    burst_window: float = 0.05
    min_write_interval: float = 10.0
    collapse_window: float = 600.0
    backoff_base: float = 0.5
    backoff_cap: float = 10.0
    request_timeout: tuple[float, float] = (3.0, 10.0)
    event_namespace: str = "default"
    max_batch: int = 500
    prefetch: bool = True


@dataclass
class _EventDebt:
    """Xid lines the condition holds that no Event has told about yet."""

    first: XidSighting
    key: str
    count: int


@dataclass
class _EventSeries:
    """The node's last Event: more of the same Xid add to its count."""

    name: str
    key: str
    count: int


@dataclass
class _NodeState:
    boot_id: str | None = None
    fixed_boot: bool = False  # given up front: never replaced by the Node's
    uid: str | None = None
    reports: list[dict[str, Any]] | None = None  # the condition's reports as last written
    next_write: float = 0.0  # the next write slot of any kind
    tail_until: float = 0.0  # lines read until then are the tail of the burst just written
    condition_written: float = 0.0
    event_written: float = 0.0
    debt: _EventDebt | None = None
    series: _EventSeries | None = None


class XidSender:
    """Reports the spooled Xids of its nodes; :meth:`deliver_due_once` makes one write."""

    def __init__(
        self,
        store: AgentStore,
        core: client.CoreV1Api,
        api: PacedApi,
        options: SenderOptions,
        metrics: AgentMetrics,
        boot_ids: Mapping[str, str | None],
        clock: Callable[[], float],
        on_boot_id: Callable[[], None] | None = None,
    ) -> None:
        self.store = store
        self.core = core
        self.api = api
        self.options = options
        self.metrics = metrics
        self._clock = clock
        self._on_boot_id = on_boot_id  # the reader waits for it to read those lines again
        self._states = {
            node: _NodeState(boot_id=boot, fixed_boot=bool(boot)) for node, boot in boot_ids.items()
        }
        self.nodes = frozenset(boot_ids)  # the nodes this sender writes for
        self._lock = threading.Lock()  # the reader may GET a node while the sender writes it
        self._attempt = 0
        self.backoff_until = 0.0
        self._boots_wanted: dict[str, None] = {}
        self._boots_missed: set[str] = set()
        # nodes to read once while nothing is due, in order (see the module's docstring)
        self._to_prefetch: dict[str, None] = dict.fromkeys(
            sorted(boot_ids) if options.prefetch else ()
        )

    def state(self, node: str) -> _NodeState:
        return self._states.setdefault(node, _NodeState())

    # ------------------------------------------------------------------ scheduling
    def deliver_due_once(self) -> float | None:
        """Make the one write that is due first, if any.

        Returns 0.0 after a write, the seconds until the next write is due or
        the backoff ends, or None when nothing waits.
        """
        now = self._clock()
        if now < self.backoff_until:
            return self.backoff_until - now
        if self._boots_wanted:
            return self._learn_one_boot_id()
        window = self.options.burst_window
        due: list[tuple[float, str]] = []
        finished: dict[str, float] = {}
        heads: set[str] = set()
        tails: set[str] = set()
        for burst in self.store.bursts():
            if burst.node not in self.nodes:
                continue  # another sender's
            state = self.state(burst.node)
            if state.next_write <= burst.first_read:
                # the node was quiet: the burst's head goes at once, what it read then and
                # there (the controller can cordon a window sooner)
                finished[burst.node] = burst.first_read
                heads.add(burst.node)
                continue
            # a burst is finished after a quiet window, or when it has lasted five
            finished[burst.node] = min(
                burst.last_read + window, burst.first_read + max(1.0, 5 * window)
            )
            if burst.first_read <= state.tail_until:
                tails.add(burst.node)  # the rest of the burst the head began
        for node in {*finished, *(n for n, s in self._states.items() if s.debt is not None)}:
            state = self.state(node)
            # the tail of a burst goes when it is finished, not a write interval later
            slot = finished[node] if node in tails else state.next_write
            # an Event took the slot: Xids the condition lacks wait only for its own interval
            own = state.condition_written + self.options.min_write_interval
            if node in finished and own < slot and self._lacks_new(node, state):
                slot = own
            ready = max(finished.get(node, float("inf")), slot)
            if state.debt is not None:
                ready = min(ready, state.next_write)
            due.append((ready, node))
        if not due:
            return self._prefetch_one() if self._to_prefetch else None
        ready, node = min(due)
        if ready > now:
            return max(0.01, ready - now)
        try:
            due_now = finished.get(node, float("inf")) <= now
            self._write_slot(node, due_now, head=node in heads, tail=node in tails)
        except ApiRetry as err:
            return self._back_off(err)
        self._attempt = 0
        return 0.0

    def _write_slot(
        self, node: str, burst_finished: bool, head: bool = False, tail: bool = False
    ) -> None:
        """The node's write: the condition when it lacks Xids, else the Event's turn.

        ``head``: the first lines of a burst on a quiet node, written at once; lines
        read within a burst window after it are its ``tail``, which goes when it is
        finished even within the write interval, once (later lines wait for the interval).
        """
        state = self.state(node)
        pending = self.store.pending(node, self.options.max_batch) if burst_finished else []
        # A repeat would fold into a report of our last write; read the condition as it is
        # now first: a person or a tool may have cleared it since, and a Xid folded into a
        # cleared report (whose id the controller has handled) would never be acted on.
        if pending and (state.reports is None or self._repeats(state, pending)):
            try:
                self.fetch_node(node, fresh=True)
            except NotFound:
                lines = sum(p.count for p in pending)
                log.error("node %s does not exist; dropping its %d spooled Xid(s)", node, lines)
                self.store.acknowledge(node, pending)
                self.metrics.spool_depth.set(self.store.depth())
                return
        # in the slot an Event took: new Xids only
        early = self._clock() < state.next_write and not tail
        if pending and (
            tail
            or state.debt is None
            or state.event_written >= state.condition_written
            or self._new_keys(state, pending)
        ):
            if early and not self._new_keys(state, pending):
                return
            self._write_condition(node, state, pending)
            # lines read within a window of a head are its tail; after a tail, none
            state.tail_until = self._clock() + self.options.burst_window if head else 0.0
        elif state.debt is not None and not early:
            self._write_event(node, state)
        else:
            return
        state.next_write = self._clock() + self.options.min_write_interval

    def _lacks_new(self, node: str, state: _NodeState) -> bool:
        """The node's spooled Xids include one its condition does not hold yet."""
        return self._new_keys(state, self.store.pending(node, self.options.max_batch))

    def _repeats(self, state: _NodeState, pending: list[PendingReport]) -> bool:
        held = {key_of_report(r) for r in state.reports or []}
        return any(p.key in held for p in pending)

    def _new_keys(self, state: _NodeState, pending: list[PendingReport]) -> bool:
        held = {key_of_report(r) for r in state.reports or []}
        return any(p.key not in held for p in pending)

    def _back_off(self, err: ApiRetry | None) -> float:
        retry_after = err.retry_after if err is not None else None
        delay = backoff_delay(
            self._attempt, self.options.backoff_base, self.options.backoff_cap, retry_after
        )
        self._attempt += 1
        self.backoff_until = self._clock() + delay
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

    def back_off_unexpected(self) -> float:
        """Back off after an error that is not an API answer (a bug, a broken spool)."""
        return self._back_off(None)

    # ------------------------------------------------------------------ writes
    def _write_condition(self, node: str, state: _NodeState, pending: list[PendingReport]) -> None:
        now = self._clock()
        with self._lock:
            merged = fold_reports(
                state.reports or [],
                [p.report(now) for p in pending],
                self.options.collapse_window,
            )
        lines = sum(p.count for p in pending)
        try:
            result = self.api.request(
                "patch",
                "nodes/status",
                lambda: self.core.patch_node_status_with_http_info(
                    node,
                    condition_patch(merged, now),
                    _content_type=_STRATEGIC_MERGE,
                    _request_timeout=self.options.request_timeout,
                    _preload_content=False,
                ),
            )
        except NotFound:
            log.error("node %s does not exist; dropping its %d spooled Xid(s)", node, lines)
            self.store.acknowledge(node, pending)
            self.metrics.spool_depth.set(self.store.depth())
            return
        with self._lock:
            state.reports = merged
        state.condition_written = now
        self.remember_node(node, result)
        self.store.acknowledge(node, pending)
        self.metrics.spool_depth.set(self.store.depth())
        self.metrics.reports_sent.inc(lines)
        self.metrics.bursts_sent.inc()
        done = self._clock()
        for report in pending:
            self.metrics.delivery_seconds.observe(max(0.0, done - report.first_read))
        for report in pending:
            if state.debt is None:
                state.debt = _EventDebt(report.first, report.key, report.count)
            else:
                state.debt.count += report.count
        log.info(
            "node %s: condition GPUXidError now holds %d report(s) (%d new Xid line(s))",
            node,
            len(merged),
            lines,
        )

    def _write_event(self, node: str, state: _NodeState) -> None:
        debt = state.debt
        if debt is None:
            return
        state.debt = None  # best-effort: whatever happens now, the Event never blocks
        state.event_written = self._clock()
        namespace = self.options.event_namespace
        series = state.series
        try:
            if series is not None and series.key == debt.key:
                try:
                    self._add_to_series(series, debt.count)
                    return
                except NotFound:
                    state.series = None  # expired (an Event lives an hour): start anew
            name = event_name(node, debt.first.id)
            body = event_body(
                node, state.uid, [debt.first], self._clock(), namespace=namespace, total=debt.count
            )
            # AlreadyExists: posted before a restart, it is the series to add to
            with contextlib.suppress(AlreadyExists):
                self.api.request(
                    "create",
                    "events",
                    lambda: self.core.create_namespaced_event_with_http_info(
                        namespace,
                        body,  # type: ignore[arg-type]
                        _request_timeout=self.options.request_timeout,
                        _preload_content=False,
                    ),
                )
            state.series = _EventSeries(name=name, key=debt.key, count=debt.count)
        except NotFound:
            self.metrics.events_failed.inc()
            log.warning(
                "node %s: no XidError Event: namespace %s not found; the condition holds the Xids",
                node,
                namespace,
            )
        except ApiRetry as err:
            self.metrics.events_failed.inc()
            log.warning(
                "node %s: XidError Event not written (%s); dropped, the condition holds the Xids",
                node,
                err,
            )
            if err.retryable:
                raise  # the API server is struggling: back off before the next request

    def _add_to_series(self, series: _EventSeries, count: int) -> None:
        total = series.count + count
        self.api.request(
            "patch",
            "events",
            lambda: self.core.patch_namespaced_event_with_http_info(
                series.name,
                self.options.event_namespace,
                event_series_patch(total, self._clock()),
                _content_type=_MERGE,
                _request_timeout=self.options.request_timeout,
                _preload_content=False,
            ),
        )
        series.count = total

    # ------------------------------------------------------------------ the Node
    def fetch_node(self, node: str, fresh: bool = False) -> None:
        """GET the node: its condition as it is, its uid and boot id.

        ``fresh``: the condition read replaces what this agent last wrote (the sender's
        own read before a write); else it only fills in a condition not known yet.
        """
        result = self.api.request(
            "get",
            "nodes",
            lambda: self.core.read_node_with_http_info(
                node, _request_timeout=self.options.request_timeout, _preload_content=False
            ),
        )
        state = self.state(node)
        with self._lock:
            # the reader may GET while the sender patches: never replace what was written since
            if state.reports is None or fresh:
                state.reports = reports_from_node(result)
        self.remember_node(node, result)

    def remember_node(self, node: str, obj: Any) -> None:
        """Keep the node's uid and boot id (``obj``: the Node as a dict, or a client model)."""
        state = self.state(node)
        if isinstance(obj, Mapping):
            uid = (obj.get("metadata") or {}).get("uid")
            boot = ((obj.get("status") or {}).get("nodeInfo") or {}).get("bootID")
        else:
            uid = getattr(getattr(obj, "metadata", None), "uid", None)
            info = getattr(getattr(obj, "status", None), "node_info", None)
            boot = getattr(info, "boot_id", None)
        if uid:
            state.uid = str(uid)
        if boot and not state.fixed_boot:
            state.boot_id = str(boot)

    def known_boot_id(self, node: str) -> str | None:
        """The node's boot id; ``"unknown"`` once the API server could not tell; else None."""
        boot = self.state(node).boot_id
        if boot:
            return boot
        return UNKNOWN_BOOT_ID if node in self._boots_missed else None

    def want_boot_id(self, node: str) -> None:
        """Ask for the node's boot id: the sender GETs the node next (one per node)."""
        if node not in self._boots_missed:
            self._boots_wanted.setdefault(node, None)

    def _prefetch_one(self) -> float:
        """Read the next node not known yet (nothing else is due); 0.0, or a backoff."""
        node = next(iter(self._to_prefetch))
        state = self.state(node)
        if state.reports is not None and (state.boot_id or node in self._boots_missed):
            self._to_prefetch.pop(node, None)  # a write or a boot-id read came first
            return 0.0
        try:
            self.fetch_node(node)
        except NotFound:
            log.warning("node %s does not exist (yet); it is read at its first Xid", node)
        except ApiRetry as err:
            # it goes to the back of the line; the sender backs off as after any failure
            self._to_prefetch.pop(node, None)
            self._to_prefetch[node] = None
            return self._back_off(err)
        self._attempt = 0
        self._to_prefetch.pop(node, None)
        if self._to_prefetch:
            return 0.0
        log.info("read the condition and boot id of %d node(s) ahead of any Xid", len(self.nodes))
        return 0.0

    def _learn_one_boot_id(self) -> float:
        node = next(iter(self._boots_wanted))
        try:
            self.fetch_node(node)
        except (ApiRetry, NotFound) as err:
            log.warning(
                "node %s: boot id unknown (%s); its Xid ids use %r",
                node,
                err or type(err).__name__,
                UNKNOWN_BOOT_ID,
            )
            self._boots_missed.add(node)
            self._boots_wanted.pop(node, None)
            return self._back_off(err) if isinstance(err, ApiRetry) else 0.0
        self._boots_wanted.pop(node, None)
        if not self.state(node).boot_id:
            log.warning("node %s reports no boot id; its Xid ids use %r", node, UNKNOWN_BOOT_ID)
            self._boots_missed.add(node)
        if self._on_boot_id is not None:
            self._on_boot_id()
        return 0.0
