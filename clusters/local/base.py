"""Where a local cluster keeps its files, and its saved state."""

import subprocess
from pathlib import Path

from blackstart.clusters.local import kwokctl
from blackstart.clusters.provider import ClusterError, Progress
from blackstart.clusters.state import ClusterState, load_state, state_dir_for
from blackstart.clusters.toolchain import Toolchain

# Components that blackstart itself runs as processes, beside kwokctl's.
RESCUE_COMPONENTS = ("rescue-controller", "rescue-agent")
OWN_COMPONENTS = ("coredns", *RESCUE_COMPONENTS)


class LocalBase:
    """Paths and state of clusters under ``<cache>/clusters/<name>``."""

    name = "local"

    def __init__(
        self, cache: Path, toolchain: Toolchain | None = None, progress: Progress = print
    ) -> None:
        self.cache = cache
        self._toolchain = toolchain
        self.progress = progress

    @property
    def toolchain(self) -> Toolchain:
        if self._toolchain is None:
            raise ClusterError("no toolchain: run `blackstart toolchain install` first")
        return self._toolchain

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

    def _component_pid_file(self, name: str, component: str) -> Path:
        if component in OWN_COMPONENTS:
            return self.pid_file(name, component)
        return self.kwok_cluster(name).pid_file(component)

    def _kubectl(self, kubeconfig: Path, args: list[str]) -> str:
        return self._kubectl_finish(self._kubectl_start(kubeconfig, args), args)

    def _kubectl_start(self, kubeconfig: Path, args: list[str]) -> subprocess.Popen[str]:
        """Start kubectl with ``args``; :meth:`_kubectl_finish` waits for it."""
        argv = [str(self.toolchain.binary("kubectl")), "--kubeconfig", str(kubeconfig), *args]
        return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def _kubectl_finish(self, proc: subprocess.Popen[str], args: list[str]) -> str:
        """Wait for a kubectl from :meth:`_kubectl_start`; its output, or ClusterError."""
        try:
            out, err = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired as exc:
            proc.kill()
            proc.communicate()
            raise ClusterError(f"kubectl {' '.join(args)} did not finish in 120 s") from exc
        if proc.returncode != 0:
            raise ClusterError(f"kubectl {' '.join(args)} failed: {err.strip()}")
        return out

    def kubeconfig(self, name: str) -> Path:
        """The admin kubeconfig of cluster ``name``."""
        return Path(self.state(name).kubeconfig)
