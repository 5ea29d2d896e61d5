"""Metrics control: sample the cluster during the run and write it into the journal.

From the start of the experiment to its end, a background thread samples
every ``interval_s`` seconds:

- PromQL queries: by default the API server's p99 latency and its 429 rate
  (``apiserver_p99_seconds``, ``apiserver_429_per_second``), plus any given
  in ``queries`` (``[{"name", "title", "unit", "query"}]``);
- probes: data-plane DNS through CoreDNS (``dns_success_ratio``,
  ``dns_p99_seconds``), nodes Ready and cordoned (``nodes_ready``,
  ``nodes_cordoned``), schedulable GPUs (``schedulable_gpus``); choose with
  ``probes`` (``["dns", "nodes"]`` by default);
- the RescuePlans of the run (when the rescue CRDs exist).

It also records a fault window for every fault the method injects (start of
the action, end of the activity that undoes it, usually its rollback) and, at
the end, the seconds from each Xid to its node's cordon
(``xid_to_cordon_seconds``, from the RescuePlans). Everything goes into the
journal's ``blackstart`` extension (``metrics``, ``faults``, ``rescue_plans``).
A value that cannot be read at a tick (the API server is down, say) is
recorded as null: gaps are part of the story.

Arguments::

    {"interval_s": 2.0, "probes": ["dns", "nodes"], "queries": [],
     "dns_names": ["kubernetes.default.svc.cluster.local"]}
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from typing import Any

from chaoslib.exceptions import InterruptExecution
from chaoslib.types import Activity, Configuration, Experiment, Journal, Run, Secrets
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from blackstart.clusters.local.kwok_nodes import node_is_ready
from blackstart.controls.journal import blackstart_entry, environment
from blackstart.controls.series import CONTROL_PLANE_QUERIES, STANDARD_SERIES
from blackstart.health import parse_iso, to_iso, utc_now_iso
from blackstart.names import RESCUE_GROUP, RESCUE_VERSION, STANDBY_LABEL
from blackstart.names import RESCUE_PLANS as RESCUE_PLURAL
from blackstart.probes.apiserver import p99_query, rate_429_query
from blackstart.probes.dns import resolve_many
from blackstart.probes.fleet import node_gpus, node_schedulable
from blackstart.probes.prometheus import scalar
from blackstart.target import Target, resolve_target

logger = logging.getLogger("chaostoolkit")

__all__ = [
    "FAULT_UNDONE_BY",
    "after_activity_control",
    "after_experiment_control",
    "before_experiment_control",
    "before_method_control",
    "before_rollback_control",
    "cleanup_control",
    "configure_control",
]


# fault action -> the activities that end it (rollbacks, or restores run in the method)
FAULT_UNDONE_BY: dict[str, tuple[str, ...]] = {
    "stop_apiserver": ("start_apiserver", "resume_apiserver"),
    "hang_apiserver": ("resume_apiserver", "start_apiserver"),
    "stop_etcd": ("start_etcd", "resume_etcd"),
    "hang_etcd": ("resume_etcd", "start_etcd"),
    "kill_coredns": ("start_coredns", "restore_coredns"),
    "hang_coredns": ("restore_coredns", "start_coredns"),
    "restart_coredns": ("restore_coredns",),
    "break_coredns_config": ("restore_coredns",),
    "drop_dns_answers": ("restore_coredns",),
    "add_dns_latency": ("restore_coredns",),
    "cut_coredns_from_apiserver": ("restore_coredns",),
    "start_telemetry_storm": (
        "stop_telemetry_storm",
        "wait_for_telemetry_storm",
        "remove_telemetry_service",
    ),
    "deploy_telemetry_service": ("remove_telemetry_service",),
    "roll_out_telemetry_service": ("remove_telemetry_service",),
    "stop_kwok_controller": ("start_kwok_controller",),
    "inject_xid": ("restore_xid_nodes",),
    "xid_storm": ("restore_xid_nodes",),
    "cordon_node": ("uncordon_node",),
    # its kube-apiserver restart ends with the action; the smaller machine with the restore
    "limit_control_plane": ("limit_control_plane", "restore_control_plane_size"),
    "drain_nodes": ("uncordon_node",),
}

PROBES = ("dns", "nodes")


def _func(activity: Activity) -> str:
    provider = activity.get("provider") or {}
    return str(provider.get("func") or "")


def _iso(text: Any) -> str | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        return to_iso(parse_iso(text))
    except ValueError:
        return None


class _Sampler:
    """The series of one run, filled by a background thread."""

    def __init__(self) -> None:
        self.target: Target | None = None
        self.interval = 2.0
        self.queries: list[dict[str, str]] = []
        self.probes: tuple[str, ...] = PROBES
        self.dns_names: list[str] = []
        self.series: dict[str, dict[str, Any]] = {}
        self.faults: list[dict[str, Any]] = []
        self.plans: dict[str, dict[str, Any]] = {}
        self.started_at = utc_now_iso()
        self.phase = "before"
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None
        self.lock = threading.Lock()
        self.rescue_crd = True
        self.ticks = 0

    def add_series(self, name: str, query: str, title: str = "", unit: str = "") -> None:
        std_title, std_unit = STANDARD_SERIES.get(name, (name, ""))
        self.series[name] = {
            "name": name,
            "title": title or std_title,
            "unit": unit or std_unit,
            "query": query,
            "points": [],
        }

    def point(self, name: str, when: str, value: float | None) -> None:
        with self.lock:
            if name in self.series:
                self.series[name]["points"].append([when, value])

    # ---------------------------------------------------------------- sampling
    def sample(self) -> None:
        assert self.target is not None
        self.ticks += 1
        when = utc_now_iso()
        prometheus = self.target.prometheus_url
        for spec in self.queries:
            value = None
            if prometheus:
                try:
                    value = scalar(prometheus, spec["query"], None)
                except Exception:
                    value = None
            self.point(spec["name"], when, value)
        if "dns" in self.probes:
            self._sample_dns(when)
        if "nodes" in self.probes:
            self._sample_nodes(when)
        if self.ticks % 2 == 1:
            self._sample_plans()

    def _sample_dns(self, when: str) -> None:
        assert self.target is not None
        ratio = p99 = None
        server = self.target.dns_server
        if server:
            host, _, port = server.rpartition(":")
            try:
                result = resolve_many(host, int(port), self.dns_names, 5, 0.3, "A")
                ratio, p99 = result["success_ratio"], result["p99_seconds"]
            except Exception:
                ratio = p99 = None
        self.point("dns_success_ratio", when, ratio)
        self.point("dns_p99_seconds", when, p99)

    def _sample_nodes(self, when: str) -> None:
        assert self.target is not None
        ready = cordoned = gpus = None
        try:
            core = client.CoreV1Api(self.target.api(1))
            nodes: list[Any] = core.list_node(_request_timeout=min(self.interval, 3.0)).items
            ready = sum(1 for n in nodes if node_is_ready(n))
            cordoned = sum(
                1
                for n in nodes
                if n.spec
                and n.spec.unschedulable
                and (n.metadata.labels or {}).get(STANDBY_LABEL) != "true"
            )
            gpus = sum(node_gpus(n) for n in nodes if node_schedulable(n))
        except Exception:
            pass  # the API server is down or slow: a gap in the series
        self.point("nodes_ready", when, ready)
        self.point("nodes_cordoned", when, cordoned)
        self.point("schedulable_gpus", when, gpus)

    def _sample_plans(self) -> None:
        assert self.target is not None
        if not self.rescue_crd:
            return
        try:
            api = client.CustomObjectsApi(self.target.api(1))
            listed = api.list_cluster_custom_object(
                RESCUE_GROUP, RESCUE_VERSION, RESCUE_PLURAL, _request_timeout=3
            )
        except ApiException as err:
            if err.status == 404:
                self.rescue_crd = False  # no rescue CRDs in this cluster
            return
        except Exception:
            return
        since = parse_iso(self.started_at).timestamp() - 5
        for item in listed.get("items", []) if isinstance(listed, dict) else []:
            meta = item.get("metadata") or {}
            created = _iso(meta.get("creationTimestamp"))
            if created is None or parse_iso(created).timestamp() < since:
                continue
            with self.lock:
                self.plans[str(meta.get("name"))] = {
                    "metadata": {
                        "name": meta.get("name"),
                        "creationTimestamp": meta.get("creationTimestamp"),
                        "uid": meta.get("uid"),
                    },
                    "spec": item.get("spec") or {},
                    "status": item.get("status") or {},
                }

    def run(self) -> None:
        next_tick = time.monotonic()
        while not self.stop.is_set():
            try:
                self.sample()
            except Exception as err:  # the sampler must never end the run
                logger.debug(f"metrics sampler: {err}")
            next_tick += self.interval
            self.stop.wait(max(0.0, next_tick - time.monotonic()))

    # ------------------------------------------------------------------ faults
    def activity_done(self, activity: Activity, run: Run) -> None:
        func = _func(activity)
        if not isinstance(run, dict):
            return
        start, end = _iso(run.get("start")), _iso(run.get("end"))
        with self.lock:
            for fault in self.faults:  # a restore undoes every open fault of its kind
                if fault["end"] is None and func in FAULT_UNDONE_BY.get(fault["activity"], ()):
                    fault["end"] = end
                    fault["ended_by"] = activity.get("name")
            if (
                self.phase == "method"
                and activity.get("type") == "action"
                and func in FAULT_UNDONE_BY
                and run.get("status") == "succeeded"
            ):
                self.faults.append(
                    {
                        "name": activity.get("name"),
                        "activity": func,
                        "start": start,
                        "end": None,
                    }
                )

    def xid_to_cordon(self) -> None:
        """One point per plan: seconds from its first Xid to its Cordoned transition."""
        points = []
        for plan in self.plans.values():
            first = plan.get("spec", {}).get("firstSeenAt")
            for transition in plan.get("status", {}).get("transitions") or []:
                if transition.get("phase") == "Cordoned" and first and transition.get("time"):
                    try:
                        cordoned = parse_iso(transition["time"])
                        seconds = (cordoned - parse_iso(first)).total_seconds()
                    except ValueError:
                        break
                    points.append([to_iso(cordoned), round(seconds, 3)])
                    break
        if points:
            self.add_series("xid_to_cordon_seconds", "RescuePlan firstSeenAt -> Cordoned")
            self.series["xid_to_cordon_seconds"]["points"] = sorted(points)


_sampler = _Sampler()


def configure_control(**_: Any) -> None:
    global _sampler
    _sampler.stop.set()
    _sampler = _Sampler()


def _check(interval_s: Any, probes: Any, queries: Any) -> None:
    if isinstance(interval_s, bool) or not isinstance(interval_s, int | float):
        raise InterruptExecution(f"metrics: interval_s must be seconds, not {interval_s!r}")
    if not 0.5 <= interval_s <= 60:
        raise InterruptExecution(f"metrics: interval_s must be from 0.5 to 60 s, not {interval_s}")
    if not isinstance(probes, list) or any(p not in PROBES for p in probes):
        raise InterruptExecution(f"metrics: probes must be a list of {PROBES}, not {probes!r}")
    if not isinstance(queries, list):
        raise InterruptExecution(f"metrics: queries must be a list, not {queries!r}")
    for index, spec in enumerate(queries):
        if not isinstance(spec, dict) or not spec.get("name") or not spec.get("query"):
            raise InterruptExecution(f"metrics: queries[{index}] needs a name and a query")


def before_experiment_control(
    context: Experiment,
    configuration: Configuration = None,
    secrets: Secrets = None,
    interval_s: float = 2.0,
    probes: list[str] | None = None,
    queries: list[dict[str, str]] | None = None,
    dns_names: list[str] | None = None,
    **_: Any,
) -> None:
    """Start the sampler thread."""
    probes = list(PROBES) if probes is None else probes
    queries = list(queries or [])
    _check(interval_s, probes, queries)
    try:
        target = resolve_target(configuration, secrets)
    except Exception as err:
        logger.warning(f"metrics: no target to sample ({err}); the journal gets no series")
        return
    s = _sampler
    s.target = target
    s.interval = float(interval_s)
    s.probes = tuple(probes)
    s.dns_names = list(dns_names or ["kubernetes.default.svc.cluster.local"])
    s.started_at = utc_now_iso()
    standard = [
        {"name": "apiserver_p99_seconds", "query": p99_query("30s")},
        {"name": "apiserver_429_per_second", "query": rate_429_query("30s")},
    ]
    if target.state is not None and target.provider == "local":
        standard += [{"name": name, "query": query} for name, query in CONTROL_PLANE_QUERIES]
    s.queries = standard + [q for q in queries if q["name"] not in STANDARD_SERIES]
    for spec in s.queries:
        s.add_series(spec["name"], spec["query"], spec.get("title", ""), spec.get("unit", ""))
    if "dns" in s.probes:
        s.add_series("dns_success_ratio", "probe: dns_resolution (5 queries, 0.3 s timeout)")
        s.add_series("dns_p99_seconds", "probe: dns_resolution (5 queries, 0.3 s timeout)")
    if "nodes" in s.probes:
        s.add_series("nodes_ready", "probe: list nodes, Ready condition")
        s.add_series("nodes_cordoned", "probe: list nodes, spec.unschedulable (no standbys)")
        s.add_series("schedulable_gpus", "probe: nvidia.com/gpu on schedulable nodes")
    s.thread = threading.Thread(target=s.run, name="blackstart-metrics", daemon=True)
    s.thread.start()


def before_method_control(context: Experiment, **_: Any) -> None:
    _sampler.phase = "method"


def before_rollback_control(context: Experiment, **_: Any) -> None:
    _sampler.phase = "rollback"


def after_activity_control(context: Activity, state: Run = None, **_: Any) -> None:
    """Open a fault window when a fault is injected; close it when it is undone."""
    _sampler.activity_done(context, state)


def after_experiment_control(context: Experiment, state: Journal = None, **_: Any) -> None:
    """Stop sampling; write series, faults, rescue plans and the environment to the journal."""
    s = _sampler
    s.stop.set()
    if s.thread is not None:
        s.thread.join(10.0)
    if s.target is None or not isinstance(state, dict):
        return
    with contextlib.suppress(Exception):  # keep what was sampled during the run
        s._sample_plans()
    s.xid_to_cordon()
    entry = blackstart_entry(state)
    if "environment" not in entry:
        try:
            entry["environment"] = environment(s.target)
        except Exception as err:
            logger.warning(f"metrics: could not describe the environment: {err}")
    with s.lock:
        entry["metrics"] = {
            "interval_s": s.interval,
            "started_at": s.started_at,
            "series": list(s.series.values()),
        }
        entry["faults"] = [dict(f) for f in s.faults]
        entry["rescue_plans"] = sorted(
            s.plans.values(), key=lambda p: str(p["metadata"].get("creationTimestamp"))
        )
    entry.setdefault("guard", {"tripped": False, "reason": None})


def cleanup_control() -> None:
    _sampler.stop.set()
