"""The telemetry agent of the December 2024 incident, as the program its pods run.

On kind (and on a cluster of your own) the telemetry service is what it was: a
DaemonSet whose pods, one per node, make the expensive calls themselves, as
their ServiceAccount (a non-admin identity the API server authenticates like
any other). Each pod runs this program::

    python3 -m blackstart.telemetry_agent --resources pods --rate 1 --duration 150 \
        --figures /var/log/blackstart/telemetry/<storm>.json

Every ``1/--rate`` seconds each of the pod's ``--agents`` (default 1: one agent
per node, as in the incident; more stand for a fleet bigger than the cluster)
LISTs every one of ``--resources`` cluster-wide without a resourceVersion (so
the API server reads them from etcd) and reads each body to the end and throws
it away, undecoded. After ``--duration`` seconds the calls stop and the program
idles until its pod is deleted (a DaemonSet restarts a pod that exits, which
would start the storm again): the storm is bounded in time, and deleting the
DaemonSet, the incident's rollback, ends it at once.

Its figures (requests, answers by kind, 429s, bytes, latency percentiles, CPU)
go to ``--figures`` on the node (a hostPath, read from the node when the API
server cannot answer, and after the pod is gone) and to stdout, every
``--report-every`` seconds and at the end. Python's standard library only: it
runs in the rescue agent's image, which carries no Kubernetes client.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import signal
import ssl
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
MAX_AGENTS = 64
MAX_RATE = 10.0
MAX_DURATION_S = 900.0
LATENCY_SAMPLES = 5000  # kept per pod for the percentiles; beyond, a reservoir sample
READ_CHUNK = 256 * 1024
# what an agent may list, and where (the ClusterRole of the DaemonSet grants these)
PATHS = {
    "pods": "/api/v1/pods",
    "nodes": "/api/v1/nodes",
    "configmaps": "/api/v1/configmaps",
    "services": "/api/v1/services",
    "endpoints": "/api/v1/endpoints",
    "events": "/api/v1/events",
    "namespaces": "/api/v1/namespaces",
    "endpointslices": "/apis/discovery.k8s.io/v1/endpointslices",
}


class Figures:
    """What this pod's agents saw; every method holds the lock."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests = 0
        self.ok = 0
        self.throttled = 0
        self.errors: Counter[str] = Counter()
        self.bytes_read = 0
        self.latencies: list[float] = []

    def record(self, seconds: float, status: int | None, size: int, error: str = "") -> None:
        with self.lock:
            self.requests += 1
            self.bytes_read += size
            if status == 200:
                self.ok += 1
            elif status == 429:
                self.throttled += 1
            else:
                self.errors[error or f"HTTP {status}"] += 1
            if len(self.latencies) < LATENCY_SAMPLES:
                self.latencies.append(seconds)
            else:
                slot = random.randrange(self.requests)
                if slot < LATENCY_SAMPLES:
                    self.latencies[slot] = seconds

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {
                "requests": self.requests,
                "ok": self.ok,
                "throttled_429": self.throttled,
                "errors": sum(self.errors.values()),
                "error_kinds": dict(self.errors),
                "bytes_read": self.bytes_read,
                "latencies": [round(x, 4) for x in self.latencies],
            }


class Agent(threading.Thread):
    """One node agent: its calls, one connection, reconnected when it breaks."""

    def __init__(self, options: argparse.Namespace, figures: Figures, stop: threading.Event):
        super().__init__(daemon=True)
        self.options = options
        self.figures = figures
        self.stop = stop
        self.connection: http.client.HTTPSConnection | None = None

    def run(self) -> None:
        o = self.options
        period = 1.0 / o.rate
        due = time.monotonic() + random.uniform(0, 0.05)  # the incident: all at once
        while not self.stop.is_set():
            if self.stop.wait(max(0.0, due - time.monotonic())):
                return
            for resource in o.resources:
                self.call(PATHS[resource])
            due = max(due + period, time.monotonic())

    def call(self, path: str) -> None:
        o = self.options
        started = time.monotonic()
        size = 0
        try:
            if self.connection is None:
                self.connection = http.client.HTTPSConnection(
                    o.host, o.port, timeout=o.timeout, context=o.tls
                )
            token = o.token_file.read_text().strip()  # kubelet rotates it: read it each time
            headers = {
                "Authorization": f"Bearer {token}",
                "Accept": "application/json",
                "User-Agent": "blackstart-telemetry-agent",
            }
            self.connection.request("GET", path, headers=headers)
            response = self.connection.getresponse()
            while chunk := response.read(READ_CHUNK):  # read to the end, thrown away
                size += len(chunk)
            self.figures.record(time.monotonic() - started, response.status, size)
        except (OSError, http.client.HTTPException) as err:
            if self.connection is not None:
                self.connection.close()
            self.connection = None
            self.figures.record(time.monotonic() - started, None, size, _error_kind(err))


def _error_kind(err: Exception) -> str:
    if isinstance(err, TimeoutError | ssl.SSLError):
        return "timed out" if isinstance(err, TimeoutError) else "TLS error"
    if isinstance(err, ConnectionRefusedError):
        return "Connection refused"
    if isinstance(err, ConnectionResetError | BrokenPipeError | http.client.RemoteDisconnected):
        return "Connection reset"
    return type(err).__name__


