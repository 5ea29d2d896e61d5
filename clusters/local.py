"""The local provider (default): a real control plane as processes, KWOK nodes, CoreDNS, Prometheus.

``up`` runs ``kwokctl create cluster --runtime binary`` pointed at the
toolchain (etcd, kube-apiserver, kube-controller-manager, kube-scheduler, the
kwok controller, Prometheus), signs non-admin identities, creates the nodes of
the spec, starts CoreDNS on a loopback port and points Prometheus at it. No
container engine is needed. Every operation a fault needs (stop, hang, resume,
restart one component; reboot one node) is a method named for what it does.
"""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Callable
from importlib import resources
from pathlib import Path

import yaml
from kubernetes import client

from blackstart.clusters import kwokctl
from blackstart.clusters.coredns import CorednsConfig, coredns_argv, render_corefile
from blackstart.clusters.credentials import COREDNS, write_identity_kubeconfigs
from blackstart.clusters.kwok_nodes import create_nodes, node_is_ready
from blackstart.clusters.provider import ClusterError, ComponentStatus
from blackstart.clusters.processes import (
    ProcessError,
    is_alive,
    is_stopped,
    read_pid,
    signal_pid_file,
    start_detached,
    stop_pid_file,
    wait_gone,
)
from blackstart.clusters.spec import ClusterSpec
from blackstart.clusters.state import ClusterState, load_state, state_dir_for
from blackstart.clusters.toolchain import Toolchain
from blackstart.kube import api_client

Progress = Callable[[str], None]

# Components that blackstart itself runs as processes, beside kwokctl's.
RESCUE_COMPONENTS = ("rescue-controller", "rescue-agent")
OWN_COMPONENTS = ("coredns", *RESCUE_COMPONENTS)
SCRAPE_INTERVAL = "5s"


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that is free now (also free for UDP, checked)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind((host, 0))
            port = int(tcp.getsockname()[1])
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                udp.bind((host, port))
        except OSError:
            continue
        return port
    raise ClusterError(f"no free port found on {host}")


def _http_ok(
    url: str, context: ssl.SSLContext | None = None, timeout: float = 2.0
) -> tuple[bool, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=context) as resp:
            body = resp.read(200).decode(errors="replace").strip()
            return 200 <= resp.status < 300, body
    except Exception as err:  # any failure is "not healthy", with the reason
        return False, str(err)[:200]


