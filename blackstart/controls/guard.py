"""Guard control: limit the blast radius of an experiment.

A chaos tool that overloads a production API server by mistake would be the
incident itself. This control:

- refuses to start unless the target is a cluster blackstart created (local
  or kind) reached under blackstart's own name for it, or its kubeconfig context
  is allow-listed (a context named from outside, as ``blackstart gameday
  --context`` does, always needs the allow-list), in the ``allowed_contexts``
  argument, the configuration key ``blackstart_allowed_contexts`` or the
  environment variable ``BLACKSTART_ALLOWED_CONTEXTS`` (comma-separated);
- interrupts the run (:class:`chaoslib.exceptions.InterruptExecution`, status
  ``interrupted``, rollbacks still played) when, from the start of the method
  until the rollbacks, a hard limit is crossed: the API server's p99 request
  latency (Prometheus, over ``p99_window``) above ``max_apiserver_p99_s``, or
  more than ``max_cordoned_nodes`` non-standby nodes cordoned (counted from a
  node watch, not a LIST per check); the latency limit does not apply while an
  action of this experiment freezes or stops the API server or etcd, nor for the
  p99 window after it is undone (the requests it held are the freeze, not load;
  the journal says so as ``p99_excused``);
- fails closed: when the API server or Prometheus has not answered for
  ``max_blind_s`` seconds, the guard cannot see the limits, and it interrupts
  the run, unless an action of this experiment took the API server away
  (``stop_apiserver``, ``hang_etcd``, a telemetry storm...) and has not been
  undone yet: an outage the experiment caused is expected, one it did not
  cause is not (:mod:`blackstart.controls.guard_watch`);
- fails the run (status ``failed``) as soon as an action of the method fails:
  a failed injection is a failed experiment, whatever the steady state says;
  and when the steady state did not hold before the method (chaoslib would
  report that run ``completed`` though nothing was injected).

Arguments::

    {"allowed_contexts": [],          # extra contexts that may be targeted
     "max_apiserver_p99_s": 10.0,     # null: no latency limit
     "max_cordoned_nodes": null,      # null: no limit on cordoned nodes
     "max_blind_s": 30.0,             # null: a silent API server never trips (fail open)
     "p99_window": "30s",
     "interval_s": 2.0}

What happened is written to the journal's ``blackstart`` extension as
``guard: {"tripped": bool, "reason": str|null, ...}``.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from types import FrameType
from typing import Any

from chaoslib.exceptions import InterruptExecution
from chaoslib.run import RunEventHandler
from chaoslib.types import Activity, Configuration, Experiment, Journal, Run, Secrets
from kubernetes import client

from blackstart.controls.guard_config import ALLOWED_ENV as ALLOWED_ENV
from blackstart.controls.guard_config import ALLOWED_KEY as ALLOWED_KEY
from blackstart.controls.guard_config import allow_list, check_limits, target_allowed
from blackstart.controls.guard_watch import Blindness, FreezeWindows, NodeWatch
from blackstart.controls.journal import blackstart_entry
from blackstart.controls.metrics import FAULT_UNDONE_BY
from blackstart.health import utc_now_iso
from blackstart.probes.apiserver import p99_query
from blackstart.probes.prometheus import scalar
from blackstart.target import Target, resolve_target

logger = logging.getLogger("chaostoolkit")

#: how late a request's latency reaches the p99 query: a scrape or two
SCRAPE_LAG_S = 10.0


def window_seconds(window: str) -> float:
    """``30s`` or ``1m`` (as :func:`check_limits` accepts them) in seconds."""
    return float(window[:-1]) * (60 if window.endswith("m") else 1)


__all__ = [
    "after_activity_control",
    "after_experiment_control",
    "after_method_control",
    "allow_list",
    "before_activity_control",
    "before_experiment_control",
    "before_method_control",
    "before_rollback_control",
    "cleanup_control",
    "configure_control",
    "target_allowed",
]


class _Guard:
    """State of the guard for one run; its monitor thread watches the hard limits."""

    def __init__(self) -> None:
        self.target: Target | None = None
        self.phase = "before"
        self.tripped = False
        self.reason: str | None = None
        self.tripped_at: str | None = None
        self.failed_injection: str | None = None
        self.checks = 0
        self.max_p99_seen: float | None = None
        self.max_cordoned_seen: int | None = None
        self.limits: dict[str, Any] = {}
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None
        self.refused: str | None = None
        self.in_call = False
        self.raised = False
        self.guard_signal = False
        self.previous_handler: Any = None
        self.blindness: Blindness | None = None
        self.freezes = FreezeWindows(FAULT_UNDONE_BY)
        self.p99_excused: str | None = None  # the last reading above the limit a freeze caused
        self.nodes: NodeWatch | None = None

    # ---------------------------------------------------------------- limits
    def check_once(self) -> str | None:
        """Evaluate the limits once; the reason of a crossing, else None."""
        assert self.target is not None
        self.checks += 1
        blind = self.blindness
        try:
            client.VersionApi(self.target.api(1)).get_code(_request_timeout=3)
        except Exception:
            if blind is not None:
                blind.silent("the API server")
        else:
            if blind is not None:
                blind.answered("the API server")
        limit_p99 = self.limits.get("max_apiserver_p99_s")
        if limit_p99 is not None and self.target.prometheus_url:
            source = f"Prometheus ({self.target.prometheus_url})"
            try:
                p99 = scalar(self.target.prometheus_url, p99_query(self.limits["p99_window"]), None)
            except Exception:
                p99 = None
                if blind is not None:
                    blind.silent(source)
            else:
                if blind is not None:
                    blind.answered(source)
            if p99 is not None:
                self.max_p99_seen = max(self.max_p99_seen or 0.0, p99)
                window_s = window_seconds(self.limits["p99_window"]) + SCRAPE_LAG_S
                excuse = self.freezes.excuse(window_s)
                if p99 > limit_p99 and excuse:
                    self.p99_excused = f"p99 {p99:.2f} s: {excuse}"
                elif p99 > limit_p99:
                    return (
                        f"API server p99 latency {p99:.2f} s is above the guard's hard limit "
                        f"of {limit_p99:g} s"
                    )
        limit_cordoned = self.limits.get("max_cordoned_nodes")
        cordoned = self.nodes.cordoned() if self.nodes is not None else None
        if limit_cordoned is not None and cordoned is not None:
            self.max_cordoned_seen = max(self.max_cordoned_seen or 0, cordoned)
            if cordoned > limit_cordoned:
                return (
                    f"{cordoned} nodes are cordoned, more than the guard's hard limit of "
                    f"{limit_cordoned}"
                )
        return blind.verdict() if blind is not None else None

    def trip(self, reason: str) -> None:
        with self.lock:
            if self.tripped:
                return
            self.tripped = True
            self.reason = reason
            self.tripped_at = utc_now_iso()
        logger.critical(f"guard: {reason}; interrupting the experiment (rollbacks will run)")

    def _nudge(self) -> None:
        """Wake the main thread (from a pause, say) so that it raises InterruptExecution.

        A signal sent to the main thread interrupts its sleep; :func:`_on_sigterm`
        raises there unless an activity's own code runs (where the exception could be
        swallowed): that activity ends, then ``after_activity_control`` raises.
        """
        if self.raised or self.phase not in ("method", "after-method"):
            return
        self.guard_signal = True
        signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGTERM)

    def monitor(self, interval: float) -> None:
        while not self.stop.wait(interval):
            if self.tripped:
                self._nudge()
                continue
            if self.phase not in ("method", "after-method"):
                continue
            try:
                reason = self.check_once()
            except Exception as err:  # a guard must never crash the run
                logger.debug(f"guard check failed: {err}")
                continue
            if reason:
                self.trip(reason)

    def interrupt_if_tripped(self) -> None:
        if self.tripped and self.phase in ("method", "after-method"):
            self.raised = True
            raise InterruptExecution(f"guard: {self.reason}")


class _ActivityTracker(RunEventHandler):  # type: ignore[misc]
    """Knows when an activity's own code runs (as opposed to a pause or chaoslib's code)."""

    def start_activity(self, activity: Activity) -> None:
        if threading.current_thread() is threading.main_thread():  # not background ones
            _guard.in_call = True

    def activity_completed(self, activity: Activity, run: Run) -> None:
        if threading.current_thread() is threading.main_thread():
            _guard.in_call = False


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    """SIGTERM handler while the guard is on: the guard's own nudges, else chaoslib's."""
    if not _guard.guard_signal:
        previous = _guard.previous_handler
        if callable(previous):
            previous(signum, frame)
        elif previous != signal.SIG_IGN:  # the default: terminate, as without the guard
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)
        return
    _guard.guard_signal = False
    if _guard.phase in ("method", "after-method") and not _guard.in_call and not _guard.raised:
        _guard.raised = True
        raise InterruptExecution(f"guard: {_guard.reason}")


_guard = _Guard()


def configure_control(
    configuration: Configuration = None, event_registry: Any = None, **_: Any
) -> None:
    """Start from a clean state for this run; follow activities through chaoslib's events."""
    global _guard
    _guard.stop.set()
    _guard = _Guard()
    if event_registry is not None:
        event_registry.register(_ActivityTracker())


