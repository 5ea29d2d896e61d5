"""The cluster's CoreDNS: a process on a loopback port, with its Corefile."""

import os
from pathlib import Path

from blackstart.clusters.local.base import LocalBase
from blackstart.clusters.local.coredns import CorednsConfig, coredns_argv, render_corefile
from blackstart.clusters.local.credentials import COREDNS
from blackstart.clusters.net import http_ok
from blackstart.clusters.processes import ProcessError, is_alive, read_pid, start_detached


class LocalDns(LocalBase):
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
        return http_ok(f"http://127.0.0.1:{port}/ready")[0]

    def restart_coredns(self, name: str) -> None:
        """Stop CoreDNS and start it again, as a roll-out would (its cache is lost)."""
        from blackstart.clusters.processes import stop_pid_file

        stop_pid_file(self.pid_file(name, "coredns"), "coredns")
        self.start_coredns(name)
