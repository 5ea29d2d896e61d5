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