class LocalProvider:
    """Clusters made of local processes; state under ``<cache>/clusters/<name>``."""

    name = "local"

    def __init__(self, cache: Path, toolchain: Toolchain | None = None, progress: Progress = print):
        self.cache = cache
        self._toolchain = toolchain
        self.progress = progress

    @property
    def toolchain(self) -> Toolchain:
        if self._toolchain is None:
            raise ClusterError("no toolchain: run `blackstart toolchain install` first")
        return self._toolchain

    # ----------------------------------------------------------------- paths
    def kwok_workdir(self) -> Path:
        return self.cache / "kwok"

    def kwok_cluster(self, name: str) -> kwokctl.KwokCluster:
        return kwokctl.KwokCluster(name=name, workdir=self.kwok_workdir())

    def state_dir(self, name: str) -> Path:
        return state_dir_for(name, self.cache)

    def pid_file(self, name: str, component: str) -> Path:
        return self.state_dir(name) / "pids" / f"{component}.pid"

    def log_file(self, name: str, component: str) -> Path:
        return self.state_dir(name) / "logs" / f"{component}.log"

    def targets_dir(self, name: str) -> Path:
        return self.state_dir(name) / "prometheus-targets"

    def state(self, name: str) -> ClusterState:
        return load_state(name, self.cache)

    # -------------------------------------------------------------------- up
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
        try:
            kwokctl.run_kwokctl(self.toolchain, self.kwok_workdir(), argv)
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
        kubeconfig = yaml.safe_load(admin.read_text())
        context = str(kubeconfig["current-context"])
        server = next(
            c["cluster"]["server"] for c in kubeconfig["clusters"] if c["name"] == context
        )
        identities = write_identity_kubeconfigs(
            kc.pki_dir, server, context, state_dir / "identities"
        )
        self._kubectl(
            admin,
            [
                "apply",
                "-f",
                str(resources.files("blackstart.clusters").joinpath("local-rbac.yaml")),
            ],
        )

        kernel_logs = state_dir / "kmsg"
        kernel_logs.mkdir(exist_ok=True)
        for node in spec.nodes():
            if node.role in ("gpu", "standby"):
                (kernel_logs / f"{node.name}.log").touch()

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

        self.progress(f"[{name}] creating {state.nodes} KWOK nodes from {spec.source}")
        core = client.CoreV1Api(api_client(admin))
        create_nodes(
            core, spec.nodes(), progress=lambda n: self.progress(f"[{name}]   {n} nodes created")
        )

        self.progress(f"[{name}] starting CoreDNS on {coredns.address}")
        self.write_corefile(name, coredns)
        self.start_coredns(name)
        self.add_scrape_target(name, "coredns", f"127.0.0.1:{coredns.metrics_port}")
        self._extend_prometheus(name)

        deadline = time.monotonic() + timeout
        self._wait_nodes_ready(core, state.nodes, deadline, name)
        self._wait(lambda: self.coredns_ready(name), deadline, "CoreDNS ready")
        self._wait(
            lambda: _http_ok(f"{state.prometheus_url}/-/ready")[0], deadline, "Prometheus ready"
        )
        self.progress(f"[{name}] up in {time.monotonic() - started:.1f} s")
        return state

    def _wait(self, check: Callable[[], bool], deadline: float, what: str) -> None:
        while time.monotonic() < deadline:
            if check():
                return
            time.sleep(0.25)
        raise ClusterError(f"timed out waiting for {what}")

    def _wait_nodes_ready(
        self, core: client.CoreV1Api, want: int, deadline: float, name: str
    ) -> None:
        last = -1
        while time.monotonic() < deadline:
            ready = sum(1 for n in core.list_node().items if node_is_ready(n))
            if ready != last:
                self.progress(f"[{name}]   {ready}/{want} nodes Ready")
                last = ready
            if ready >= want:
                return
            time.sleep(1.0)
        raise ClusterError(f"only {last} of {want} nodes became Ready in time")

    def _kubectl(self, kubeconfig: Path, args: list[str]) -> str:
        argv = [str(self.toolchain.binary("kubectl")), "--kubeconfig", str(kubeconfig), *args]
        result = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
        if result.returncode != 0:
            raise ClusterError(f"kubectl {' '.join(args)} failed: {result.stderr.strip()}")
        return result.stdout

    # ------------------------------------------------------------ prometheus
    def add_scrape_target(
        self, name: str, job: str, address: str, labels: dict[str, str] | None = None
    ) -> Path:
        """Have Prometheus scrape ``address`` as ``job`` (file-based discovery, no reload)."""
        folder = self.targets_dir(name)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{job}.yaml"
        entry = [{"targets": [address], "labels": {"job": job, **(labels or {})}}]
        tmp = path.with_suffix(".tmp")
        tmp.write_text(yaml.safe_dump(entry))
        os.replace(tmp, path)
        return path

    def remove_scrape_target(self, name: str, job: str) -> None:
        (self.targets_dir(name) / f"{job}.yaml").unlink(missing_ok=True)

    def _extend_prometheus(self, name: str) -> None:
        """Add a file-discovery job for blackstart's own processes; scrape every 5 s."""
        kc = self.kwok_cluster(name)
        config = yaml.safe_load(kc.prometheus_config.read_text())
        config.setdefault("global", {}).update(
            scrape_interval=SCRAPE_INTERVAL,
            evaluation_interval=SCRAPE_INTERVAL,
            scrape_timeout="4s",
        )
        jobs = config.setdefault("scrape_configs", [])
        jobs[:] = [j for j in jobs if j.get("job_name") != "blackstart"]
        jobs.append(
            {
                "job_name": "blackstart",
                "file_sd_configs": [
                    {"files": [str(self.targets_dir(name) / "*.yaml")], "refresh_interval": "5s"}
                ],
            }
        )
        kc.prometheus_config.write_text(yaml.safe_dump(config, sort_keys=False))
        pid = kc.pid("prometheus")
        if not is_alive(pid):
            raise ClusterError("Prometheus is not running; see " + str(kc.log_file("prometheus")))
        assert pid is not None
        os.kill(pid, signal.SIGHUP)

    # --------------------------------------------------------------- coredns
    def corefile(self, name: str) -> Path:
        return self.state_dir(name) / "Corefile"

    def coredns_config(self, name: str) -> CorednsConfig:
        state = self.state(name)
        ports = state.coredns
        return CorednsConfig(
            kubeconfig=Path(state.identity_kubeconfig(COREDNS.user)),
            dns_port=ports["dns"],
            ready_port=ports["ready"],
            health_port=ports["health"],
            metrics_port=ports["metrics"],
        )

    def write_corefile(self, name: str, cfg: CorednsConfig) -> Path:
        """Write the Corefile; a running CoreDNS picks it up within seconds (reload plugin)."""
        path = self.corefile(name)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(render_corefile(cfg))
        os.replace(tmp, path)
        return path

    def start_coredns(self, name: str) -> int:
        pid_file = self.pid_file(name, "coredns")
        if is_alive(read_pid(pid_file)):
            raise ProcessError("CoreDNS is already running")
        argv = coredns_argv(self.toolchain.binary("coredns"), self.corefile(name))
        return start_detached(argv, pid_file, self.log_file(name, "coredns"))

    def coredns_ready(self, name: str) -> bool:
        port = self.state(name).coredns["ready"]
        return _http_ok(f"http://127.0.0.1:{port}/ready")[0]

    # ------------------------------------------------- component operations
    def _component_pid_file(self, name: str, component: str) -> Path:
        if component in OWN_COMPONENTS:
            return self.pid_file(name, component)
        return self.kwok_cluster(name).pid_file(component)

    def stop_component(self, name: str, component: str, grace: float = 5.0) -> bool:
        """Stop one component (kube-apiserver, etcd, coredns, kwok-controller, ...).

        SIGTERM, then SIGKILL after ``grace`` seconds. The pid file goes too: a killed
        process whose parent (kwokctl) is gone can linger as a zombie that kwokctl
        would take for running, and then never start it again.
        """
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

    def start_component(self, name: str, component: str) -> None:
        """Start a stopped component again (no-op when it runs)."""
        if component in RESCUE_COMPONENTS:
            self._start_rescue_component(name, component)
            return
        if component in OWN_COMPONENTS:
            if not is_alive(read_pid(self.pid_file(name, component))):
                self.start_coredns(name)
            return
        kwokctl.start_stopped_components(self.toolchain, self.kwok_cluster(name))

    def restart_component(self, name: str, component: str) -> None:
        """Stop then start one component."""
        self.stop_component(name, component)
        self.start_component(name, component)

    # --------------------------------------------------------- node reboots
    def mark_node_not_ready(self, name: str, node: str) -> None:
        """Put ``node`` through KWOK's node-not-ready stage: it reports NotReady."""
        core = client.CoreV1Api(api_client(self.state(name).kubeconfig))
        core.patch_node(node, {"metadata": {"labels": {kwokctl.NODE_NOT_READY_LABEL: "true"}}})

    def mark_node_ready(self, name: str, node: str, new_boot_id: bool = True) -> None:
        """End the node-not-ready stage; ``new_boot_id`` makes it look rebooted."""
        core = client.CoreV1Api(api_client(self.state(name).kubeconfig))
        core.patch_node(node, {"metadata": {"labels": {kwokctl.NODE_NOT_READY_LABEL: None}}})
        if not new_boot_id:
            return
        # KWOK rewrites the node's status when the stage ends, which can undo a
        # boot id written too early: write it once the node is Ready and check it stuck.
        deadline = time.monotonic() + 60.0
        while not node_is_ready(core.read_node(node)) and time.monotonic() < deadline:
            time.sleep(0.25)
        boot_id = str(uuid.uuid4())
        while time.monotonic() < deadline:
            core.patch_node_status(node, {"status": {"nodeInfo": {"bootID": boot_id}}})
            time.sleep(0.5)
            status = core.read_node(node).status
            info = status.node_info if status else None
            if info is not None and info.boot_id == boot_id:
                return
        raise ClusterError(f"node {node} did not keep its new boot id (KWOK kept rewriting it)")

    def kernel_log(self, name: str, node: str) -> Path:
        """The file that stands for ``node``'s kernel log (``/dev/kmsg`` on a real node)."""
        path = Path(self.state(name).kernel_log_dir) / f"{node}.log"
        if not path.exists():
            raise ClusterError(f"node {node} has no kernel log in cluster {name} ({path})")
        return path

    # ---------------------------------------------------------- rescue
    def start_rescue(
        self,
        name: str,
        *,
        dry_run: bool = False,
        decision_api: bool = False,
        extra_controller_args: tuple[str, ...] = (),
        extra_agent_args: tuple[str, ...] = (),
        agent: bool = True,
        reboot_driver: str = "local",
        timeout: float = 60.0,
    ) -> dict[str, object]:
        """Start the rescue controller (and the Xid agent) for cluster ``name``.

        Installs the rescue CRDs (admin), then runs ``blackstart rescue controller`` with
        the ``blackstart:rescue-controller`` identity and ``blackstart rescue agent
        --cluster name`` (every GPU and standby node's kernel log) as background
        processes with pid and log files, scraped by the cluster's Prometheus (jobs
        ``rescue-controller`` and ``rescue-agent``). With ``decision_api`` the controller
        serves the decision API on a loopback port with a fresh token and acts only on
        its orders. Waits until the controller is ready and returns what
        ``state.extra["rescue"]`` now holds: ``metrics_ports`` (component -> port),
        ``journal``, ``decision_api_url`` and ``token_file`` (with ``decision_api``),
        ``argv`` (component -> command line).
        """
        import secrets
        import sys

        from blackstart.rescue.install import apply_documents, deploy_documents, wait_established

        if any(is_alive(read_pid(self.pid_file(name, c))) for c in RESCUE_COMPONENTS):
            raise ClusterError(
                f"the rescue components of {name} already run; stop_rescue({name!r}) first"
            )
        state = self.state(name)
        admin = api_client(state.kubeconfig)
        crds = deploy_documents(["crds.yaml"])
        apply_documents(admin, crds, progress=lambda _: None)
        wait_established(admin, [d["metadata"]["name"] for d in crds])
        folder = self.state_dir(name) / "rescue"
        folder.mkdir(parents=True, exist_ok=True)
        python = sys.executable
        ports = {"rescue-controller": free_port()}
        journal = folder / "plans.jsonl"
        controller = [
            python, "-m", "blackstart.cli", "rescue", "controller",
            "--kubeconfig", state.identity_kubeconfig("blackstart:rescue-controller"),
            "--metrics-port", str(ports["rescue-controller"]),
            "--journal", str(journal),
            "--reboot-driver", reboot_driver,
        ]  # fmt: skip
        info: dict[str, object] = {"journal": str(journal)}
        if dry_run:
            controller.append("--dry-run")
        if decision_api:
            token_file = folder / "decision-api.token"
            token_file.write_text(secrets.token_urlsafe(32))
            token_file.chmod(0o600)
            api_port = free_port()
            controller += ["--decision-api", f"127.0.0.1:{api_port}"]
            controller += ["--token-file", str(token_file)]
            info["decision_api_url"] = f"http://127.0.0.1:{api_port}"
            info["token_file"] = str(token_file)
        controller += list(extra_controller_args)
        argv = {"rescue-controller": controller}
        if agent:
            ports["rescue-agent"] = free_port()
            argv["rescue-agent"] = [
                python, "-m", "blackstart.cli", "rescue", "agent", "--cluster", name,
                "--metrics-port", str(ports["rescue-agent"]), *extra_agent_args,
            ]  # fmt: skip
        info["metrics_ports"] = ports
        info["argv"] = argv
        state.extra["rescue"] = info
        state.save()
        for component in argv:
            self._start_rescue_component(name, component)
            self.add_scrape_target(name, component, f"127.0.0.1:{ports[component]}")
        deadline = time.monotonic() + timeout

        def ready() -> bool:
            if not is_alive(read_pid(self.pid_file(name, "rescue-controller"))):
                log = self.log_file(name, "rescue-controller")
                raise ClusterError(f"the rescue controller exited; see {log}")
            text = _metrics_text(ports["rescue-controller"])
            return "blackstart_rescue_controller_ready 1.0" in text

        self._wait(ready, deadline, "the rescue controller ready")
        return info

    def _start_rescue_component(self, name: str, component: str) -> int:
        """Start one rescue process from the command line ``start_rescue`` recorded."""
        pid_file = self.pid_file(name, component)
        if is_alive(read_pid(pid_file)):
            return read_pid(pid_file) or 0
        rescue = self.state(name).extra.get("rescue")
        argv = (rescue.get("argv") or {}).get(component) if isinstance(rescue, dict) else None
        if not argv:
            raise ClusterError(f"{component} was never started for {name}; use start_rescue")
        env = {**os.environ, "BLACKSTART_CACHE_DIR": str(self.cache), "PYTHONUNBUFFERED": "1"}
        return start_detached(list(argv), pid_file, self.log_file(name, component), env=env)

    def stop_rescue(self, name: str) -> list[str]:
        """Stop the rescue controller and agent of ``name``; returns those that were running."""
        stopped = []
        for component in RESCUE_COMPONENTS:
            pid_file = self.pid_file(name, component)
            if stop_pid_file(pid_file, component):
                stopped.append(component)
            pid_file.unlink(missing_ok=True)
            self.remove_scrape_target(name, component)
        state = self.state(name)
        if state.extra.pop("rescue", None) is not None:
            state.save()
        return stopped

    # ---------------------------------------------------------------- status
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
            ok, detail = _http_ok(url, context)
            result.append(ComponentStatus(component, pid, url, "running", ok, detail))
        return result

    # ------------------------------------------------------------------ down
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
        _remove_tree(kc.cluster_dir)
        _remove_tree(state_dir)
        return stopped


def _metrics_text(port: int) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2.0) as resp:
            return str(resp.read().decode(errors="replace"))
    except OSError:
        return ""


def processes_under(folders: tuple[Path, ...]) -> list[int]:
    """Pids of live processes whose command line names one of ``folders``."""
    needles = [str(f) for f in folders]
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if any(n in cmdline for n in needles) and is_alive(int(entry.name)):
            found.append(int(entry.name))
    return found


def _remove_tree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)