def before_experiment_control(
    context: Experiment,
    configuration: Configuration = None,
    secrets: Secrets = None,
    allowed_contexts: list[str] | None = None,
    max_apiserver_p99_s: float | None = 10.0,
    max_cordoned_nodes: int | None = None,
    p99_window: str = "30s",
    interval_s: float = 2.0,
    max_blind_s: float | None = 30.0,
    **_: Any,
) -> None:
    """Refuse a target that is not allowed; start watching the hard limits."""
    check_limits(max_apiserver_p99_s, max_cordoned_nodes, p99_window, interval_s, max_blind_s)
    try:
        target = resolve_target(configuration, secrets)
    except Exception as err:
        raise InterruptExecution(f"guard: no target cluster: {err}") from err
    ok, why = target_allowed(target, allow_list(configuration, allowed_contexts))
    if not ok:
        _guard.refused = why
        raise InterruptExecution(f"guard: {why}")
    logger.info(f"guard: {why}")
    _guard.target = target
    _guard.limits = {
        "max_apiserver_p99_s": max_apiserver_p99_s,
        "max_cordoned_nodes": max_cordoned_nodes,
        "p99_window": p99_window,
        "max_blind_s": max_blind_s,
    }
    if max_blind_s is not None:
        _guard.blindness = Blindness(float(max_blind_s), FAULT_UNDONE_BY)
    if max_cordoned_nodes is not None:
        _guard.nodes = NodeWatch(target.api(), _guard.stop)
        _guard.nodes.start()
    if threading.current_thread() is threading.main_thread():
        _guard.previous_handler = signal.getsignal(signal.SIGTERM)
        signal.signal(signal.SIGTERM, _on_sigterm)
    _guard.thread = threading.Thread(
        target=_guard.monitor, args=(float(interval_s),), name="blackstart-guard", daemon=True
    )
    _guard.thread.start()