def write_figures(
    options: argparse.Namespace, figures: Figures, state: str, started: float, started_wall: str
) -> dict[str, Any]:
    """This pod's figures so far, to ``--figures`` (replaced whole) and as one stdout line."""
    usage = os.times()
    report = {
        "storm_id": options.storm_id,
        "node": os.environ.get("NODE_NAME", ""),
        "pod": os.environ.get("POD_NAME", ""),
        "state": state,
        "started_at": started_wall,
        "updated_at": _utc_now(),
        "elapsed_s": round(time.monotonic() - started, 3),
        "agents": options.agents,
        "rate_per_client": options.rate,
        "duration_s": options.duration,
        "resources": options.resources,
        "client_cpu_s": round(usage.user + usage.system, 3),
        **figures.snapshot(),
    }
    if options.figures:
        path = Path(options.figures)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".tmp")
        partial.write_text(json.dumps(report))
        partial.replace(path)
    line = {k: v for k, v in report.items() if k != "latencies"}
    print(json.dumps(line), flush=True)
    return report


def call_deadline(started: float, duration_s: float, until: float, now_wall: float) -> float:
    """When the calls end, on the clock of ``started``: ``duration_s`` after it, and never
    after ``until`` (wall-clock seconds; 0 for no such bound), when the storm ends
    whenever this pod started (a pod started again later makes no calls)."""
    deadline = started + duration_s
    if until:
        deadline = min(deadline, started + until - now_wall)
    return deadline


def _utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _resources(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in PATHS]
    if not names or unknown:
        raise argparse.ArgumentTypeError(
            f"unknown resource(s) {', '.join(unknown) or '(none)'}; one or more of "
            f"{', '.join(PATHS)}, separated by commas"
        )
    return names


def _bounded(low: float, high: float, kind: type = float) -> Any:
    def parse(text: str) -> Any:
        value = kind(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{text} is not within {low:g}..{high:g}")
        return value

    return parse


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python3 -m blackstart.telemetry_agent",
        description="The incident's telemetry agent: cluster-wide LISTs as this pod's "
        "ServiceAccount, bounded in time; figures to a file and stdout.",
    )
    bounded = (  # flag, type, default, help
        ("--resources", _resources, ["pods"], "what to LIST cluster-wide, comma-separated"),
        ("--rate", _bounded(0.01, MAX_RATE), 1.0, "LISTs of each resource per agent per second"),
        ("--agents", _bounded(1, MAX_AGENTS, int), 1, "node agents this pod stands for"),
        ("--duration", _bounded(1, MAX_DURATION_S), 90.0,
         "seconds of calls; then it idles until the pod is deleted"),
    )  # fmt: skip
    for flag, kind, default, text in bounded:
        parser.add_argument(flag, type=kind, default=default, help=f"{text} (default {default})")
    parser.add_argument(
        "--timeout", type=_bounded(0.5, 120), default=15.0, help="seconds one call may take"
    )
    parser.add_argument(
        "--until",
        type=float,
        default=0.0,
        help="no calls after this time (seconds since the epoch): a pod "
        "started again after the storm's end makes none",
    )
    parser.add_argument("--figures", default="", help="file the figures are written to")
    parser.add_argument("--storm-id", default="", help="the storm this pod belongs to")
    parser.add_argument(
        "--report-every",
        type=_bounded(0.5, 600),
        default=5.0,
        help="seconds between two figure reports",
    )
    parser.add_argument(
        "--exit-after",
        action="store_true",
        help="exit when the calls end instead of idling (outside a DaemonSet)",
    )
    parser.add_argument(
        "--credentials",
        type=Path,
        default=SERVICE_ACCOUNT,
        help="folder with the ServiceAccount's token and ca.crt (default: the pod's own)",
    )
    options = parser.parse_args(argv)
    host = os.environ.get("KUBERNETES_SERVICE_HOST")
    port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
    token, ca = options.credentials / "token", options.credentials / "ca.crt"
    if not host or not token.is_file() or not ca.is_file():
        parser.error(
            f"no in-cluster credentials: run in a pod with a ServiceAccount token and ca.crt "
            f"in {options.credentials} and $KUBERNETES_SERVICE_HOST set"
        )
    options.host, options.port = host, int(port)
    options.token_file = token
    options.tls = ssl.create_default_context(cafile=str(ca))
    return options


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    figures = Figures()
    stop = threading.Event()
    ended = threading.Event()

    def on_term(*_: object) -> None:
        stop.set()
        ended.set()

    signal.signal(signal.SIGTERM, on_term)
    started, started_wall = time.monotonic(), _utc_now()
    deadline = call_deadline(started, options.duration, options.until, time.time())
    agents = [Agent(options, figures, stop) for _ in range(options.agents)]
    for agent in agents if deadline > started else []:
        agent.start()
    while not stop.is_set() and time.monotonic() < deadline:
        stop.wait(min(options.report_every, max(0.0, deadline - time.monotonic())))
        if time.monotonic() < deadline and not stop.is_set():
            write_figures(options, figures, "running", started, started_wall)
    stop.set()
    for agent in agents:
        if agent.is_alive():
            agent.join(options.timeout + 1)
    write_figures(options, figures, "finished", started, started_wall)
    if not options.exit_after:
        ended.wait()  # idle until the pod is deleted: an exit would restart the storm
    return 0


if __name__ == "__main__":
    sys.exit(main())
