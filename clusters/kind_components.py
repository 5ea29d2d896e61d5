"""Control-plane components inside a kind node: find, stop, start, freeze and resume them.

kube-apiserver, etcd, kube-controller-manager and kube-scheduler are static
pods of the control-plane node's kubelet. Stopping one parks its manifest
outside kubelet's folder (kubelet stops the pod); starting moves it back
(kubelet starts a new one). Freezing sends SIGSTOP to the container's main
process inside the node, so its port stays open and nothing answers;
resuming sends SIGCONT. Containers are read with ``crictl`` in the node.

The functions here build ``docker exec`` command lines and read ``crictl``
output; :class:`blackstart.clusters.kind_provider.KindProvider` runs them.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from blackstart.clusters.provider import CONTROL_PLANE_COMPONENTS, ClusterError

MANIFESTS = "/etc/kubernetes/manifests"
PARKED_SUFFIX = ".yaml.blackstart-stopped"
COREDNS = "coredns"


def check_component(component: str) -> None:
    """Raise :class:`ClusterError` naming the valid components when ``component`` is not one."""
    if component not in (*CONTROL_PLANE_COMPONENTS, COREDNS):
        known = ", ".join((*CONTROL_PLANE_COMPONENTS, COREDNS))
        raise ClusterError(f"unknown component {component!r}: use one of {known}")


def manifest_path(component: str) -> str:
    """Where kubelet reads the component's static-pod manifest."""
    return f"{MANIFESTS}/{component}.yaml"


def parked_path(component: str) -> str:
    """Where a stopped component's manifest waits, outside kubelet's folder."""
    return f"/etc/kubernetes/{component}{PARKED_SUFFIX}"


def park_script(component: str) -> str:
    """Shell that parks the manifest; prints ``parked`` or ``already``, fails when neither is."""
    live, parked = manifest_path(component), parked_path(component)
    return (
        f"if [ -f {live} ]; then mv {live} {parked} && echo parked; "
        f"elif [ -f {parked} ]; then echo already; "
        f"else echo 'neither {live} nor {parked} exists' >&2; exit 1; fi"
    )


def unpark_script(component: str) -> str:
    """Shell that moves a parked manifest back; prints ``restored`` or ``running``."""
    live, parked = manifest_path(component), parked_path(component)
    return (
        f"if [ -f {parked} ]; then mv {parked} {live} && echo restored; "
        f"elif [ -f {live} ]; then echo running; "
        f"else echo 'neither {live} nor {parked} exists' >&2; exit 1; fi"
    )


def node_exec(docker: str, node: str, *argv: str) -> list[str]:
    """``docker exec <node> argv...``."""
    return [docker, "exec", node, *argv]


@dataclass(frozen=True)
class Container:
    """One CRI container in a node, as ``crictl ps -a -o json`` lists it."""

    id: str
    name: str
    state: str  # CONTAINER_RUNNING, CONTAINER_EXITED, CONTAINER_CREATED, CONTAINER_UNKNOWN
    created_at: int
    attempt: int
    pod: str

    @property
    def running(self) -> bool:
        return self.state == "CONTAINER_RUNNING"


def parse_containers(text: str) -> list[Container]:
    """The containers in ``crictl ps -a -o json`` output."""
    try:
        document: dict[str, Any] = json.loads(text or "{}")
    except json.JSONDecodeError as err:
        raise ClusterError(f"crictl printed something that is not JSON: {err}") from err
    containers = []
    for entry in document.get("containers") or []:
        metadata = entry.get("metadata") or {}
        labels = entry.get("labels") or {}
        containers.append(
            Container(
                id=str(entry.get("id", "")),
                name=str(metadata.get("name", "")),
                state=str(entry.get("state", "")),
                created_at=int(entry.get("createdAt") or 0),
                attempt=int(metadata.get("attempt") or 0),
                pod=str(labels.get("io.kubernetes.pod.name", "")),
            )
        )
    return containers


def newest(containers: list[Container], name: str) -> Container | None:
    """The most recently created container called ``name`` (a restarted one replaces the old)."""
    matching = [c for c in containers if c.name == name]
    return max(matching, key=lambda c: c.created_at) if matching else None


def running_named(containers: list[Container], name: str) -> list[Container]:
    return [c for c in containers if c.name == name and c.running]


def parse_pid(text: str) -> int:
    """The main process id from ``crictl inspect`` JSON output (in the node's pid namespace)."""
    try:
        pid = int(json.loads(text)["info"]["pid"])
    except (ValueError, KeyError, TypeError) as err:
        raise ClusterError(f"crictl inspect gave no pid: {err}") from err
    if pid <= 0:
        raise ClusterError("crictl inspect gave no pid: the container does not run")
    return pid


def process_state(status_text: str) -> str:
    """The one-letter state of ``/proc/<pid>/status`` (``T`` is stopped by a signal)."""
    for line in status_text.splitlines():
        if line.startswith("State:"):
            return line.split()[1]
    return "?"


Runner = Callable[[Sequence[str], str], str]


class NodeShell:
    """Commands run in a kind node with ``docker exec``: containers, pids, signals, manifests.

    ``run(argv, what)`` runs one command and returns its stdout, raising
    :class:`ClusterError` (the provider's runner) on failure.
    """

    def __init__(self, docker: str, run: Runner) -> None:
        self.docker = docker
        self.run = run

    def _exec(self, node: str, *argv: str) -> list[str]:
        return node_exec(self.docker, node, *argv)

    def park(self, node: str, component: str) -> bool:
        """Park ``component``'s manifest; False when it was parked already."""
        script = park_script(component)
        out = self.run(self._exec(node, "sh", "-c", script), f"stopping {component}")
        return "already" not in out

    def unpark(self, node: str, component: str) -> bool:
        """Move ``component``'s manifest back; False when it was not parked."""
        out = self.run(
            self._exec(node, "sh", "-c", unpark_script(component)), f"starting {component}"
        )
        return "restored" in out

    def containers(self, node: str) -> list[Container]:
        out = self.run(
            self._exec(node, "crictl", "ps", "-a", "-o", "json"),
            f"listing containers in {node}",
        )
        return parse_containers(out)

    def pid(self, node: str, container: str) -> int:
        out = self.run(
            self._exec(node, "crictl", "inspect", container),
            f"inspecting container {container} in {node}",
        )
        return parse_pid(out)

    def stopped_by_signal(self, node: str, pid: int) -> bool:
        out = self.run(self._exec(node, "cat", f"/proc/{pid}/status"), f"reading pid {pid}")
        return process_state(out) == "T"

    def parked(self, node: str) -> set[str]:
        out = self.run(self._exec(node, "ls", "/etc/kubernetes"), f"listing {node}")
        return {f.removesuffix(PARKED_SUFFIX) for f in out.split() if f.endswith(PARKED_SUFFIX)}

    def signal(self, node: str, component: str, signal: str, required: bool = True) -> list[int]:
        pids = [self.pid(node, c.id) for c in running_named(self.containers(node), component)]
        if not pids and required:
            raise ClusterError(f"{component} does not run in {node}: nothing to {signal}")
        for pid in pids:
            self.run(self._exec(node, "kill", f"-{signal}", str(pid)), f"{signal} {pid}")
        return pids