def before_method_control(context: Experiment, **_: Any) -> None:
    _guard.phase = "method"


def after_method_control(context: Experiment, **_: Any) -> None:
    _guard.phase = "after-method"
    _guard.interrupt_if_tripped()


def before_rollback_control(context: Experiment, **_: Any) -> None:
    _guard.phase = "rollback"
    _guard.guard_signal = False


def before_activity_control(context: Activity, **_: Any) -> None:
    """No new activity of the method once the guard tripped; never act on a refused target.

    Rollbacks of a refused run are refused too: they would change the same cluster.
    """
    if _guard.refused and context.get("type") == "action":
        raise InterruptExecution(f"guard: {_guard.refused}")
    if _guard.target is None and context.get("type") == "action" and _guard.phase == "method":
        raise InterruptExecution("guard: the guard did not check the target; not injecting")
    _guard.interrupt_if_tripped()
    if _guard.phase == "method":
        _guard.freezes.opening(_func(context))
        if _guard.blindness is not None:
            _guard.blindness.opening(_func(context))


def _func(activity: Activity) -> str | None:
    provider = activity.get("provider") if isinstance(activity, dict) else None
    func = provider.get("func") if isinstance(provider, dict) else None
    return str(func) if func else None


def after_activity_control(context: Activity, state: Run = None, **_: Any) -> None:
    """A failed action of the method fails the run; a tripped guard interrupts it."""
    _guard.freezes.closing(_func(context))
    if _guard.blindness is not None:
        _guard.blindness.closing(_func(context))
    if (
        _guard.phase == "method"
        and context.get("type") == "action"
        and isinstance(state, dict)
        and state.get("status") == "failed"
    ):
        exception = state.get("exception") or []
        detail = str(exception[-1]).strip() if exception else "no detail"
        prefix = "chaoslib.exceptions.ActivityFailed: "
        while detail.startswith(prefix):
            detail = detail[len(prefix) :]
        _guard.failed_injection = f"action {context.get('name')!r} failed: {detail}"
        logger.error(f"guard: {_guard.failed_injection}; stopping the method (rollbacks will run)")
        raise InterruptExecution(f"guard: {_guard.failed_injection}")
    _guard.interrupt_if_tripped()


def after_experiment_control(context: Experiment, state: Journal = None, **_: Any) -> None:
    """Write what the guard saw into the journal; a failed injection makes the run failed."""
    _guard.stop.set()
    if not isinstance(state, dict):
        return
    if _guard.failed_injection:
        state["status"] = "failed"
    before = (state.get("steady_states") or {}).get("before")
    not_steady = isinstance(before, dict) and not before.get("steady_state_met", True)
    if not_steady and state.get("status") == "completed":
        # chaoslib reports "completed" when the hypothesis fails before the method, though
        # nothing was tested: a game day must not count that as a pass
        state["status"] = "failed"
        logger.error("guard: the steady state did not hold before the method; run failed")
    entry = blackstart_entry(state)
    entry["guard"] = {
        "tripped": _guard.tripped,
        "refused": _guard.refused,
        "reason": _guard.reason or _guard.failed_injection or _guard.refused,
        "tripped_at": _guard.tripped_at,
        "failed_injection": _guard.failed_injection,
        "limits": dict(_guard.limits),
        "checks": _guard.checks,
        "max_apiserver_p99_seen_s": _guard.max_p99_seen,
        "p99_excused": _guard.p99_excused,
        "max_cordoned_seen": _guard.max_cordoned_seen,
        "node_lists": _guard.nodes.lists if _guard.nodes is not None else 0,
    }


def cleanup_control() -> None:
    _guard.stop.set()
    if _guard.thread is not None:
        _guard.thread.join(5.0)
    restore = _guard.previous_handler
    if (
        restore is not None
        and threading.current_thread() is threading.main_thread()
        and signal.getsignal(signal.SIGTERM) is _on_sigterm
    ):
        signal.signal(signal.SIGTERM, restore)
