"""kube-apiserver's liveness probe, as kubeadm writes it into the static pod and kubelet runs it.

``GET /livez`` every :data:`PERIOD_S` seconds with a :data:`TIMEOUT_S` timeout;
after :data:`FAILURE_THRESHOLD` failures in a row the process is killed
(SIGTERM, SIGKILL after :data:`GRACE_S`) and the supervisor restarts it with
its back-off. As kubelet's startup probe does, failures count only once the
process has answered once. An API server that a storm leaves thrashing under
its memory limit (alive, not OOM-killed, answering nothing) is restarted this
way, as in the incident, instead of hanging for as long as the kernel lets it.

A process frozen on purpose (SIGSTOP: the ``hang_apiserver`` fault) is not
probed: the fault decides when it runs again.
"""

import contextlib
import os
import signal
import ssl
import time
from dataclasses import dataclass
from pathlib import Path

from blackstart.clusters.net import http_ok
from blackstart.clusters.processes import is_alive, is_stopped

# kubeadm's values (cmd/kubeadm/app/util/staticpod: LivenessProbe)
PERIOD_S = 10.0
TIMEOUT_S = 15.0
FAILURE_THRESHOLD = 8
# the pod's default terminationGracePeriodSeconds
GRACE_S = 30.0


@dataclass
class LivenessProbe:
    """Consecutive failures of one process's probe; says when it must be killed."""

    threshold: int = FAILURE_THRESHOLD
    pid: int | None = None
    started: bool = False  # answered once (the startup probe passed)
    failures: int = 0

    def observe(self, pid: int, ok: bool) -> bool:
        """Count one probe of ``pid``; True when it has now failed ``threshold`` times in a row."""
        if pid != self.pid:  # a new process: a new startup
            self.pid, self.started, self.failures = pid, False, 0
        if ok:
            self.started, self.failures = True, 0
            return False
        if not self.started:
            return False
        self.failures += 1
        return self.failures >= self.threshold


def tls_context(pki_dir: Path) -> ssl.SSLContext:
    """The cluster's CA and admin client certificate (system:masters: APF-exempt, as probes)."""
    context = ssl.create_default_context(cafile=str(pki_dir / "ca.crt"))
    context.load_cert_chain(str(pki_dir / "admin.crt"), str(pki_dir / "admin.key"))
    return context


def probe(url: str, context: ssl.SSLContext, timeout: float = TIMEOUT_S) -> bool:
    """One ``GET {url}/livez``."""
    ok, _ = http_ok(f"{url.rstrip('/')}/livez", context, timeout=timeout)
    return ok


def probed(pid: int | None) -> bool:
    """Whether a probe of ``pid`` means anything: it runs and is not frozen on purpose."""
    return pid is not None and is_alive(pid) and not is_stopped(pid)


def kill(pid: int, grace: float = GRACE_S) -> None:
    """SIGTERM, then SIGKILL after ``grace`` seconds, as kubelet stops a container."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while is_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if is_alive(pid):
            os.kill(pid, signal.SIGKILL)
