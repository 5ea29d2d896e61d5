"""kwokctl, driven with the binary runtime: the real control plane as local processes.

``kwokctl create cluster --runtime binary`` runs etcd, kube-apiserver,
kube-controller-manager, kube-scheduler, the kwok controller and Prometheus as
processes, each with a pid file in ``<workdir>/clusters/<name>/pids``. This
module builds that command line from the toolchain, and finds and signals one
component by its pid file for the fault actions.
"""

from __future__ import annotations

import contextlib
import fcntl
import signal
import subprocess
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import yaml

from blackstart.clusters.processes import (
    ProcessError,
    forget_unreaped,
    read_pid,
    signal_pid_file,
    stop_pid_file,
)
from blackstart.clusters.toolchain import Toolchain

# Components kwokctl runs for blackstart, by the binary name its pid file carries.
COMPONENTS = (
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kwok-controller",
    "prometheus",
)
# pid files carry the component name; kept as a map in case a component is renamed.
_PID_NAMES: dict[str, str] = {}

STAGE_FILES = (
    "node-initialize.yaml",
    "node-heartbeat-with-lease.yaml",
    "node-not-ready.yaml",
    "pod-ready.yaml",
    "pod-complete.yaml",
    "pod-delete.yaml",
)
# Label that puts a node through KWOK's node-not-ready stage (see stages/node-not-ready.yaml).
NODE_NOT_READY_LABEL = "node-not-ready.stage.kwok.x-k8s.io"


class KwokctlError(RuntimeError):
    """kwokctl failed; the message carries its output."""


@dataclass(frozen=True)
class KwokCluster:
    """Where kwokctl keeps one cluster."""

    name: str
    workdir: Path  # KWOK_WORKDIR

    @property
    def cluster_dir(self) -> Path:
        return self.workdir / "clusters" / self.name

    @property
    def pki_dir(self) -> Path:
        return self.cluster_dir / "pki"

    @property
    def kubeconfig(self) -> Path:
        return self.cluster_dir / "kubeconfig.yaml"

    @property
    def prometheus_config(self) -> Path:
        return self.cluster_dir / "prometheus.yaml"

    def pid_file(self, component: str) -> Path:
        if component not in COMPONENTS:
            raise KwokctlError(f"unknown component {component!r}; one of: {', '.join(COMPONENTS)}")
        return self.cluster_dir / "pids" / f"{_PID_NAMES.get(component, component)}.pid"

    def pid(self, component: str) -> int | None:
        return read_pid(self.pid_file(component))

    @contextlib.contextmanager
    def start_lock(self) -> Iterator[None]:
        """Held around ``kwokctl start cluster``: one start of the cluster's components at a time.

        kwokctl starts each component it finds stopped and writes its pid file. Two
        starts at once (the supervisor's after a back-off, a rollback's) both find a
        controller stopped and both start it: the second loses the port and exits, its
        pid file names the dead one, and the live one runs untracked, out of reach of
        every later stop. A start that waited here finds the first one's process running.

        A component that exited a moment ago and is not yet reaped would look running
        to kwokctl (it probes with signal 0), which would start nothing: under the lock
        its reaping is waited for (:func:`forget_unreaped`).
        """
        path = self.cluster_dir / "start.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                for component in COMPONENTS:
                    forget_unreaped(self.pid_file(component))
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def options(self) -> dict[str, object]:
        """The options kwokctl saved for this cluster (ports among them), or {} when gone."""
        path = self.cluster_dir / "kwok.yaml"
        if not path.exists():
            return {}
        for doc in yaml.safe_load_all(path.read_text()):
            if isinstance(doc, dict) and doc.get("kind") == "KwokctlConfiguration":
                options = doc.get("options") or {}
                return dict(options) if isinstance(options, dict) else {}
        return {}

    def log_file(self, component: str) -> Path:
        return self.cluster_dir / "logs" / f"{component}.log"


def stage_documents() -> list[dict[str, object]]:
    """The KWOK Stages blackstart loads: kwokctl's defaults plus node-not-ready."""
    folder = resources.files("blackstart.clusters.local").joinpath("stages")
    return [yaml.safe_load(folder.joinpath(name).read_text()) for name in STAGE_FILES]


# How many node Leases the kwok controller creates or renews at once (KWOK's default: 4).
# With 4, lease creation fell behind node creation (41% held when the last of 10,000
# nodes was made) and `cluster up` waited 13 s for the rest; with 16 it keeps pace.
NODE_LEASE_PARALLELISM = 16


def kwokctl_config(
    heartbeat_factor: float | None = None, node_lease_parallelism: int = NODE_LEASE_PARALLELISM
) -> str:
    """The ``--config`` file: a KwokctlConfiguration, the kwok controller's, the Stages.

    Giving any Stage replaces kwokctl's defaults, so the defaults ship here too.
    """
    options: dict[str, object] = {}
    if heartbeat_factor is not None:
        options["heartbeatFactor"] = heartbeat_factor
    docs: list[dict[str, object]] = [
        {
            "apiVersion": "config.kwok.x-k8s.io/v1alpha1",
            "kind": "KwokctlConfiguration",
            "options": options,
        },
        {
            "apiVersion": "config.kwok.x-k8s.io/v1alpha1",
            "kind": "KwokConfiguration",
            "options": {"nodeLeaseParallelism": node_lease_parallelism},
        },
        *stage_documents(),
    ]
    return yaml.safe_dump_all(docs, sort_keys=False)


# kube-controller-manager's controllers: all but the TTL controller, whose annotation
# (node.alpha.kubernetes.io/ttl) only a kubelet reads, and a simulated node has none. It
# patched every node of a growing fleet each time the fleet crossed one of its size
# steps (100, 500, 1,000, 2,000 nodes): 4,000 patches on the way to 10,000 nodes.
KUBE_CONTROLLERS = "*,-ttl-controller"

