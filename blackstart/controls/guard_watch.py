"""What the guard control watches with: a node watch, and who has stopped answering since when.

:class:`NodeWatch` keeps the nodes' cordons from one LIST and then a watch (no
LIST every check: the guard must not load the API server it protects).

:class:`Blindness` fails the guard closed: a source (the API server,
Prometheus) that has not answered for ``max_blind_s`` seconds trips it, unless
the experiment itself caused the outage: an action that takes the API server
away (:data:`OUTAGE_FAULTS`) opens a fault window that lasts until one of the
activities that undo it has run (``FAULT_UNDONE_BY`` of the metrics control).

:class:`FreezeWindows` excuses the latency limit for a freeze or stop the
experiment caused (:data:`FREEZE_FAULTS`): every request a frozen API server
held ends as slow as the freeze, which is the fault, not an overload.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

from blackstart.names import STANDBY_LABEL

__all__ = [
    "FREEZE_FAULTS",
    "OUTAGE_FAULTS",
    "RESTART_FAULTS",
    "STORM_FAULTS",
    "Blindness",
    "FreezeWindows",
    "NodeWatch",
]

logger = logging.getLogger("chaostoolkit")

#: the telemetry storm, started bare or as the telemetry service rolled out to every node:
#: it is meant to take the API server down (the incident)
STORM_FAULTS = frozenset({"start_telemetry_storm", "deploy_telemetry_service"})

#: actions that may restart kube-apiserver themselves (the control plane sized for the
#: experiment, asked to start again on its new size): the outage ends with the action
RESTART_FAULTS = frozenset({"limit_control_plane"})

#: actions that make the API server (and what asks it) stop answering, on purpose
OUTAGE_FAULTS = (
    frozenset({"stop_apiserver", "hang_apiserver", "stop_etcd", "hang_etcd"})
    | STORM_FAULTS
    | RESTART_FAULTS
)

#: outage faults whose latency is their own doing; a storm is not one (its latency is what
#: the limit is there for: storm experiments that want none set it to null)
#: (a control plane sized for the experiment restarts only when asked, and then its
#: outage ends with the action: it excuses no latency after it)
FREEZE_FAULTS = OUTAGE_FAULTS - STORM_FAULTS - RESTART_FAULTS


class FreezeWindows:
    """The experiment's own freezes and stops of the API server or etcd, and when they ended.

    The p99 latency over a window that saw one is the freeze's length, not load:
    the latency limit does not apply while one is on, nor until the p99 window
    (plus a scrape's lag) has rolled past its end.
    """

    def __init__(
        self, undone_by: dict[str, tuple[str, ...]], clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._undone_by = undone_by
        self._clock = clock
        self._open: set[str] = set()
        self._ended_at: float | None = None
        self._lock = threading.Lock()

    def opening(self, func: str | None) -> None:
        if func in FREEZE_FAULTS:
            with self._lock:
                self._open.add(func)

    def closing(self, func: str | None) -> None:
        with self._lock:
            for fault in [f for f in self._open if func in self._undone_by.get(f, ())]:
                self._open.discard(fault)
                self._ended_at = self._clock()

    def excuse(self, window_s: float) -> str | None:
        """Why a latency reading now is the experiment's own freeze, else None."""
        with self._lock:
            if self._open:
                return f"{', '.join(sorted(self._open))} under way"
            if self._ended_at is not None and self._clock() - self._ended_at < window_s:
                return f"a freeze ended {self._clock() - self._ended_at:.0f} s ago"
        return None


class Blindness:
    """Since when each source has not answered, and the experiment's own fault windows."""

    def __init__(
        self,
        max_blind_s: float,
        undone_by: dict[str, tuple[str, ...]],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_blind_s = max_blind_s
        self._undone_by = undone_by
        self._clock = clock
        self._since: dict[str, float] = {}
        self._windows: dict[str, int] = {}  # open fault -> how many times opened
        self._lock = threading.Lock()

    def answered(self, source: str) -> None:
        with self._lock:
            self._since.pop(source, None)

    def silent(self, source: str) -> None:
        with self._lock:
            self._since.setdefault(source, self._clock())

    def opening(self, func: str | None) -> None:
        """An activity starts: an outage fault opens its window (before it takes anything away)."""
        if func in OUTAGE_FAULTS:
            with self._lock:
                self._windows[func] = self._windows.get(func, 0) + 1

    def closing(self, func: str | None) -> None:
        """An activity ended: one that undoes a fault closes its window; silence counts afresh."""
        if not func:
            return
        with self._lock:
            for fault in list(self._windows):
                if func in self._undone_by.get(fault, ()):
                    del self._windows[fault]
                    # the component comes back now: its silence counts from here
                    now = self._clock()
                    self._since = dict.fromkeys(self._since, now)

    @property
    def expected(self) -> list[str]:
        """The faults of this experiment whose outage is under way."""
        with self._lock:
            return sorted(self._windows)

    def verdict(self) -> str | None:
        """Why the guard must trip (a source silent too long, no fault of ours), else None."""
        with self._lock:
            if self._windows:
                return None
            now = self._clock()
            for source, since in sorted(self._since.items()):
                if now - since >= self.max_blind_s:
                    return (
                        f"{source} has not answered for {now - since:.0f} s and no action of "
                        "this experiment took it away: the guard cannot see the blast radius, "
                        "so it fails closed"
                    )
        return None


class NodeWatch:
    """How many non-standby nodes are cordoned, from a watch; None until the first LIST."""

    def __init__(self, api: client.ApiClient, stop: threading.Event) -> None:
        self._core = client.CoreV1Api(api)
        self._stop = stop
        self._cordoned: dict[str, bool] = {}
        self._listed = False
        self._lock = threading.Lock()
        self.lists = 0
        self.thread = threading.Thread(target=self._run, name="blackstart-guard-nodes", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def cordoned(self) -> int | None:
        with self._lock:
            return sum(self._cordoned.values()) if self._listed else None

    @staticmethod
    def _counts(node: Any) -> bool:
        labels = (node.metadata.labels or {}) if node.metadata else {}
        return bool(node.spec and node.spec.unschedulable and labels.get(STANDBY_LABEL) != "true")

    def _run(self) -> None:
        version: str | None = None
        while not self._stop.is_set():
            try:
                if version is None:
                    listed: Any = self._core.list_node(_request_timeout=10)
                    self.lists += 1
                    with self._lock:
                        self._cordoned = {n.metadata.name: self._counts(n) for n in listed.items}
                        self._listed = True
                    version = listed.metadata.resource_version
                stream = watch.Watch().stream(  # type: ignore[no-untyped-call]
                    self._core.list_node,
                    resource_version=version,
                    timeout_seconds=60,
                    _request_timeout=75,
                )
                for event in stream:
                    node = event["object"]
                    version = node.metadata.resource_version
                    with self._lock:
                        if event["type"] == "DELETED":
                            self._cordoned.pop(node.metadata.name, None)
                        else:
                            self._cordoned[node.metadata.name] = self._counts(node)
                    if self._stop.is_set():
                        return
            except ApiException as err:
                if err.status == 410:
                    version = None  # too old: list again
                else:
                    self._stop.wait(2.0)
            except Exception as err:  # the API server is away: the guard's blindness sees it
                logger.debug(f"guard: node watch: {err}")
                self._stop.wait(2.0)
