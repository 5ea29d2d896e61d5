"""The control plane's supervisor: what kubelet does for static pods, for a local cluster.

One process per local cluster (``python -m blackstart.clusters.local.supervisor
--cluster NAME``), started by ``cluster up`` and stopped by ``cluster down``.
It also restarts kube-controller-manager and kube-scheduler, which exit when they
lose their leader Lease (an API server frozen or stopped for more than their 10 s
renew deadline), and the cluster's rescue controller and node agent, as the
kubelet restarts static pods, a Deployment's and a DaemonSet's pods. Every
:data:`TICK_S` seconds it

- keeps kube-apiserver in the control plane's cgroup (whoever started it:
  kwokctl, a fault's rollback, itself) as the OOM killer's first choice, and
  moves out what kwokctl starts beside it;
- runs kube-apiserver's liveness probe as kubelet does (``/livez``, kubeadm's
  10 s period and 8 failures, :mod:`blackstart.clusters.local.liveness`), and
  kills an API server that stopped answering (a storm left it thrashing);
- restarts kube-apiserver (and the others above) when it exited without being
  stopped on purpose (an OOM kill, a failed liveness probe, a crash, a lost
  Lease) after a back-off that doubles from
  :data:`BACKOFF_INITIAL_S` to :data:`BACKOFF_MAX_S`, and resets once it has
  run :data:`BACKOFF_RESET_S` seconds, as kubelet's CrashLoopBackOff does;
  a fault that stops it on purpose leaves a hold file and is left alone; as
  ``kwokctl start cluster`` starts every stopped component, a kwokctl component
  waits while another is held or in its own back-off (whose start brings it too);
- counts restarts and OOM kills in ``supervisor.json`` (read by ``cluster
  status``) and serves them with the cgroup's memory and CPU on
  ``/metrics`` for the cluster's Prometheus (``blackstart_control_plane_*``).
"""

import argparse
import contextlib
import json
import os
import signal
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from blackstart.clusters.local import kwokctl, liveness
from blackstart.clusters.local.base import RESCUE_COMPONENTS
from blackstart.clusters.local.cgroups import (
    APISERVER_OOM_SCORE_ADJ,
    ControlPlaneCgroup,
    set_oom_score_adj,
)
from blackstart.clusters.local.rescue_launch import launch, recorded_argv
from blackstart.clusters.processes import is_alive, read_pid
from blackstart.clusters.state import STATE_FILE

TICK_S = 0.25
BACKOFF_INITIAL_S = 10.0
BACKOFF_MAX_S = 300.0
BACKOFF_RESET_S = 120.0
# kwokctl starts these; the two controllers exit on a lost leader Lease, as they do in pods
KWOKCTL_SUPERVISED = ("kube-apiserver", "kube-controller-manager", "kube-scheduler")
SUPERVISED = (*KWOKCTL_SUPERVISED, *RESCUE_COMPONENTS)
# what runs in the control plane's cgroup, with its OOM score adjustment: kube-apiserver, the
# process a storm swells; etcd, kube-controller-manager and kube-scheduler stay out (etcd's
# memory creeps up with every seeded and deleted object on a long-lived test cluster, which
# would make the limit a clock rather than a size)
CONFINED = {"kube-apiserver": APISERVER_OOM_SCORE_ADJ}
# what kwokctl starts that is kept out of the cgroup (moved out when born inside)
NOT_CONTROL_PLANE = (
    "etcd",
    "kube-controller-manager",
    "kube-scheduler",
    "kwok-controller",
    "prometheus",
)
STATUS_FILE = "supervisor.json"
HOLD_DIR = "holds"
RESET_DIR = "backoff-resets"


@dataclass
class Backoff:
    """kubelet's CrashLoopBackOff for one component: 10 s, 20 s, 40 s ... 300 s."""

    initial_s: float = BACKOFF_INITIAL_S
    max_s: float = BACKOFF_MAX_S
    reset_after_s: float = BACKOFF_RESET_S
    failures: int = 0

    def next_delay(self, ran_for_s: float) -> float:
        """Delay before the next start, after a run of ``ran_for_s`` seconds ended."""
        if ran_for_s >= self.reset_after_s:
            self.failures = 0
        delay = float(min(self.max_s, self.initial_s * 2**self.failures))
        self.failures += 1
        return delay


