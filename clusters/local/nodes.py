"""Node reboots (KWOK's node-not-ready stage and a new boot id) and kernel logs."""

import time
import uuid
from pathlib import Path

from kubernetes import client

from blackstart.clusters.local import kwokctl
from blackstart.clusters.local.base import LocalBase
from blackstart.clusters.local.kwok_nodes import node_is_ready
from blackstart.clusters.provider import ClusterError
from blackstart.kube import api_client


class LocalNodes(LocalBase):
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

    def read_node_files(self, name: str, path: str) -> dict[str, str]:
        """Nothing: KWOK's nodes are simulated, have no files, and their pods run nothing."""
        return {}

    def reboot_node(self, name: str, node: str) -> str:
        """NotReady, then Ready with a new boot id; returns the new boot id."""
        self.mark_node_not_ready(name, node)
        self.mark_node_ready(name, node, new_boot_id=True)
        core = client.CoreV1Api(api_client(self.state(name).kubeconfig))
        status = core.read_node(node).status
        info = status.node_info if status else None
        return str(info.boot_id) if info is not None else ""
