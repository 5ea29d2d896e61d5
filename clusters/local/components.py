"""Faults on one component of a local cluster: stop, hang, resume, start; and status."""

import signal
import ssl
import time
from dataclasses import replace

from blackstart.clusters.local import kwokctl
from blackstart.clusters.local.base import OWN_COMPONENTS, RESCUE_COMPONENTS
from blackstart.clusters.local.control_plane import LocalControlPlane
from blackstart.clusters.local.dns import LocalDns
from blackstart.clusters.local.rescue_processes import LocalRescue
from blackstart.clusters.net import http_ok
from blackstart.clusters.processes import (
    is_alive,
    is_stopped,
    read_pid,
    signal_pid_file,
    stop_pid_file,
)
from blackstart.clusters.provider import ClusterError, ComponentStatus

KWOKCTL_START_TIMEOUT_S = 60
PORT_RETRIES = 4


class LocalComponents(LocalDns, LocalRescue, LocalControlPlane):
    def stop_component(self, name: str, component: str, grace: float = 5.0) -> bool:
        """Stop one component (kube-apiserver, etcd, coredns, kwok-controller, ...).

        SIGTERM, then SIGKILL after ``grace`` seconds. The pid file goes too: a killed
        process whose parent (kwokctl) is gone can linger as a zombie that kwokctl
        would take for running, and then never start it again. A supervised
        component (kube-apiserver) is held down: its supervisor leaves it stopped
        until :meth:`start_component` (or :meth:`release`).
        """
        self.hold(name, component)
        pid_file = self._component_pid_file(name, component)
        stopped = stop_pid_file(pid_file, component, timeout=grace)
        pid_file.unlink(missing_ok=True)
        return stopped

    def hang_component(self, name: str, component: str) -> int:
        """Freeze one component with SIGSTOP: its port stays open, nothing answers.

        Returns once the kernel shows the process stopped (signal delivery is
        asynchronous), so callers can rely on it answering nothing.
        """
        pid = signal_pid_file(self._component_pid_file(name, component), signal.SIGSTOP, component)
        deadline = time.monotonic() + 5.0
        while not is_stopped(pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        if not is_stopped(pid):
            raise ClusterError(f"{component} (pid {pid}) did not stop on SIGSTOP within 5 s")
        return pid

    def resume_component(self, name: str, component: str) -> int:
        """Resume a component frozen by :meth:`hang_component`."""
        return signal_pid_file(self._component_pid_file(name, component), signal.SIGCONT, component)

    def component_pid(self, name: str, component: str) -> int | None:
        """The pid of ``component`` from its pid file (None when there is none)."""
        if component in OWN_COMPONENTS:
            return read_pid(self.pid_file(name, component))
        try:
            return self.kwok_cluster(name).pid(component)
        except Exception as err:  # an unknown component name
            raise ClusterError(str(err)) from err

    def component_state(self, name: str, component: str) -> str:
        """``running``, ``hung`` (SIGSTOP) or ``stopped``."""
        pid = self.component_pid(name, component)
        if not is_alive(pid):
            return "stopped"
        return "hung" if is_stopped(pid) else "running"

    def start_component(self, name: str, component: str) -> None:
        """Start a stopped component again (nothing happens when it runs).

        A component whose port another process took while it was stopped is
        tried again a few times (the other process may let go); when it still
        does not run, the error quotes the end of its log.
        """
        self.release(name, component)  # its supervisor may restart it again from now on
        if component in RESCUE_COMPONENTS:
            self._start_rescue_component(name, component)
            return
        for _attempt in range(PORT_RETRIES):
            if component in OWN_COMPONENTS:
                if not is_alive(read_pid(self.pid_file(name, component))):
                    self.start_coredns(name)
            else:
                kwokctl.start_stopped_components(
                    self.toolchain,
                    self.kwok_cluster(name),
                    timeout_s=KWOKCTL_START_TIMEOUT_S,
                    # kube-apiserver is born in the control plane's cgroup; anything else
                    # (and kwokctl) outside it: a controller-manager started into a cgroup
                    # that a storm filled gets the API server OOM-killed
                    preexec=(
                        self.control_plane_preexec(name) if component == "kube-apiserver" else None
                    ),
                )
            if is_alive(self.component_pid(name, component)):
                return
            if "address already in use" not in self.log_tail(name, component):
                break
            time.sleep(5.0)
        raise ClusterError(
            f"{component} of cluster {name} did not start: {self.log_tail(name, component)}"
        )

    def log_tail(self, name: str, component: str) -> str:
        """Why a component did not start, from the end of its log."""
        if component in OWN_COMPONENTS:
            path = self.log_file(name, component)
        else:
            path = self.kwok_cluster(name).log_file(component)
        try:
            lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
        except OSError:
            return f"no log at {path}"
        last = lines[-1][-400:] if lines else "(empty log)"
        hint = ""
        if "address already in use" in last:
            hint = (
                "; another process took its port while it was stopped (another cluster on this "
                "machine?): free the port or recreate the cluster"
            )
        return f"{last}{hint} (log {path})"

    def restart_component(self, name: str, component: str) -> None:
        """Stop then start one component."""
        self.stop_component(name, component)
        self.start_component(name, component)

    def status(self, name: str) -> list[ComponentStatus]:
        """Each component: pid, endpoint, running/hung/stopped and health."""
        state = self.state(name)
        kc = self.kwok_cluster(name)
        options = kc.options()
        tls = ssl.create_default_context(cafile=str(kc.pki_dir / "ca.crt"))
        tls.load_cert_chain(str(kc.pki_dir / "admin.crt"), str(kc.pki_dir / "admin.key"))
        insecure = ssl.create_default_context()
        insecure.check_hostname = False
        insecure.verify_mode = ssl.CERT_NONE
        insecure.load_cert_chain(str(kc.pki_dir / "admin.crt"), str(kc.pki_dir / "admin.key"))
        checks: dict[str, tuple[str, ssl.SSLContext | None]] = {
            "etcd": (f"http://127.0.0.1:{options.get('etcdPort', 0)}/health", None),
            "kube-apiserver": (f"{state.apiserver_url}/readyz", tls),
            "kube-controller-manager": (
                f"https://127.0.0.1:{options.get('kubeControllerManagerPort', 0)}/healthz",
                insecure,
            ),
            "kube-scheduler": (
                f"https://127.0.0.1:{options.get('kubeSchedulerPort', 0)}/healthz",
                insecure,
            ),
            "kwok-controller": (
                f"http://127.0.0.1:{options.get('kwokControllerPort', 0)}/healthz",
                None,
            ),
            "prometheus": (f"{state.prometheus_url}/-/ready", None),
            "coredns": (f"http://127.0.0.1:{state.coredns.get('ready', 0)}/ready", None),
        }
        rescue = state.extra.get("rescue")
        if isinstance(rescue, dict):
            for component, port in dict(rescue.get("metrics_ports") or {}).items():
                checks[component] = (f"http://127.0.0.1:{port}/metrics", None)
        result = []
        for component, (url, context) in checks.items():
            pid = read_pid(self._component_pid_file(name, component))
            if not is_alive(pid):
                result.append(ComponentStatus(component, pid, url, "stopped", False))
                continue
            if is_stopped(pid):
                result.append(ComponentStatus(component, pid, url, "hung", False, "SIGSTOP"))
                continue
            ok, detail = http_ok(url, context)
            result.append(ComponentStatus(component, pid, url, "running", ok, detail))
        return [self._with_restarts(name, s) for s in result]

    def _with_restarts(self, name: str, status: ComponentStatus) -> ComponentStatus:
        """Add the supervisor's restart count (and the last exit reason) to a component."""
        record = (self.supervisor_status(name).get("components") or {}).get(status.name)
        if not isinstance(record, dict) or not record.get("restarts"):
            return status
        detail = status.detail
        if record.get("last_exit"):
            detail = f"last exit {record['last_exit']}; {detail}".strip("; ")
        return replace(status, restarts=int(record["restarts"]), detail=detail)
