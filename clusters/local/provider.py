"""The local provider (default): a real control plane as processes, KWOK nodes, CoreDNS, Prometheus.

``up`` runs ``kwokctl create cluster --runtime binary`` pointed at the
toolchain (etcd, kube-apiserver, kube-controller-manager, kube-scheduler, the
kwok controller, Prometheus), signs non-admin identities, creates the nodes of
the spec, starts CoreDNS on a loopback port and points Prometheus at it. No
container engine is needed. The operations a fault needs live in the modules
of this package, one concern each, and meet in :class:`LocalProvider`.
"""

import os
import shutil
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from importlib import resources
from pathlib import Path

import yaml
from kubernetes import client

from blackstart.clusters.local import kwokctl
from blackstart.clusters.local.components import LocalComponents
from blackstart.clusters.local.coredns import CorednsConfig
from blackstart.clusters.local.credentials import COREDNS, write_identity_kubeconfigs
from blackstart.clusters.local.fleet_ready import (
    FleetNotReady,
    wait_leases_held,
    wait_nodes_ready,
)
from blackstart.clusters.local.kwok_nodes import create_nodes
from blackstart.clusters.local.liveness import tls_context
from blackstart.clusters.local.nodes import LocalNodes
from blackstart.clusters.net import free_port, http_ok
from blackstart.clusters.processes import ProcessError, is_alive, stop_pid_file, wait_gone
from blackstart.clusters.provider import LEADER_ELECTED, ClusterError
from blackstart.clusters.spec import ClusterSpec, NodeSpec
from blackstart.clusters.state import ClusterState
from blackstart.health import wait_for
from blackstart.kube import api_client

# how long kube-apiserver may take to pass /healthz once it serves (kwokctl's --wait was 3m)
APISERVER_HEALTHY_TIMEOUT_S = 180.0


