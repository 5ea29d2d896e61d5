"""CoreDNS faults: kill, hang, restart, break its configuration, drop or delay answers, cut it off.

Data-plane service discovery rests on CoreDNS, and CoreDNS rests on the API
server: a running CoreDNS answers from what it has already synced, but one
that (re)starts while the API server is unreachable has nothing to answer
with (SERVFAIL). These actions act on the local cluster's real CoreDNS
process and its Corefile (which CoreDNS re-reads every 2 s):

- :func:`kill_coredns`, :func:`hang_coredns`, :func:`restart_coredns`;
- :func:`break_coredns_config`: an invalid Corefile; a running CoreDNS rejects
  the reload and keeps serving, the next restart fails (``restart: true``);
- :func:`drop_dns_answers`: a share of queries, picked by DNS message id, is
  routed (``view`` plugin) to a server block where CoreDNS's ``erratic``
  plugin drops them. (``erratic`` in the main block would never see a
  ``cluster.local`` query: it runs after ``kubernetes`` in CoreDNS's plugin
  chain);
- :func:`add_dns_latency`: CoreDNS is frozen ``pause_ms`` out of every
  ``period_ms``, as a cgroup CPU limit throttles it, so real answers wait;
  bounded in time, it ends by itself;
- :func:`cut_coredns_from_apiserver`: CoreDNS reloads with an API endpoint
  it cannot reach (a closed loopback port), as after a bad config change or a
  partition at restart;
- :func:`restore_coredns`: the rollback of all of them (normal Corefile,
  process running, ready); :func:`start_coredns` starts a killed CoreDNS as
  its supervisor would.

On a kind cluster the real CoreDNS Deployment is acted on: :func:`kill_coredns`
scales it to 0 (its supervisor scales it back), :func:`restart_coredns` kills its
containers (SIGKILL, as an OOM kill does) and kubelet starts them again, with
or without an API server; :func:`hang_coredns` freezes its processes;
:func:`restore_coredns` brings it back and waits until it answers. The
Corefile faults (configuration, dropped answers, latency, the cut) are local
provider only.
"""

import contextlib
import re
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml
from chaoslib.exceptions import ActivityFailed
from chaoslib.types import Configuration, Secrets

from blackstart.actions import _components as components
from blackstart.arguments import flag, whole_number
from blackstart.arguments import number as _seconds
from blackstart.clusters.local.coredns import CorednsConfig, render_corefile
from blackstart.clusters.local.provider import LocalProvider
from blackstart.clusters.net import free_port
from blackstart.clusters.processes import is_alive
from blackstart.clusters.provider import ClusterError, ClusterProvider
from blackstart.health import utc_now_iso, wait_until
from blackstart.probes.dns import DEFAULT_NAMES, query_once
from blackstart.target import Target, cluster_provider, local_provider, resolve_target

__all__ = [
    "add_dns_latency",
    "break_coredns_config",
    "cut_coredns_from_apiserver",
    "drop_dns_answers",
    "hang_coredns",
    "kill_coredns",
    "restart_coredns",
    "restore_coredns",
    "start_coredns",
]

COREDNS = "coredns"
PROBE_NAME = DEFAULT_NAMES[0]  # a name every cluster serves: kubernetes.default.svc
CONFIG_APPLY_TIMEOUT_S = 15.0
CUT_KUBECONFIG = "coredns-cut-off.kubeconfig"


def _local(
    configuration: Configuration, secrets: Secrets, what: str
) -> tuple[Target, LocalProvider, str]:
    target = resolve_target(configuration, secrets)
    provider = local_provider(target, what)
    return target, provider, str(target.cluster)


def _any(
    configuration: Configuration, secrets: Secrets, what: str
) -> tuple[Target, ClusterProvider, str]:
    """The target's provider, local or kind."""
    target = resolve_target(configuration, secrets)
    return target, cluster_provider(target, what), str(target.cluster)


# ------------------------------------------------------------- configuration
def _metrics(cfg: CorednsConfig) -> str:
    url = f"http://127.0.0.1:{cfg.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=2) as response:
        return str(response.read().decode(errors="replace"))