@dataclass
class ComponentRecord:
    """What the supervisor knows about one component; written to ``supervisor.json``."""

    restarts: int = 0
    oom_kills: int = 0
    liveness_kills: int = 0
    exits: int = 0
    last_exit: str = ""
    last_exit_at: float = 0.0
    last_start_at: float = 0.0
    next_start_at: float = 0.0
    backoff_s: float = 0.0
    pid: int | None = None
    oom_baseline: int = 0  # the cgroup's OOM kills when this process was first seen
    unhealthy_pid: int | None = None  # the process the liveness probe killed
    backoff: Backoff = field(default_factory=Backoff)


def exit_reason(oom_kills_before: int, oom_kills_now: int) -> str:
    """``OOMKilled`` when the cgroup's OOM-kill count rose, else ``Error`` (as kubelet says)."""
    return "OOMKilled" if oom_kills_now > oom_kills_before else "Error"


def process_usage(pid: int | None) -> tuple[int, float] | None:
    """(resident bytes, CPU seconds) of ``pid`` from /proc, None when it is gone."""
    if pid is None:
        return None
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()
    except OSError:
        return None
    rss = 0
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) * 1024
    ticks = os.sysconf("SC_CLK_TCK")
    # fields after the command: state is [0]; utime and stime are fields 14 and 15 of stat
    return rss, (int(stat[11]) + int(stat[12])) / ticks


def hold_file(state_dir: Path, component: str) -> Path:
    """The file that says ``component`` was stopped on purpose and must stay down."""
    return state_dir / HOLD_DIR / component


def reset_file(state_dir: Path, component: str) -> Path:
    """The file that asks the supervisor to forget ``component``'s crash-loop history."""
    return state_dir / RESET_DIR / component


def request_backoff_reset(state_dir: Path, component: str) -> None:
    """Ask the supervisor to start ``component``'s back-off over at 10 s (and to start it
    at once if it is waiting one out), as deleting a crash-looping pod does: a fault's
    rollback puts the control plane back as it was, its crash-loop history included, so
    that the next experiment's first OOM kill waits 10 s, not what earlier ones ran up."""
    path = reset_file(state_dir, component)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()