class LocalProvider(LocalComponents, LocalNodes):
    """Clusters made of local processes; state under ``<cache>/clusters/<name>``."""

    def up(
        self,
        spec: ClusterSpec,
        name: str = "blackstart",
        prometheus_port: int | None = None,
        dns_port: int | None = None,
        timeout: float = 300.0,
    ) -> ClusterState:
        """Create cluster ``name`` from ``spec`` and wait until every node is Ready."""
        started = time.monotonic()
        state_dir = self.state_dir(name)
        kc = self.kwok_cluster(name)
        if (state_dir / "cluster.json").exists() or kc.cluster_dir.exists():
            raise ClusterError(
                f"a cluster named {name!r} already exists ({state_dir}); "
                f"run `blackstart cluster down --name {name}` first or pick another --name"
            )
        state_dir.mkdir(parents=True, exist_ok=True)
        config_path = state_dir / "kwokctl.yaml"
        config_path.write_text(kwokctl.kwokctl_config())
        prometheus_port = prometheus_port or free_port()
        self.progress(
            f"[{name}] starting etcd, kube-apiserver, controller-manager, scheduler, "
            f"kwok and Prometheus (kwokctl, binary runtime)"
        )
        argv = kwokctl.create_command(
            self.toolchain,
            name,
            config_path,
            spec.service_cidr,
            prometheus_port,
            prometheus_data=kc.cluster_dir / "prometheus-data",
            apiserver_port=free_port(),
            component_ports={c: free_port() for c in kwokctl.PORT_FLAGS},
        )
        argv += ["--kubeconfig", str(state_dir / "admin.kubeconfig")]
        # kwokctl starts the control plane inside its cgroup, so its memory counts from the start
        join = self.prepare_control_plane_cgroup(name, spec.control_plane)
        try:
            kwokctl.run_kwokctl(self.toolchain, self.kwok_workdir(), argv, preexec=join)
        except kwokctl.KwokctlError as err:
            self._teardown(name)
            raise ClusterError(f"kwokctl could not create {name}: {err}") from err
        try:
            return self._finish_up(
                spec, name, state_dir, prometheus_port, dns_port, timeout, started
            )
        except BaseException:
            self.progress(f"[{name}] bring-up failed; tearing down what was started")
            self._teardown(name)
            raise

    def _finish_up(
        self,
        spec: ClusterSpec,
        name: str,
        state_dir: Path,
        prometheus_port: int,
        dns_port: int | None,
        timeout: float,
        started: float,
    ) -> ClusterState:
        kc = self.kwok_cluster(name)
        admin = state_dir / "admin.kubeconfig"
        size = spec.control_plane
        kubeconfig = yaml.safe_load(admin.read_text())
        context = str(kubeconfig["current-context"])
        server = next(
            c["cluster"]["server"] for c in kubeconfig["clusters"] if c["name"] == context
        )
        identities = write_identity_kubeconfigs(
            kc.pki_dir, server, context, state_dir / "identities"
        )
        admin_tls = tls_context(kc.pki_dir)
        wait_for(
            lambda: http_ok(f"{server}/healthz", admin_tls)[0],
            APISERVER_HEALTHY_TIMEOUT_S,
            "kube-apiserver healthy (/healthz)",
            interval=0.1,
            error=ClusterError,
        )
        self.progress(f"[{name}] kube-apiserver healthy after {time.monotonic() - started:.1f} s")
        # the identities' RBAC is applied while the supervisor starts; CoreDNS waits for it
        rbac_args = [
            "apply",
            "-f",
            str(resources.files("blackstart.clusters.local").joinpath("rbac.yaml")),
        ]
        rbac = self._kubectl_start(admin, rbac_args)

        kernel_logs = state_dir / "kmsg"
        kernel_logs.mkdir(exist_ok=True)
        # 10,000 empty files took 9 s of CPU on the 2-core test machine's disk: they are made
        # while the API server makes the nodes, and must all be there before up returns
        background = ThreadPoolExecutor(max_workers=1)
        logs_made = background.submit(make_kernel_logs, kernel_logs, spec.nodes())
        background.shutdown(wait=False)

        coredns = CorednsConfig(
            kubeconfig=identities[COREDNS.user],
            dns_port=dns_port or free_port(),
            ready_port=free_port(),
            health_port=free_port(),
            metrics_port=free_port(),
        )
        state = ClusterState(
            name=name,
            provider=self.name,
            state_dir=str(state_dir),
            spec_path=spec.source,
            kubeconfig=str(admin),
            context=context,
            apiserver_url=server,
            identities={user: str(path) for user, path in identities.items()},
            dns_address=coredns.address,
            coredns={
                "dns": coredns.dns_port,
                "ready": coredns.ready_port,
                "health": coredns.health_port,
                "metrics": coredns.metrics_port,
            },
            prometheus_url=f"http://127.0.0.1:{prometheus_port}",
            kwok_workdir=str(self.kwok_workdir()),
            kernel_log_dir=str(kernel_logs),
            nodes=len(spec.nodes()),
            created_at=time.time(),
        )
        state.save()
        self.progress(f"[{name}] control plane sized {size.describe()}")
        self.limit_control_plane(name, size)
        self.start_supervisor(name, wait=False)

        self._kubectl_finish(rbac, rbac_args)
        # CoreDNS first: it gets ready while the nodes are made
        self.progress(f"[{name}] starting CoreDNS on {coredns.address}")
        self.write_corefile(name, coredns)
        self.start_coredns(name)
        self.add_scrape_target(name, "coredns", f"127.0.0.1:{coredns.metrics_port}")
        self._extend_prometheus(name)

        self.progress(f"[{name}] creating {state.nodes} KWOK nodes from {spec.source}")
        # the ApiClient alone: the generated API classes cost 0.7 s to load on first use
        api = api_client(admin)
        creating = time.monotonic()
        create_nodes(
            api, spec.nodes(), progress=lambda n: self.progress(f"[{name}]   {n} nodes created")
        )
        self.progress(
            f"[{name}]   {state.nodes} nodes created in {time.monotonic() - creating:.1f} s"
        )

        deadline = time.monotonic() + timeout
        self._wait_fleet(api, [n.name for n in spec.nodes()], deadline, name)
        logs_made.result(timeout=max(1.0, deadline - time.monotonic()))
        try:
            wait_for(
                lambda: self.coredns_ready(name),
                deadline - time.monotonic(),
                "CoreDNS ready",
                error=ClusterError,
            )
        except ClusterError as err:  # say why: the end of CoreDNS's own log
            raise ClusterError(f"{err}; CoreDNS: {self.log_tail(name, 'coredns')}") from err
        wait_for(
            lambda: http_ok(f"{state.prometheus_url}/-/ready")[0],
            deadline - time.monotonic(),
            "Prometheus ready",
            error=ClusterError,
        )
        self._restart_exited_controllers(name, deadline)
        self.wait_supervisor(name)
        self.progress(f"[{name}] up in {time.monotonic() - started:.1f} s")
        return state

    def _restart_exited_controllers(self, name: str, deadline: float) -> None:
        """Start kube-controller-manager or kube-scheduler again if it exited during bring-up.

        Both exit when kube-apiserver is not healthy within their start-up wait, which a
        slow machine (or a small control-plane cgroup) can cause; a node's kubelet would
        restart them, so bring-up does.
        """
        for component in LEADER_ELECTED:
            if self.component_state(name, component) == "stopped":
                self.progress(f"[{name}] {component} exited during bring-up; starting it again")
                self.start_component(name, component)
                wait_for(
                    partial(self._running, name, component),
                    max(5.0, deadline - time.monotonic()),
                    f"{component} running",
                    error=ClusterError,
                )

    def _running(self, name: str, component: str) -> bool:
        return self.component_state(name, component) == "running"

    def _wait_fleet(
        self, api: client.ApiClient, names: list[str], deadline: float, name: str
    ) -> None:
        """Every node held (and so heartbeating) by the kwok controller, then every node Ready."""
        want = len(names)
        try:
            wait_leases_held(
                api,
                names,
                deadline,
                progress=lambda n: self.progress(f"[{name}]   {n}/{want} node leases held"),
            )
            wait_nodes_ready(
                api,
                names,
                deadline,
                progress=lambda n: self.progress(f"[{name}]   {n}/{want} nodes Ready"),
            )
        except FleetNotReady as err:
            raise ClusterError(str(err)) from err

    def down(self, name: str) -> list[str]:
        """Stop every process of cluster ``name`` and delete its state. Returns what was stopped."""
        state_dir = self.state_dir(name)
        kc = self.kwok_cluster(name)
        if not state_dir.exists() and not kc.cluster_dir.exists():
            raise ClusterError(f"no local cluster named {name!r}")
        return self._teardown(name)

    def _teardown(self, name: str) -> list[str]:
        stopped: list[str] = []
        state_dir = self.state_dir(name)
        kc = self.kwok_cluster(name)
        for pid_file in sorted((state_dir / "pids").glob("*.pid")):
            if stop_pid_file(pid_file, pid_file.stem):
                stopped.append(pid_file.stem)
        # stop kwokctl's processes ourselves and wait for each to exit: `kwokctl delete`
        # only signals them and returns while they still run
        for component in reversed(kwokctl.COMPONENTS):
            try:
                if stop_pid_file(kc.pid_file(component), component):
                    stopped.append(component)
            except ProcessError as err:
                self.progress(f"[{name}] {err}")
        if kc.cluster_dir.exists():
            try:
                kwokctl.run_kwokctl(
                    self.toolchain,
                    self.kwok_workdir(),
                    ["delete", "cluster", "--name", name],
                    timeout=120,
                )
            except (kwokctl.KwokctlError, ClusterError) as err:
                self.progress(f"[{name}] kwokctl delete failed ({err}); killing what is left")
        # whatever still runs from this cluster's folders (a process kwokctl lost track of)
        for pid in processes_under((state_dir, kc.cluster_dir)):
            try:
                os.kill(pid, signal.SIGCONT)
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                continue
            wait_gone(pid, 5.0)
            stopped.append(f"pid {pid}")
        self.remove_control_plane_cgroup(name)
        _remove_tree(kc.cluster_dir)
        _remove_tree(state_dir)
        return stopped


def make_kernel_logs(folder: Path, nodes: list[NodeSpec]) -> int:
    """An empty kernel log (``<node>.log``) in ``folder`` for every GPU and standby node."""
    made = 0
    for node in nodes:
        if node.role in ("gpu", "standby"):
            (folder / f"{node.name}.log").touch()
            made += 1
    return made


def names_folder(argv: list[str], folder: str) -> bool:
    """True when a command line names ``folder`` or a path inside it.

    ``.../clusters/e2e`` does not name ``.../clusters/e2e-catalogue``: another
    cluster whose name starts with this one's is not this cluster.
    """
    inside = folder.rstrip("/") + "/"
    return any(arg == folder or inside in arg or arg.endswith("=" + folder) for arg in argv)


def processes_under(folders: tuple[Path, ...]) -> list[int]:
    """Pids of live processes whose command line names one of ``folders``."""
    needles = [str(f) for f in folders]
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            raw = (entry / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        argv = [arg for arg in raw.split("\0") if arg]
        if any(names_folder(argv, n) for n in needles) and is_alive(int(entry.name)):
            found.append(int(entry.name))
    return found


def _remove_tree(path: Path) -> None:

    shutil.rmtree(path, ignore_errors=True)