def _reload_state(cfg: CorednsConfig) -> tuple[bool, str | None, float]:
    """(metrics answer, running configuration hash, failed reloads) from CoreDNS's metrics.

    A CoreDNS that has not reloaded since it started reports no hash yet.
    """
    try:
        text = _metrics(cfg)
    except OSError:
        return False, None, 0.0
    version = re.search(r'coredns_reload_version_info\{[^}]*value="([0-9a-f]+)"', text)
    failed = re.search(r"^coredns_reload_failed_total (\S+)$", text, re.MULTILINE)
    return (
        True,
        version.group(1) if version else None,
        float(failed.group(1)) if failed else 0.0,
    )


_normal_hash: dict[str, str] = {}  # cluster -> hash CoreDNS reported for its normal Corefile


def _write_and_wait(
    provider: LocalProvider, cluster: str, cfg: CorednsConfig, text: str, expect_failure: bool
) -> str:
    """Write the Corefile; wait until CoreDNS runs it (or, when expected, rejects it)."""
    # a CoreDNS that was just started or resumed may take a moment to answer on metrics
    wait_until(lambda: _reload_state(cfg)[0], 5.0, 0.2)
    reachable, before_hash, before_failed = _reload_state(cfg)
    if not reachable:
        raise ActivityFailed(
            f"CoreDNS of cluster {cluster} does not answer on its metrics port "
            f"{cfg.metrics_port}: is it running? (`blackstart cluster status --name {cluster}`)"
        )
    path = provider.corefile(cluster)
    if before_hash is not None and path.exists() and path.read_text() == render_corefile(cfg):
        _normal_hash.setdefault(cluster, before_hash)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(path)

    def applied() -> str | None:
        _, now_hash, now_failed = _reload_state(cfg)
        if now_failed > before_failed:
            return "rejected"
        if now_hash is not None and now_hash != before_hash:
            return "applied"
        return None

    outcome, _ = wait_until(applied, CONFIG_APPLY_TIMEOUT_S, 0.25)
    if outcome is None:
        raise ActivityFailed(
            f"CoreDNS of cluster {cluster} did not pick up the new Corefile within "
            f"{CONFIG_APPLY_TIMEOUT_S:g} s; see {provider.log_file(cluster, COREDNS)}"
        )
    if outcome == "rejected" and not expect_failure:
        raise ActivityFailed(
            f"CoreDNS of cluster {cluster} rejected the new Corefile; see "
            f"{provider.log_file(cluster, COREDNS)}"
        )
    if outcome == "applied" and expect_failure:
        raise ActivityFailed(
            f"CoreDNS of cluster {cluster} accepted a Corefile meant to be invalid"
        )
    return outcome


def _write_normal(provider: LocalProvider, cluster: str, cfg: CorednsConfig) -> None:
    """Write the normal Corefile and, when CoreDNS runs, wait until it runs that again."""
    provider.write_corefile(cluster, cfg)
    if components.component_state(provider, cluster, COREDNS) != "running":
        return
    normal = _normal_hash.get(cluster)
    if normal is not None:
        wait_until(lambda: _reload_state(cfg)[1] == normal, CONFIG_APPLY_TIMEOUT_S, 0.25)
    else:  # another process broke it: give the reload plugin (every 2 s) time to act
        time.sleep(cfg.reload_seconds + 1.5)


def drop_corefile(cfg: CorednsConfig, share: float) -> str:
    """A Corefile that drops ``share`` of queries (by message id) and serves the rest normally."""
    normal = render_corefile(cfg)
    zones, _, _body = normal.partition("{")
    per_mille = round(share * 1000)
    return (
        f"{zones.strip()} {{\n"
        "    view blackstart-drop {\n"
        f"        expr id() % 1000 < {per_mille}\n"
        "    }\n"
        f"    bind {cfg.bind}\n"
        "    erratic {\n"
        "        drop 1\n"
        "    }\n"
        "}\n"
        f"{normal}"
    )