# kwokctl's host-port flag for each component.
PORT_FLAGS = {
    "etcd": "--etcd-port",
    "kube-controller-manager": "--kube-controller-manager-port",
    "kube-scheduler": "--kube-scheduler-port",
    "kwok-controller": "--controller-port",
}


def create_command(
    toolchain: Toolchain,
    name: str,
    config: Path,
    service_cidr: str,
    prometheus_port: int,
    prometheus_data: Path,
    apiserver_port: int | None = None,
    component_ports: Mapping[str, int] | None = None,
) -> list[str]:
    """``kwokctl create cluster`` for the binary runtime, pointed at the toolchain.

    APF stays on (no ``--disable-qps-limits``); RBAC and admission are on so
    non-admin identities mean something. Prometheus gets a data folder of the
    cluster's own: Debian's build defaults to /var/lib/prometheus/metrics2, which
    every cluster (and every earlier run) would otherwise share.

    ``component_ports`` pins host ports by component name (``etcd``,
    ``kube-controller-manager``, ``kube-scheduler``, ``kwok-controller``):
    kwokctl otherwise counts down from 32765, so two clusters can pick the same
    port, for instance while one of them has its component stopped.

    No ``--wait``: kwokctl returns once kube-apiserver serves, and the caller
    waits for ``/healthz`` itself (kwokctl polls it every 0.5 s with a kubectl
    process each time, which cost the default fleet about half a second).
    """
    argv = [
        str(toolchain.binary("kwokctl")),
        "create",
        "cluster",
        "--name",
        name,
        "--runtime",
        "binary",
        "--config",
        str(config),
        "--etcd-binary",
        str(toolchain.binary("etcd")),
        "--kube-apiserver-binary",
        str(toolchain.binary("kube-apiserver")),
        "--kube-controller-manager-binary",
        str(toolchain.binary("kube-controller-manager")),
        "--kube-scheduler-binary",
        str(toolchain.binary("kube-scheduler")),
        "--kwok-controller-binary",
        str(toolchain.binary("kwok")),
        "--prometheus-binary",
        str(toolchain.binary("prometheus")),
        "--prometheus-port",
        str(prometheus_port),
        "--kube-authorization",
        "--kube-admission",
        "--extra-args",
        f"kube-apiserver=service-cluster-ip-range={service_cidr}",
        "--extra-args",
        f"kube-controller-manager=service-cluster-ip-range={service_cidr}",
        "--extra-args",
        f"kube-controller-manager=controllers={KUBE_CONTROLLERS}",
        "--extra-args",
        f"prometheus=storage.tsdb.path={prometheus_data}",
    ]
    for component, port in sorted((component_ports or {}).items()):
        if component not in PORT_FLAGS:
            raise ValueError(f"no kwokctl port flag for component {component!r}")
        argv += [PORT_FLAGS[component], str(port)]
    if apiserver_port:
        argv += ["--kube-apiserver-port", str(apiserver_port)]
    return argv


def run_kwokctl(
    toolchain: Toolchain,
    workdir: Path,
    args: list[str],
    timeout: float = 600,
    preexec: Callable[[], None] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run kwokctl with ``KWOK_WORKDIR`` set and the toolchain first on PATH.

    ``preexec`` runs in the child before kwokctl starts (to put it, and what it
    starts, in the control plane's cgroup).
    """
    env = toolchain.env()
    env["KWOK_WORKDIR"] = str(workdir)
    argv = (
        args if args and args[0].endswith("kwokctl") else [str(toolchain.binary("kwokctl")), *args]
    )
    try:
        result = subprocess.run(
            argv,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            preexec_fn=preexec,
        )
    except subprocess.TimeoutExpired as err:
        raise KwokctlError(f"`{' '.join(argv[:4])}` did not finish in {timeout:.0f} s") from err
    if result.returncode != 0:
        raise KwokctlError(
            f"`{' '.join(argv[:4])} ...` failed (exit {result.returncode}):\n"
            f"{(result.stderr or result.stdout).strip()[-3000:]}"
        )
    return result


def stop_component(cluster: KwokCluster, component: str) -> bool:
    """Stop one kwokctl component (SIGTERM, then SIGKILL). False if it was not running."""
    return stop_pid_file(cluster.pid_file(component), component)


def hang_component(cluster: KwokCluster, component: str) -> int:
    """Freeze one component with SIGSTOP: it keeps its sockets but answers nothing."""
    return signal_pid_file(cluster.pid_file(component), signal.SIGSTOP, component)


def resume_component(cluster: KwokCluster, component: str) -> int:
    """Let a component frozen by :func:`hang_component` run again (SIGCONT)."""
    return signal_pid_file(cluster.pid_file(component), signal.SIGCONT, component)


def start_stopped_components(
    toolchain: Toolchain,
    cluster: KwokCluster,
    timeout_s: float = 120.0,
    preexec: Callable[[], None] | None = None,
) -> None:
    """Start every component that is not running (``kwokctl start cluster`` skips running ones).

    ``timeout_s`` bounds kwokctl's own wait (its default is 2 minutes); ``preexec``
    as for :func:`run_kwokctl`.
    """
    try:
        with cluster.start_lock():
            run_kwokctl(
                toolchain,
                cluster.workdir,
                ["start", "cluster", "--name", cluster.name, "--timeout", f"{timeout_s:.0f}s"],
                timeout=timeout_s + 30,
                preexec=preexec,
            )
    except KwokctlError as err:
        raise ProcessError(
            f"could not start the stopped components of {cluster.name}: {err}"
        ) from err