def read_status(state_dir: Path) -> dict[str, Any]:
    """The supervisor's last ``supervisor.json`` for a cluster; {} when there is none."""
    try:
        data = json.loads((state_dir / STATUS_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


class Supervisor:
    """The loop of one cluster's supervisor."""

    def __init__(
        self,
        cluster: str,
        state_dir: Path,
        kwok_workdir: Path,
        kwokctl_bin: Path,
        cgroup: ControlPlaneCgroup | None = None,
    ):
        self.cluster = cluster
        self.state_dir = state_dir
        self.kc = kwokctl.KwokCluster(name=cluster, workdir=kwok_workdir)
        self.kwokctl_bin = kwokctl_bin
        self.cgroup = cgroup or ControlPlaneCgroup(cluster)
        self.records = {c: ComponentRecord() for c in SUPERVISED}
        self.children: dict[str, subprocess.Popen[bytes]] = {}  # rescue processes started here
        self.adjusted: dict[str, int] = {}  # component -> pid whose OOM score was adjusted
        self.liveness = liveness.LivenessProbe()
        self.stop = threading.Event()
        self.lock = threading.Lock()

    def tick(self, now: float) -> list[str]:
        """One look at the control plane; returns the components due for a restart."""
        limited = self.cgroup.exists()
        usage = self.cgroup.usage() if limited else None
        for component, adj in CONFINED.items():
            pid = self.kc.pid(component)
            if not limited or pid is None or not is_alive(pid):
                continue
            if not self.cgroup.contains(pid):  # started outside (by kwokctl for a fault's rollback)
                with contextlib.suppress(Exception):  # it may exit right now
                    self.cgroup.add(pid)
            if self.adjusted.get(component) != pid:  # born inside: adjust once per process
                set_oom_score_adj(pid, adj)
                self.adjusted[component] = pid
        for component in NOT_CONTROL_PLANE if limited else ():
            pid = self.kc.pid(component)
            if pid is not None and is_alive(pid) and self.cgroup.contains(pid):
                self.cgroup.release(pid)
        ooms = usage.oom_kills if usage else 0
        # the cgroup's OOM kills are those of what runs in it: a controller that exits
        # meanwhile (on its lost Lease) was not OOM-killed
        return [
            component
            for component, record in self.records.items()
            if self._supervise(component, record, now, ooms if component in CONFINED else 0)
        ]

    def _supervise(self, component: str, record: ComponentRecord, now: float, ooms: int) -> bool:
        """Update ``record``; True when the component is due to be started again."""
        pid = self.pid_of(component)
        alive = is_alive(pid)
        held = hold_file(self.state_dir, component).exists()
        reset = reset_file(self.state_dir, component)
        if reset.exists():
            reset.unlink(missing_ok=True)
            record.backoff = Backoff(record.backoff.initial_s, record.backoff.max_s)
            if record.next_start_at:
                record.next_start_at = now  # waiting out a back-off: start now
        if alive:
            if record.pid != pid:  # (re)started, by us or by anyone else
                if record.next_start_at:  # it exited and another start brought it back (kwokctl
                    record.restarts += 1  # starts every stopped component): a restart too
                record.pid = pid
                record.last_start_at = now
                record.oom_baseline = ooms
            record.next_start_at = 0.0
            return False
        if record.pid is not None:  # it was running and has gone
            record.exits += 1
            # against the count when it started: the kernel counts the kill a moment before
            # the process is gone, so a tick may see the count rise while it still lives
            record.last_exit = "Stopped" if held else exit_reason(record.oom_baseline, ooms)
            if record.last_exit == "Error" and record.unhealthy_pid == record.pid:
                record.last_exit = "Unhealthy"  # kubelet's word for a failed liveness probe
                record.liveness_kills += 1
            record.last_exit_at = now
            if record.last_exit == "OOMKilled":
                record.oom_kills += 1
            ran = now - (record.last_start_at or now)
            record.pid = None
            if not held:
                record.backoff_s = record.backoff.next_delay(ran)
                record.next_start_at = now + record.backoff_s
        if held:
            record.next_start_at = 0.0
            record.backoff = Backoff(record.backoff.initial_s, record.backoff.max_s)
            return False
        due = bool(record.next_start_at) and now >= record.next_start_at
        return due and not self.blocked_by(component)

    def blocked_by(self, component: str) -> str | None:
        """A stopped kwokctl component that ``kwokctl start cluster`` must not start now.

        kwokctl starts every stopped component at once: restarting the scheduler
        that way while a fault holds etcd or kube-apiserver down would end the
        fault early, and while kube-apiserver waits out its back-off would skip
        it. The blocked component starts with the other (kwokctl brings both).
        kube-apiserver itself may bring a controller early: that is harmless.
        """
        if component in RESCUE_COMPONENTS:
            return None
        held_dir = self.state_dir / HOLD_DIR
        held = [p.name for p in held_dir.iterdir()] if held_dir.is_dir() else []
        kwokctl_held = {c for c in held if c in ("kube-apiserver", *NOT_CONTROL_PLANE)}
        for other in sorted({*kwokctl_held, "kube-apiserver"} - {component}):
            if not is_alive(self.kc.pid(other)):
                return other
        return None

    def restart(self, component: str) -> None:
        """Start ``component`` again and count it (the lock is not held: starting takes time)."""
        started = self._start(component)
        with self.lock:
            record = self.records[component]
            if started:
                record.restarts += 1
                record.last_start_at = time.time()
                record.next_start_at = 0.0
            else:  # could not start: try again after the next back-off
                record.backoff_s = record.backoff.next_delay(0.0)
                record.next_start_at = time.time() + record.backoff_s

    def pid_of(self, component: str) -> int | None:
        """The component's pid: a rescue process's from its pid file, the others' from kwokctl."""
        if component in RESCUE_COMPONENTS:
            child = self.children.get(component)
            if child is not None and child.poll() is not None:  # reap it: no zombie left
                del self.children[component]
            return read_pid(self.state_dir / "pids" / f"{component}.pid")
        return self.kc.pid(component)

    def _start_rescue(self, component: str) -> bool:
        """Start a rescue process again from its recorded command line, unless it is held."""
        argv = recorded_argv(self.state_dir, component)
        hold = hold_file(self.state_dir, component)
        if not argv or hold.exists():
            return False
        try:
            child = launch(self.state_dir, component, argv)
        except OSError as err:
            print(f"supervisor: cannot start {component}: {err}", file=sys.stderr, flush=True)
            return False
        if hold.exists():  # stop_rescue ran meanwhile: what it stopped stays stopped
            child.kill()
            child.wait()
            return False
        self.children[component] = child
        return True

    def _start(self, component: str) -> bool:
        """Start a stopped component as kwokctl does (kwokctl starts only what is stopped)."""
        if component in RESCUE_COMPONENTS:
            return self._start_rescue(component)
        env = {**os.environ, "KWOK_WORKDIR": str(self.kc.workdir)}
        argv = [str(self.kwokctl_bin), "start", "cluster", "--name", self.cluster]
        argv += ["--timeout", "20s"]
        # kube-apiserver is born inside the control plane's cgroup; the controllers outside
        # it (one started into a cgroup a storm filled gets the API server OOM-killed)
        inside = component == "kube-apiserver" and self.cgroup.exists()
        join = self.cgroup.join_self if inside else None
        with self.kc.start_lock(), contextlib.suppress(OSError, subprocess.TimeoutExpired):
            if is_alive(self.kc.pid(component)):  # a start that held the lock brought it
                return True
            subprocess.run(
                argv, env=env, capture_output=True, timeout=60, check=False, preexec_fn=join
            )
        return is_alive(self.kc.pid(component))

    def observe_liveness(self, pid: int, ok: bool) -> bool:
        """Count one probe of kube-apiserver ``pid``; True (and marked) when it must be killed."""
        with self.lock:
            if not self.liveness.observe(pid, ok):
                return False
            self.records["kube-apiserver"].unhealthy_pid = pid
        print(
            f"supervisor: kube-apiserver (pid {pid}) failed its liveness probe "
            f"{self.liveness.failures} times in a row; killing it",
            file=sys.stderr,
            flush=True,
        )
        return True

    def probe_liveness(self) -> None:
        """The liveness probe's loop (a thread of its own: a probe may take its 15 s)."""
        context = None
        while not self.stop.wait(liveness.PERIOD_S):
            pid = self.kc.pid("kube-apiserver")
            if hold_file(self.state_dir, "kube-apiserver").exists() or not liveness.probed(pid):
                continue
            try:
                url = json.loads((self.state_dir / STATE_FILE).read_text())["apiserver_url"]
                context = context or liveness.tls_context(self.kc.pki_dir)
            except (OSError, ValueError, KeyError, ssl.SSLError):
                continue
            ok = liveness.probe(url, context)
            if pid is not None and liveness.probed(pid) and self.observe_liveness(pid, ok):
                liveness.kill(pid)

    def snapshot(self) -> dict[str, Any]:
        usage = self.cgroup.usage() if self.cgroup.exists() else None
        components = {}
        for component, record in self.records.items():
            data = asdict(record)
            data.pop("backoff")
            data.pop("unhealthy_pid")
            components[component] = data
        processes = {}
        for component in CONFINED:
            found = process_usage(self.kc.pid(component))
            if found is not None:
                processes[component] = {"memory_bytes": found[0], "cpu_seconds": found[1]}
        return {
            "cluster": self.cluster,
            "pid": os.getpid(),
            "processes": processes,
            "updated_at": time.time(),
            "cgroup": str(self.cgroup.relative) if usage else None,
            "usage": asdict(usage) if usage else None,
            "components": components,
        }

    def write_status(self) -> dict[str, Any]:
        data = self.snapshot()
        path = self.state_dir / STATUS_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
        os.replace(tmp, path)
        return data

    def run(self) -> None:
        threading.Thread(target=self.probe_liveness, name="liveness", daemon=True).start()
        last_write = 0.0
        while not self.stop.is_set():
            now = time.time()
            due: list[str] = []
            with self.lock:
                try:
                    due = self.tick(now)
                except Exception as err:  # a bad tick must not end the supervision
                    print(f"supervisor: {type(err).__name__}: {err}", file=sys.stderr, flush=True)
                if now - last_write >= 1.0 or due:
                    with contextlib.suppress(OSError):
                        self.write_status()
                    last_write = now
            for component in due:
                print(f"supervisor: restarting {component}", file=sys.stderr, flush=True)
                self.restart(component)
            self.stop.wait(TICK_S)


#: per-component series: (metric, help, type, value of a supervisor.json record)
COMPONENT_SERIES: tuple[tuple[str, str, str, Callable[[dict[str, Any]], int]], ...] = (
    ("restarts_total", "Restarts of a control-plane component by its supervisor.", "counter",
     lambda record: int(record.get("restarts", 0))),
    ("oom_kills_total", "OOM kills of a control-plane component.", "counter",
     lambda record: int(record.get("oom_kills", 0))),
    ("liveness_kills_total", "Kills of a control-plane component after failed liveness probes.",
     "counter", lambda record: int(record.get("liveness_kills", 0))),
    ("up", "1 when the component's process runs.", "gauge",
     lambda record: 1 if record.get("pid") else 0),
)  # fmt: skip


def metrics_lines(data: dict[str, Any]) -> list[str]:
    """The supervisor's status in the Prometheus text format."""
    lines: list[str] = []
    components = data.get("components") or {}
    for suffix, help_text, kind, value in COMPONENT_SERIES:
        metric = f"blackstart_control_plane_{suffix}"
        lines += [f"# HELP {metric} {help_text}", f"# TYPE {metric} {kind}"]
        for name, record in components.items():
            lines.append(f'{metric}{{component="{name}"}} {value(record)}')
    processes = data.get("processes") or {}
    if processes:
        lines += [
            "# HELP blackstart_control_plane_process_memory_bytes Resident memory of a "
            "control-plane process.",
            "# TYPE blackstart_control_plane_process_memory_bytes gauge",
        ]
        for name, usage in processes.items():
            lines.append(f'blackstart_control_plane_process_memory_bytes{{component="{name}"}} '
                         f"{usage['memory_bytes']}")  # fmt: skip
        lines += [
            "# HELP blackstart_control_plane_process_cpu_seconds_total CPU seconds of a "
            "control-plane process (from its start).",
            "# TYPE blackstart_control_plane_process_cpu_seconds_total counter",
        ]
        for name, usage in processes.items():
            metric = "blackstart_control_plane_process_cpu_seconds_total"
            lines.append(f'{metric}{{component="{name}"}} {usage["cpu_seconds"]}')
    usage = data.get("usage")
    if usage:
        gauges = {
            "memory_bytes": ("Memory the control plane's cgroup uses.", "gauge"),
            "memory_limit_bytes": ("Memory limit of the control plane's cgroup.", "gauge"),
            "cpu_quota": ("CPU cores the control plane's cgroup may use.", "gauge"),
            "cpu_seconds": ("CPU seconds the control plane's cgroup used.", "counter"),
            "throttled_periods": ("CFS periods in which the control plane was throttled.",
                                  "counter"),
        }  # fmt: skip
        for key, (help_text, kind) in gauges.items():
            metric = f"blackstart_control_plane_{key}"
            if kind == "counter":
                metric += "_total"
            lines += [f"# HELP {metric} {help_text}", f"# TYPE {metric} {kind}"]
            lines.append(f"{metric} {usage.get(key, 0)}")
    return lines


def serve_metrics(supervisor: Supervisor, port: int) -> None:
    """Serve ``/metrics`` on 127.0.0.1:``port`` in a background thread."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            with supervisor.lock:
                data = supervisor.snapshot()
            body = ("\n".join(metrics_lines(data)) + "\n").encode()
            self.send_response(200 if self.path.startswith("/metrics") else 404)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cluster", required=True)
    parser.add_argument("--state-dir", required=True, type=Path)
    parser.add_argument("--kwok-workdir", required=True, type=Path)
    parser.add_argument("--kwokctl", required=True, type=Path)
    parser.add_argument("--metrics-port", type=int, default=0)
    parser.add_argument("--backoff-initial", type=float, default=BACKOFF_INITIAL_S)
    args = parser.parse_args(argv)
    supervisor = Supervisor(args.cluster, args.state_dir, args.kwok_workdir, args.kwokctl)
    for record in supervisor.records.values():
        record.backoff.initial_s = args.backoff_initial
    if args.metrics_port:
        serve_metrics(supervisor, args.metrics_port)
    signal.signal(signal.SIGTERM, lambda *_: supervisor.stop.set())
    supervisor.run()
    with contextlib.suppress(OSError):
        supervisor.write_status()
    return 0


if __name__ == "__main__":
    sys.exit(main())