# ---------------------------------------------------------------- throttling
class _Throttle:
    """Freeze CoreDNS ``pause`` s out of every ``period`` s until stopped or ``duration`` ends."""

    def __init__(
        self, provider: LocalProvider, cluster: str, pause: float, period: float, duration: float
    ):
        self.provider = provider
        self.cluster = cluster
        self.pause = pause
        self.period = period
        self.duration = duration
        self.stop_event = threading.Event()
        self.cycles = 0
        self.thread = threading.Thread(
            target=self._run, name="blackstart-dns-throttle", daemon=True
        )

    def _run(self) -> None:
        deadline = time.monotonic() + self.duration
        try:
            while not self.stop_event.is_set() and time.monotonic() < deadline:
                try:
                    self.provider.hang_component(self.cluster, COREDNS)
                except Exception:
                    return  # CoreDNS went away: nothing to throttle
                try:
                    self.stop_event.wait(self.pause)
                finally:
                    self._resume()
                self.cycles += 1
                self.stop_event.wait(max(0.0, self.period - self.pause))
        finally:
            self._resume()

    def _resume(self) -> None:
        with contextlib.suppress(Exception):  # not running: nothing to resume
            self.provider.resume_component(self.cluster, COREDNS)

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(self.pause + 5.0)


_throttles: dict[str, _Throttle] = {}
_throttles_lock = threading.Lock()


def _stop_throttle(cluster: str) -> bool:
    with _throttles_lock:
        throttle = _throttles.pop(cluster, None)
    if throttle is None:
        return False
    throttle.stop()
    return True


def active_dns_throttles() -> list[str]:
    """Clusters whose CoreDNS this process is throttling now."""
    with _throttles_lock:
        return [name for name, t in _throttles.items() if t.thread.is_alive()]


# ------------------------------------------------------------------- actions
class _Supervisor:
    """Start a killed CoreDNS again after a delay, as kubelet restarts a crashed container."""

    def __init__(self, provider: ClusterProvider, cluster: str, delay: float):
        self.provider = provider
        self.cluster = cluster
        self.cancelled = threading.Event()
        self.restarted_at: str | None = None
        self.thread = threading.Thread(
            target=self._run, args=(delay,), name="blackstart-dns-supervisor", daemon=True
        )

    def _run(self, delay: float) -> None:
        if self.cancelled.wait(delay):
            return
        with contextlib.suppress(Exception):  # the rollback starts it if this fails
            components.ensure_running(self.provider, self.cluster, COREDNS)
            self.restarted_at = utc_now_iso()


_supervisors: dict[str, _Supervisor] = {}


def _cancel_supervisor(cluster: str) -> None:
    with _throttles_lock:
        supervisor = _supervisors.pop(cluster, None)
    if supervisor is not None:
        supervisor.cancelled.set()
        supervisor.thread.join(5.0)


def kill_coredns(
    restart_after_s: float = 0.0, configuration: Configuration = None, secrets: Secrets = None
) -> dict[str, Any]:
    """Kill CoreDNS (SIGKILL): the cluster's DNS stops answering at once.

    ``restart_after_s``: when above 0, CoreDNS is started again that many
    seconds later by a background supervisor (as kubelet restarts a crashed
    container), so a probe can measure how long DNS takes to answer again; 0
    leaves it down until ``start_coredns`` or ``restore_coredns`` (the
    rollback) runs. Returns ``{"cluster", "component", "pid", "stopped_at",
    "restart_after_s"}``; raises when CoreDNS was not running.
    """
    delay = _seconds("restart_after_s", restart_after_s, 0, 600)
    _, provider, cluster = _any(configuration, secrets, "kill_coredns")
    result = components.stop(provider, cluster, COREDNS, grace=0.0)
    result["restart_after_s"] = delay or None
    if delay:
        _cancel_supervisor(cluster)
        supervisor = _Supervisor(provider, cluster, delay)
        with _throttles_lock:
            _supervisors[cluster] = supervisor
        supervisor.thread.start()
    return result


def hang_coredns(configuration: Configuration = None, secrets: Secrets = None) -> dict[str, Any]:
    """Freeze CoreDNS (SIGSTOP): its port stays open, queries time out.

    Returns ``{"cluster", "component", "pid", "hung_at"}``. Roll back with
    ``restore_coredns``.
    """
    _, provider, cluster = _any(configuration, secrets, "hang_coredns")
    return components.hang(provider, cluster, COREDNS)


def _answers(target: Target, provider: ClusterProvider, cluster: str) -> bool:
    """CoreDNS is ready and answers a cluster name (a SERVFAIL it cached while it could not
    sync lingers for seconds after it reports ready)."""
    if isinstance(provider, LocalProvider) and not provider.coredns_ready(cluster):
        return False
    address = target.dns_server or ""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ActivityFailed(
            f"cluster {cluster} has no data-plane DNS address to check CoreDNS with "
            f"({address!r}); set the configuration key 'dns_server' as host:port"
        )
    return query_once(host, int(port), PROBE_NAME, "A", 0.5)[0] == "ok"


