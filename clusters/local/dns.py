"""The cluster's CoreDNS: a process on a loopback port, with its Corefile."""

import os
import subprocess
from pathlib import Path

from blackstart.clusters.local.base import LocalBase
from blackstart.clusters.local.coredns import CorednsConfig, coredns_argv, render_corefile
from blackstart.clusters.local.credentials import COREDNS
from blackstart.clusters.net import http_ok
from blackstart.clusters.processes import ProcessError, is_alive, read_pid, start_detached

DNS_SURVIVAL = "dns_survival"  # state.extra key: the data-plane DNS mitigation's settings
DNS_SNAPSHOT = "dns-snapshot"  # the snapshot writer's process name (pid and log files)


class LocalDns(LocalBase):
    def corefile(self, name: str) -> Path:
        return self.state_dir(name) / "Corefile"

    def coredns_config(self, name: str) -> CorednsConfig:
        """The cluster's normal CoreDNS configuration (with the DNS mitigation when it is on)."""
        state = self.state(name)
        ports = state.coredns
        raw = state.extra.get(DNS_SURVIVAL)
        survival: dict[str, object] = raw if isinstance(raw, dict) else {}
        on = bool(survival)
        return CorednsConfig(
            kubeconfig=Path(state.identity_kubeconfig(COREDNS.user)),
            dns_port=ports["dns"],
            ready_port=ports["ready"],
            health_port=ports["health"],
            metrics_port=ports["metrics"],
            serve_stale_s=int(str(survival.get("serve_stale_s", 0))) if on else 0,
            snapshot=Path(str(survival["snapshot"])) if on and survival.get("snapshot") else None,
        )

    def snapshot_file(self, name: str) -> Path:
        return self.state_dir(name) / "dns-snapshot.hosts"

    def enable_dns_survival(
        self, name: str, serve_stale_s: int = 3600, snapshot: bool = True, interval_s: float = 10.0
    ) -> dict[str, object]:
        """Turn the data-plane DNS mitigation on: serve stale answers, and a records snapshot.

        With ``snapshot`` a first snapshot is taken now (the API server must be
        up) and a writer process keeps it fresh every ``interval_s``. Writes the
        Corefile (a running CoreDNS reloads it within seconds). Returns what
        ``state.extra["dns_survival"]`` holds.
        """
        import sys

        info: dict[str, object] = {"serve_stale_s": int(serve_stale_s), "snapshot": None}
        state = self.state(name)
        kubeconfig = state.identity_kubeconfig(COREDNS.user)
        if snapshot:
            path = self.snapshot_file(name)
            argv = [sys.executable, "-P", "-m", "blackstart.clusters.local.dns_snapshot",
                    "--kubeconfig", kubeconfig, "--out", str(path)]  # fmt: skip
            first = subprocess.run(
                [*argv, "--once"], capture_output=True, text=True, timeout=60, check=False
            )
            if first.returncode != 0 or not path.exists():
                raise ProcessError(
                    f"could not take the first DNS snapshot (is the API server up?): "
                    f"{first.stderr.strip()[-300:]}"
                )
            pid_file = self.pid_file(name, DNS_SNAPSHOT)
            if not is_alive(read_pid(pid_file)):
                start_detached([*argv, "--interval", str(interval_s)], pid_file,
                               self.log_file(name, DNS_SNAPSHOT))  # fmt: skip
            info["snapshot"] = str(path)
            info["interval_s"] = interval_s
        state = self.state(name)
        state.extra[DNS_SURVIVAL] = info
        state.save()
        self.write_corefile(name, self.coredns_config(name))
        return info

    def disable_dns_survival(self, name: str) -> bool:
        """Turn the mitigation off: plain Corefile, no snapshot writer. False when it was off."""
        from blackstart.clusters.processes import stop_pid_file

        state = self.state(name)
        was_on = state.extra.pop(DNS_SURVIVAL, None) is not None
        state.save()
        stop_pid_file(self.pid_file(name, DNS_SNAPSHOT), DNS_SNAPSHOT)
        self.pid_file(name, DNS_SNAPSHOT).unlink(missing_ok=True)
        self.write_corefile(name, self.coredns_config(name))
        self.snapshot_file(name).unlink(missing_ok=True)
        return was_on

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
