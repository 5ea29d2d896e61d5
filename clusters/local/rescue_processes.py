"""The rescue controller and node agent of a local cluster, run as processes.

The cluster's supervisor restarts them when they exit (the controller does when it
loses its Lease in an API-server outage); :meth:`LocalRescue.stop_rescue` holds them
down first.
"""

import time

from blackstart.clusters.local.base import RESCUE_COMPONENTS
from blackstart.clusters.local.control_plane import LocalControlPlane
from blackstart.clusters.local.rescue_launch import launch, recorded_argv
from blackstart.clusters.net import free_port, metrics_text
from blackstart.clusters.processes import is_alive, read_pid, stop_pid_file
from blackstart.clusters.provider import ClusterError
from blackstart.health import wait_for
from blackstart.kube import api_client


class LocalRescue(LocalControlPlane):
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
            python, "-P", "-m", "blackstart.cli", "rescue", "controller",
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
                python, "-P", "-m", "blackstart.cli", "rescue", "agent", "--cluster", name,
                "--metrics-port", str(ports["rescue-agent"]), *extra_agent_args,
            ]  # fmt: skip
        info["metrics_ports"] = ports
        info["argv"] = argv
        state.extra["rescue"] = info
        state.save()
        for component in argv:
            self.release(name, component)  # the supervisor restarts it when it exits
            self._start_rescue_component(name, component)
            self.add_scrape_target(name, component, f"127.0.0.1:{ports[component]}")
        deadline = time.monotonic() + timeout

        def ready() -> bool:
            if not is_alive(read_pid(self.pid_file(name, "rescue-controller"))):
                log = self.log_file(name, "rescue-controller")
                raise ClusterError(f"the rescue controller exited; see {log}")
            text = metrics_text(ports["rescue-controller"])
            return "blackstart_rescue_controller_ready 1.0" in text

        wait_for(
            ready, deadline - time.monotonic(), "the rescue controller ready", error=ClusterError
        )
        return info

    def _start_rescue_component(self, name: str, component: str) -> int:
        """Start one rescue process from the command line ``start_rescue`` recorded."""
        pid_file = self.pid_file(name, component)
        if is_alive(read_pid(pid_file)):
            return read_pid(pid_file) or 0
        argv = recorded_argv(self.state_dir(name), component)
        if not argv:
            raise ClusterError(f"{component} was never started for {name}; use start_rescue")
        return launch(self.state_dir(name), component, argv).pid

    def stop_rescue(self, name: str) -> list[str]:
        """Stop the rescue controller and agent of ``name``; returns those that were running."""
        stopped = []
        for component in RESCUE_COMPONENTS:
            self.hold(name, component)  # stopped on purpose: the supervisor must not restart it
            pid_file = self.pid_file(name, component)
            if stop_pid_file(pid_file, component):
                stopped.append(component)
            pid_file.unlink(missing_ok=True)
            self.remove_scrape_target(name, component)
        state = self.state(name)
        if state.extra.pop("rescue", None) is not None:
            state.save()
        return stopped