def _wait_ready(
    target: Target, provider: ClusterProvider, cluster: str, timeout_s: float
) -> float | None:
    ready, waited = wait_until(lambda: _answers(target, provider, cluster), timeout_s, 0.2)
    return round(waited, 3) if ready else None


def _logs(provider: ClusterProvider, cluster: str) -> str:
    if isinstance(provider, LocalProvider):
        return f"see {provider.log_file(cluster, COREDNS)}"
    return "see `kubectl -n kube-system logs deployment/coredns`"


def start_coredns(
    timeout_s: float = 30.0, configuration: Configuration = None, secrets: Secrets = None
) -> dict[str, Any]:
    """Start CoreDNS if it is not running (resume it if hung), as its supervisor would.

    Waits until its ``ready`` endpoint answers (the ``kubernetes`` plugin has
    synced from the API server) and it resolves ``kubernetes.default.svc``, and returns
    ``{"cluster", "done",
    "ready_after_s"}``; raises when it is not ready within ``timeout_s``.
    The configuration is left as it is (see ``restore_coredns``).
    """
    _seconds("timeout_s", timeout_s, 1, 600)
    target, provider, cluster = _any(configuration, secrets, "start_coredns")
    done = components.ensure_running(provider, cluster, COREDNS)
    ready_after = _wait_ready(target, provider, cluster, timeout_s)
    if ready_after is None:
        raise ActivityFailed(
            f"CoreDNS of cluster {cluster} was not ready {timeout_s:g} s after it was "
            f"{done}; {_logs(provider, cluster)}"
        )
    return {"cluster": cluster, "done": done, "ready_after_s": ready_after}


def restart_coredns(
    wait_ready: bool = False,
    timeout_s: float = 30.0,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> dict[str, Any]:
    """Restart CoreDNS (stop, then start), as a rollout or an OOM kill would.

    A CoreDNS restarted while the API server is down cannot sync its
    ``kubernetes`` plugin and answers SERVFAIL for cluster names: the coupling
    that took the data plane down in the real incident. ``wait_ready``: also
    wait (up to ``timeout_s``) until it reports ready, and raise if it does not.
    Returns ``{"cluster", "pid", "restarted_at", "ready_after_s"}``
    (``ready_after_s`` null when not waited for or not ready).
    """
    flag("wait_ready", wait_ready)
    _seconds("timeout_s", timeout_s, 1, 600)
    target, provider, cluster = _any(configuration, secrets, "restart_coredns")
    if isinstance(provider, LocalProvider):
        if components.component_state(provider, cluster, COREDNS) == "stopped":
            raise ActivityFailed(f"CoreDNS of cluster {cluster} is not running: nothing to restart")
        components.stop(provider, cluster, COREDNS, grace=5.0)
        components.ensure_running(provider, cluster, COREDNS)
        pid = components.component_pid(provider, cluster, COREDNS)
    else:
        _restart(provider, cluster)
        pid = None  # pids inside a kind node mean nothing on the host
    result: dict[str, Any] = {
        "cluster": cluster,
        "pid": pid,
        "restarted_at": utc_now_iso(),
        "ready_after_s": None,
    }
    if wait_ready:
        result["ready_after_s"] = _wait_ready(target, provider, cluster, timeout_s)
        if result["ready_after_s"] is None:
            raise ActivityFailed(
                f"CoreDNS of cluster {cluster} was not ready {timeout_s:g} s after its restart"
            )
    return result


def break_coredns_config(
    restart: bool = False, configuration: Configuration = None, secrets: Secrets = None
) -> dict[str, Any]:
    """Write an invalid Corefile (an unknown directive), as a bad ConfigMap change does.

    A running CoreDNS rejects the reload and keeps serving with its old
    configuration (checked: the action raises if it accepted it); the fault
    bites at the next restart. ``restart: true`` restarts CoreDNS now, which
    then fails to start: DNS is down. Returns ``{"cluster", "reload",
    "running"}``. Roll back with ``restore_coredns``.
    """
    flag("restart", restart)
    _, provider, cluster = _local(configuration, secrets, "break_coredns_config")
    cfg = provider.coredns_config(cluster)
    outcome = _write_and_wait(
        provider, cluster, cfg, render_corefile(cfg.with_changes(broken=True)), True
    )
    running = True
    if restart:
        components.stop(provider, cluster, COREDNS, grace=5.0)
        try:
            provider.start_coredns(cluster)
        except Exception as err:
            raise ActivityFailed(f"could not start CoreDNS of cluster {cluster}: {err}") from err
        # CoreDNS exits at once on a Corefile it cannot parse
        gone, _ = wait_until(
            lambda: not is_alive(components.component_pid(provider, cluster, COREDNS)), 5.0, 0.1
        )
        running = not gone
        if running:
            raise ActivityFailed(
                f"CoreDNS of cluster {cluster} still runs with an invalid Corefile after restart"
            )
    return {"cluster": cluster, "reload": outcome, "running": running}


def drop_dns_answers(
    share: float = 0.5, configuration: Configuration = None, secrets: Secrets = None
) -> dict[str, Any]:
    """Drop ``share`` (0-1) of DNS queries without answering; clients time out and retry.

    Queries are picked by their DNS message id, so the share holds for any
    client. Waits until CoreDNS runs the new configuration. Returns
    ``{"cluster", "share", "reload"}``. Roll back with ``restore_coredns``.
    """
    _seconds("share", share, 0.001, 1.0)
    _, provider, cluster = _local(configuration, secrets, "drop_dns_answers")
    cfg = provider.coredns_config(cluster)
    outcome = _write_and_wait(provider, cluster, cfg, drop_corefile(cfg, share), False)
    return {"cluster": cluster, "share": share, "reload": outcome}


def add_dns_latency(
    pause_ms: int = 200,
    period_ms: int = 500,
    duration_s: float = 60.0,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> dict[str, Any]:
    """Make CoreDNS slow: freeze it ``pause_ms`` out of every ``period_ms`` for ``duration_s``.

    This is what a CPU limit does to a busy CoreDNS pod (CFS throttling):
    queries that arrive while it is frozen wait up to ``pause_ms``. Runs in a
    background thread of the chaos process and ends by itself after
    ``duration_s`` (at most 600), always leaving CoreDNS running. Returns
    ``{"cluster", "pause_ms", "period_ms", "ends_in_s"}``. Roll back with
    ``restore_coredns`` (which ends it early).
    """
    for name, value, low, high in (
        ("pause_ms", pause_ms, 1, 10000),
        ("period_ms", period_ms, 2, 60000),
    ):
        whole_number(name, value, low, high)
    if pause_ms >= period_ms:
        raise ActivityFailed(f"pause_ms ({pause_ms}) must be shorter than period_ms ({period_ms})")
    _seconds("duration_s", duration_s, 1, 600)
    _, provider, cluster = _local(configuration, secrets, "add_dns_latency")
    if components.component_state(provider, cluster, COREDNS) != "running":
        raise ActivityFailed(f"CoreDNS of cluster {cluster} is not running: cannot slow it down")
    _stop_throttle(cluster)
    throttle = _Throttle(provider, cluster, pause_ms / 1000, period_ms / 1000, float(duration_s))
    with _throttles_lock:
        _throttles[cluster] = throttle
    throttle.thread.start()
    return {
        "cluster": cluster,
        "pause_ms": pause_ms,
        "period_ms": period_ms,
        "ends_in_s": duration_s,
    }


def cut_coredns_from_apiserver(
    configuration: Configuration = None, secrets: Secrets = None
) -> dict[str, Any]:
    """Cut CoreDNS off from the API server: it reloads with an endpoint it cannot reach.

    The new configuration points CoreDNS's ``kubernetes`` plugin at a closed
    loopback port. After the reload CoreDNS has nothing synced: within a few
    seconds cluster names get SERVFAIL, until ``restore_coredns`` (the
    rollback) points it back. Returns ``{"cluster", "reload", "endpoint"}``.
    """
    _, provider, cluster = _local(configuration, secrets, "cut_coredns_from_apiserver")
    cfg = provider.coredns_config(cluster)
    kubeconfig = yaml.safe_load(Path(cfg.kubeconfig).read_text())
    endpoint = f"https://127.0.0.1:{free_port()}"
    for entry in kubeconfig.get("clusters", []):
        entry["cluster"]["server"] = endpoint
    cut = provider.state_dir(cluster) / CUT_KUBECONFIG
    cut.write_text(yaml.safe_dump(kubeconfig, sort_keys=False))
    cut.chmod(0o600)
    outcome = _write_and_wait(
        provider, cluster, cfg, render_corefile(cfg.with_changes(kubeconfig=cut)), False
    )
    return {"cluster": cluster, "reload": outcome, "endpoint": endpoint}


def restore_coredns(
    timeout_s: float = 60.0, configuration: Configuration = None, secrets: Secrets = None
) -> dict[str, Any]:
    """Put CoreDNS back: normal Corefile, running, ready (the rollback of every DNS fault).

    Ends a running ``add_dns_latency``, resumes a hung CoreDNS, writes the
    normal Corefile, starts CoreDNS if it is not running, and waits until it
    is ready and resolves ``kubernetes.default.svc`` (no stale SERVFAIL left in
    its cache); if it is not ready within half of ``timeout_s`` it is
    restarted once. Safe when nothing was broken. Returns ``{"cluster",
    "done", "ready_after_s"}``; raises when CoreDNS is not ready within
    ``timeout_s`` (is the API server up?).
    """
    _seconds("timeout_s", timeout_s, 2, 600)
    target, any_provider, cluster = _any(configuration, secrets, "restore_coredns")
    started = time.monotonic()
    done = []
    _cancel_supervisor(cluster)
    if _stop_throttle(cluster):
        done.append("throttling ended")
    if not isinstance(any_provider, LocalProvider):
        return _restore_deployment(target, any_provider, cluster, timeout_s, started, done)
    provider = any_provider
    cfg = provider.coredns_config(cluster)
    was = components.component_state(provider, cluster, COREDNS)
    if was == "hung":
        components.ensure_running(provider, cluster, COREDNS)
        done.append("resumed")
    path = provider.corefile(cluster)
    if not path.exists() or path.read_text() != render_corefile(cfg):
        _write_normal(provider, cluster, cfg)
        done.append("configuration restored")
    if components.component_state(provider, cluster, COREDNS) == "stopped":
        components.ensure_running(provider, cluster, COREDNS)
        done.append("started")
    (provider.state_dir(cluster) / CUT_KUBECONFIG).unlink(missing_ok=True)
    ready_after = _wait_ready(target, provider, cluster, timeout_s / 2)
    if ready_after is None:
        components.stop(provider, cluster, COREDNS, grace=2.0)
        components.ensure_running(provider, cluster, COREDNS)
        done.append("restarted (was not ready)")
        left = max(1.0, timeout_s - (time.monotonic() - started))
        if _wait_ready(target, provider, cluster, left) is None:
            raise ActivityFailed(
                f"CoreDNS of cluster {cluster} is not ready {timeout_s:g} s into its restore; "
                f"is the API server up? {_logs(provider, cluster)}"
            )
    return _restored(cluster, done, started)


def _restored(cluster: str, done: list[str], started: float) -> dict[str, Any]:
    """What :func:`restore_coredns` returns."""
    return {
        "cluster": cluster,
        "done": done or ["nothing to restore"],
        "ready_after_s": round(time.monotonic() - started, 3),
    }


def _restart(provider: ClusterProvider, cluster: str) -> None:
    try:
        provider.restart_coredns(cluster)
    except ClusterError as err:
        raise ActivityFailed(f"could not restart CoreDNS of cluster {cluster}: {err}") from err


def _restore_deployment(
    target: Target,
    provider: ClusterProvider,
    cluster: str,
    timeout_s: float,
    started: float,
    done: list[str],
) -> dict[str, Any]:
    """:func:`restore_coredns` on a cluster whose CoreDNS is a Deployment (kind)."""
    state = components.component_state(provider, cluster, COREDNS)
    if state != "running":
        components.ensure_running(provider, cluster, COREDNS)
        done.append("resumed" if state == "hung" else "started")
    # No restart half-way, as on the local provider: after an API outage the node's
    # kube-proxy and CoreDNS's own client each retry with a back-off (about a minute in
    # all, measured on kind); a restart would only start CoreDNS's wait again.
    left = max(1.0, timeout_s - (time.monotonic() - started))
    if _wait_ready(target, provider, cluster, left) is None:
        raise ActivityFailed(
            f"CoreDNS of cluster {cluster} does not answer {timeout_s:g} s into its "
            f"restore; is the API server up? {_logs(provider, cluster)}"
        )
    return _restored(cluster, done, started)
