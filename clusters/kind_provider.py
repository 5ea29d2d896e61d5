"""The kind provider: a cluster spec as a real multi-node kind cluster, behind ClusterProvider.

``up`` starts the Docker engine when none answers, builds (or finds) the
offline node image, runs ``kind create cluster`` with the config of
:mod:`blackstart.clusters.kind`, waits until every node is Ready and every
kube-system pod Running, labels and cordons as the spec says, advertises
``nvidia.com/gpu`` on GPU workers (a node-status patch: pods that ask for
GPUs schedule there and run real containers) and saves the cluster's state
so ``cluster status``, ``cluster down`` and the chaos actions find it.

Components are acted on inside the nodes (:mod:`blackstart.clusters.kind_components`);
CoreDNS is the cluster's real Deployment.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from blackstart.clusters import kind_components as kc
from blackstart.clusters.engine import ensure_engine
from blackstart.clusters.kind import (
    KMSG_CONTAINER_PATH,
    KMSG_HOST_FOLDER,
    KindError,
    _run,
    kind_create_command,
    plan_kind_cluster,
    post_create_commands,
    resolve_kind_node,
    write_kind_config,
)
from blackstart.clusters.local.cgroups import ControlPlaneCgroup, container_cgroup
from blackstart.clusters.local.credentials import write_identities_signed_by
from blackstart.clusters.provider import (
    CONTROL_PLANE_COMPONENTS,
    LEADER_ELECTED,
    ClusterError,
    ComponentStatus,
)
from blackstart.clusters.spec import (
    GPU_RESOURCE,
    ClusterSpec,
    ControlPlaneSize,
    format_memory,
    host_resources,
)
from blackstart.clusters.state import ClusterNotFound, ClusterState, load_state, state_dir_for
from blackstart.clusters.toolchain import resolve
from blackstart.paths import cache_dir

Progress = Callable[[str], None]
CLUSTER_LABEL = "io.x-k8s.kind.cluster"
KIND_NETWORK = "kind"
#: a node container that exits non-zero (rebooted from inside: systemd ends on SIGHUP) restarts
NODE_RESTART_POLICY = "on-failure"
KUBEADM_PKI = "/etc/kubernetes/pki"  # where kubeadm keeps the cluster CA on the control plane
#: the NodePort Service through which the host's DNS probes reach the CoreDNS pods
DNS_SERVICE = "blackstart-dns"
_ENDPOINTS = {
    "etcd": "https://{cp}:2379 (in the kind network)",
    "kube-controller-manager": "https://127.0.0.1:10257 (in {cp})",
    "kube-scheduler": "https://127.0.0.1:10259 (in {cp})",
}


def _quiet(message: str) -> None:
    return None


class KindProvider:
    """kind clusters built from cluster specs; needs a Docker engine (started when none answers)."""

    name = "kind"

    def __init__(
        self,
        cache: Path | None = None,
        *,
        kind_binary: str | None = None,
        kubectl_binary: str | None = None,
        docker_binary: str = "docker",
        node_image: str | None = None,
        progress: Progress = _quiet,
        ready_timeout: float = 600.0,
        command_timeout: float = 120.0,
        retain_on_failure: bool = False,
    ) -> None:
        self.cache = cache or cache_dir()
        toolchain, _ = resolve(self.cache)
        self.kind = kind_binary or str(toolchain.paths.get("kind", "kind"))
        self.kubectl = kubectl_binary or str(toolchain.paths.get("kubectl", "kubectl"))
        self.docker = docker_binary
        self.node_image = node_image
        self.progress = progress
        self.ready_timeout = ready_timeout
        self.command_timeout = command_timeout
        self.retain_on_failure = retain_on_failure
        self.nodes = kc.NodeShell(docker_binary, self._run)

    # --- lifecycle ------------------------------------------------------------
    def up(
        self, spec: ClusterSpec, name: str, state_dir: str | os.PathLike[str] | None = None
    ) -> ClusterState:
        """Create kind cluster ``name`` from ``spec`` (see the module doc); return its state.

        Raises :class:`ClusterError` naming the step that failed; the
        cluster is then deleted unless ``retain_on_failure``.
        """
        started = time.monotonic()
        ensure_engine(self.cache, self.progress)
        if name in self._clusters():
            raise ClusterError(
                f"kind cluster {name!r} exists already: `blackstart cluster down --name {name}`"
            )
        image = self.node_image or self._node_image()
        folder = Path(state_dir) if state_dir is not None else state_dir_for(name, self.cache)
        plan = plan_kind_cluster(spec, name, folder, node_image=image)
        write_kind_config(plan)
        self.progress(f"[{name}] kind create cluster: 1 control plane, {len(plan.workers)} workers")
        state = ClusterState(
            name=name,
            provider=self.name,
            state_dir=str(plan.state_dir),
            spec_path=spec.source,
            kubeconfig=str(plan.kubeconfig_path),
            context=f"kind-{name}",
            kernel_log_dir=str(plan.state_dir / KMSG_HOST_FOLDER),
            nodes=len(plan.workers) + 1,
            created_at=time.time(),
            extra={
                "node_map": plan.node_map(),
                "node_image": image,
                "control_plane": plan.control_plane,
                "gpus": {w.kind_name: w.spec.gpus for w in plan.workers if w.spec.gpus},
            },
        )
        try:
            create = kind_create_command(plan, self.kind, "0s")
            # --retain keeps failed nodes for `docker exec` / `kind export logs`.
            create += ["--retain"] if self.retain_on_failure else []
            self._kubectl_free_run(create, "creating", name)
            state.apiserver_url = _server_of(plan.kubeconfig_path)
            state.save()
            # kind starts its nodes with --restart=on-failure:1, one restart until a manual
            # start; a node that reboots itself (systemctl reboot, the agent's --host-reboot)
            # must come back each time, as a machine does
            self._run(
                [
                    self.docker,
                    "update",
                    f"--restart={NODE_RESTART_POLICY}",
                    *self._containers(name),
                ],
                f"setting the restart policy of the nodes of {name!r}",
            )
            if spec.control_plane_cpus is not None or spec.control_plane_memory is not None:
                self.limit_control_plane(name, spec.control_plane)
            self.progress(f"[{name}] nodes created in {time.monotonic() - started:.0f} s")
            self._wait_ready(state, "node", "--all")
            for command in post_create_commands(plan, self.kubectl):
                self._run(command, f"setting up the nodes of {name!r}")
            self.advertise_gpus(name)
            state.identities = self.issue_identities(name)
            self._wait_ready(state, "pod", "--all", "-n", "kube-system")
            state.dns_address = self._publish_dns(state)
            state.save()
        except ClusterError:
            if not self.retain_on_failure:
                self.down(name)
            raise
        self.progress(f"[{name}] kind cluster up in {time.monotonic() - started:.0f} s")
        return state

    def adopt(self, spec: ClusterSpec, name: str) -> ClusterState:
        """Take over kind cluster ``name`` that blackstart did not create; return its state.

        The cluster was made with plain ``kind create cluster`` (blackstart's node
        image, one worker per node of ``spec``, in spec order). Adoption saves a
        state for it, so the kind actions and ``gameday --context`` act on it, and
        makes what ``up`` would have configured: the spec's labels, cordons and
        taints, ``nvidia.com/gpu`` advertised, the nodes' restart policy, a
        kernel-log file in each worker (under its ``/var`` volume, which the host
        can append to: a foreign cluster has no kernel-log mounts) and CoreDNS
        published on a NodePort. ``down`` on an adopted cluster forgets it and
        leaves its containers running.
        """
        started = time.monotonic()
        ensure_engine(self.cache, self.progress)
        if name not in self._clusters():
            raise ClusterError(
                f"there is no kind cluster {name!r} to adopt (`kind get clusters` lists "
                f"{', '.join(self._clusters()) or 'none'})"
            )
        folder = state_dir_for(name, self.cache)
        if (folder / "cluster.json").exists():
            raise ClusterError(
                f"kind cluster {name!r} is blackstart's already (state in {folder}): "
                "`blackstart cluster status` shows it"
            )
        plan = plan_kind_cluster(spec, name, folder)
        workers = sorted(
            self._docker_ps(name, '{{.Names}} {{.Label "io.x-k8s.kind.role"}}').splitlines()
        )
        found = {line.split()[0] for line in workers if line.endswith(" worker")}
        wanted = [w.kind_name for w in plan.workers]
        if not set(wanted) <= found:
            raise ClusterError(
                f"kind cluster {name!r} has {len(found)} worker(s) ({', '.join(sorted(found))}); "
                f"spec {spec.source} needs {len(wanted)} ({', '.join(wanted)}): create it with "
                f"that many workers, or adopt it with a spec of {len(found)} nodes"
            )
        folder.mkdir(parents=True, exist_ok=True)
        kubeconfig = folder / "kubeconfig"
        kubeconfig.write_text(
            self._run([self.kind, "get", "kubeconfig", "--name", name], "reading its kubeconfig")
        )
        kubeconfig.chmod(0o600)
        state = ClusterState(
            name=name,
            provider=self.name,
            state_dir=str(folder),
            spec_path=spec.source,
            kubeconfig=str(kubeconfig),
            context=f"kind-{name}",
            apiserver_url=_server_of(kubeconfig),
            nodes=len(plan.workers) + 1,
            created_at=time.time(),
            extra={
                "adopted": True,
                "node_map": plan.node_map(),
                "control_plane": plan.control_plane,
                "gpus": {w.kind_name: w.spec.gpus for w in plan.workers if w.spec.gpus},
                "kernel_logs": {
                    w.spec_name: str(self._kernel_log_in_volume(w.kind_name)) for w in plan.workers
                },
            },
        )
        self.progress(f"[{name}] adopting: {len(wanted)} workers as {spec.source} says")
        self._wait_ready(state, "node", "--all")
        self._run(
            [self.docker, "update", f"--restart={NODE_RESTART_POLICY}", *self._containers(name)],
            f"setting the restart policy of the nodes of {name!r}",
        )
        for worker in plan.workers:
            pairs = [f"{k}={v}" for k, v in worker.config_labels.items()]
            self._kctl(state, "label", "node", worker.kind_name, *pairs, "--overwrite")
        for command in post_create_commands(plan, self.kubectl, kubeconfig):
            self._run(command, f"setting up the nodes of {name!r}")
        state.save()
        self.advertise_gpus(name)
        # the non-admin identities `up` signs: the storms' system traffic and their guard
        state.identities = self.issue_identities(name)
        self._wait_ready(state, "pod", "--all", "-n", "kube-system")
        state.dns_address = self._publish_dns(state)
        state.save()
        self.progress(f"[{name}] adopted in {time.monotonic() - started:.0f} s")
        return state

    def _kernel_log_in_volume(self, node: str) -> Path:
        """Make the kernel-log file in ``node`` and return its path on the host.

        kind gives every node a volume at ``/var``; the file lives there, so the
        host appends to it as to a mounted file, and it survives node restarts.
        """
        log = Path(KMSG_CONTAINER_PATH)
        self._run(
            [
                self.docker,
                "exec",
                node,
                "sh",
                "-c",
                f"mkdir -p {shlex.quote(str(log.parent))} && touch {shlex.quote(str(log))}",
            ],
            f"making the kernel-log file in {node}",
        )
        template = '{{range .Mounts}}{{if eq .Destination "/var"}}{{.Source}}{{end}}{{end}}'
        source = self._run([self.docker, "inspect", "-f", template, node], f"inspecting {node}")
        relative = log.relative_to("/var")
        if not source.strip():
            raise ClusterError(f"{node} has no /var volume; is it a kind node?")
        path = Path(source.strip()) / relative
        if not path.is_file():
            raise ClusterError(f"{node}'s kernel-log file is not at {path} on this host")
        return path

    def down(self, name: str) -> list[str]:
        """Delete the cluster's containers, its volumes, the kind network when unused, its state."""
        removed: list[str] = []
        folder = state_dir_for(name, self.cache)
        if self.adopted(name):
            return self._forget(name)
        containers = self._containers(name)
        if containers or name in self._clusters():
            command = [self.kind, "delete", "cluster", "--name", name]
            kubeconfig = folder / "kubeconfig"
            command += ["--kubeconfig", str(kubeconfig)]
            try:
                self._run(command, f"deleting kind cluster {name!r}", self.command_timeout * 5)
            except ClusterError as err:
                # a node container that was just restarted (a reboot fault) can refuse its
                # first kill ("did not receive an exit event"): the removal below retries
                self.progress(f"[{name}] kind delete cluster failed, removing the nodes: {err}")
            removed += containers
        self._remove_leftover_nodes(name)
        network = self._run(
            [self.docker, "network", "ls", "--filter", f"name=^{KIND_NETWORK}$", "-q"],
            "listing networks",
        ).strip()
        if network:
            users = self._run(
                [
                    self.docker,
                    "network",
                    "inspect",
                    KIND_NETWORK,
                    "--format",
                    "{{len .Containers}}",
                ],
                "inspecting the kind network",
            ).strip()
            if users == "0":
                self._run([self.docker, "network", "rm", KIND_NETWORK], "removing the kind network")
                removed.append(f"network {KIND_NETWORK}")
        if folder.exists():
            import shutil

            shutil.rmtree(folder)
        return removed

    def adopted(self, name: str) -> bool:
        """Cluster ``name`` was made by someone else and adopted (``down`` forgets it)."""
        try:
            return bool(load_state(name, self.cache).extra.get("adopted"))
        except ClusterNotFound:
            return False

    def _forget(self, name: str) -> list[str]:
        """Forget an adopted cluster: its DNS Service and state go, its nodes stay."""
        import shutil

        state = load_state(name, self.cache)
        removed = []
        with contextlib.suppress(ClusterError):
            self._system(state, "delete", "service", DNS_SERVICE, "--ignore-not-found")
            removed.append(f"service kube-system/{DNS_SERVICE}")
        shutil.rmtree(state.state_dir, ignore_errors=True)
        removed.append(f"blackstart's state of {name!r} (the adopted cluster keeps running)")
        return removed

    def _remove_leftover_nodes(self, name: str, attempts: int = 5) -> None:
        """``docker rm -f`` what is left of the cluster's nodes, a few times before giving up."""
        for attempt in range(attempts):
            leftovers = self._containers(name)
            if not leftovers:
                return
            try:
                self._run([self.docker, "rm", "-f", "-v", *leftovers], "removing leftover nodes")
                return
            except ClusterError:
                if attempt == attempts - 1:
                    raise
                # a pod's cgroup inside the node left frozen (runc freezes it while it
                # starts or kills a container; a node restart can cut that short) keeps
                # the node's processes from dying: thaw it, then try again
                for container in leftovers:
                    thaw_container(self._run, self.docker, container)
                time.sleep(3.0)

    def status(self, name: str) -> list[ComponentStatus]:
        """Each control-plane component, CoreDNS and every node container, with health."""
        state = load_state(name, self.cache)
        cp = str(state.extra.get("control_plane", f"{name}-control-plane"))
        nodes = self._node_states(name)
        statuses: list[ComponentStatus] = []
        cp_up = nodes.get(cp) == "running"
        containers = self.nodes.containers(cp) if cp_up else []
        parked = self.nodes.parked(cp) if cp_up else set()
        for component in CONTROL_PLANE_COMPONENTS:
            endpoint = (
                state.apiserver_url
                if component == "kube-apiserver"
                else _ENDPOINTS[component].format(cp=cp)
            )
            running = kc.newest(kc.running_named(containers, component), component)
            pid, current = None, "stopped"
            if running is not None and component not in parked:
                try:
                    pid = self.nodes.pid(cp, running.id)
                    current = "hung" if self.nodes.stopped_by_signal(cp, pid) else "running"
                except ClusterError:  # it exited since it was listed (an OOM kill, a crash)
                    pid = None
            healthy = current == "running" and (
                component != "kube-apiserver" or self._readyz(state)
            )
            detail = "manifest parked" if component in parked else ""
            restarts = _restarts(containers, component)
            statuses.append(
                ComponentStatus(component, pid, endpoint, current, healthy, detail, restarts)
            )
        statuses.append(self._coredns_status(state))
        for node, container_state in sorted(nodes.items()):
            up = container_state == "running"
            statuses.append(
                ComponentStatus(f"node/{node}", None, "docker container", container_state, up)
            )
        return statuses

    def kubeconfig(self, name: str) -> Path:
        return Path(load_state(name, self.cache).kubeconfig)

    # --- components -------------------------------------------------------------
    def component_pid(self, name: str, component: str) -> int | None:
        """The pid (in the node) of ``component``'s running container, None when none runs."""
        kc.check_component(component)
        state = load_state(name, self.cache)
        nodes = (
            [n for n, s in self._node_states(name).items() if s == "running"]
            if component == kc.COREDNS
            else [self._cp(state)]
        )
        for node in nodes:
            for container in kc.running_named(self.nodes.containers(node), component):
                return self.nodes.pid(node, container.id)
        return None

    def component_state(self, name: str, component: str) -> str:
        """``running``, ``hung`` (its process stopped by SIGSTOP) or ``stopped``."""
        kc.check_component(component)
        state = load_state(name, self.cache)
        if component == kc.COREDNS:
            return "running" if self._coredns_replicas(state) > 0 else "stopped"
        cp = self._cp(state)
        running = kc.running_named(self.nodes.containers(cp), component)
        if not running:
            return "stopped"
        pid = self.nodes.pid(cp, running[0].id)
        return "hung" if self.nodes.stopped_by_signal(cp, pid) else "running"

    def stop_component(self, name: str, component: str, grace: float = 5.0) -> bool:
        """Stop ``component``: park its static-pod manifest, or scale CoreDNS to 0.

        Returns False when it was already stopped. Waits until its container
        is gone (kubelet checks its manifest folder every 20 s).
        """
        kc.check_component(component)
        state = load_state(name, self.cache)
        if component == kc.COREDNS:
            replicas = self._coredns_replicas(state)
            if replicas == 0:
                return False
            state.extra["coredns_replicas"] = replicas
            state.save()
            self._system(state, "scale", "deployment/coredns", "--replicas=0")
            timeout = f"--timeout={int(self.ready_timeout)}s"
            self._system(state, "wait", "--for=delete", "pod", "-l", "k8s-app=kube-dns", timeout)
            return True
        cp = self._cp(state)
        if not self.nodes.park(cp, component):
            return False
        self._until(
            lambda: not kc.running_named(self.nodes.containers(cp), component),
            f"{component} of {name!r} to stop",
            timeout=90.0 + grace,
        )
        return True

    def start_component(self, name: str, component: str) -> None:
        """Start ``component`` again (also resumes a frozen one); waits until it runs."""
        kc.check_component(component)
        state = load_state(name, self.cache)
        if component == kc.COREDNS:
            replicas = int(str(state.extra.get("coredns_replicas", 2)))
            self._system(state, "scale", "deployment/coredns", f"--replicas={replicas}")
            self._coredns_rollout(state)
            return
        cp = self._cp(state)
        self.nodes.signal(cp, component, "CONT", required=False)
        if not self.nodes.unpark(cp, component) and component in LEADER_ELECTED:
            # not stopped by us but exited (it lost its leader Lease in an outage): kubelet
            # starts it again after its crash back-off, up to minutes; waiting adds nothing
            self.progress(f"[{name}] {component} exited; kubelet restarts it after its back-off")
            return
        self._until(
            lambda: bool(kc.running_named(self.nodes.containers(cp), component)),
            f"{component} of {name!r} to run",
            timeout=120.0,
        )
        if component == "kube-apiserver":
            self._until(lambda: self._readyz(state), f"the API server of {name!r} to be ready")

    def hang_component(self, name: str, component: str) -> int:
        """Freeze ``component`` with SIGSTOP (kubelet's liveness probe may restart it)."""
        kc.check_component(component)
        return self._signal_component(name, component, "STOP")

    def resume_component(self, name: str, component: str) -> int:
        """SIGCONT what :meth:`hang_component` froze; returns its pid."""
        kc.check_component(component)
        return self._signal_component(name, component, "CONT")

    def restart_coredns(self, name: str) -> None:
        """Kill CoreDNS's containers (SIGKILL, as an OOM kill does); kubelet starts them again.

        Needs no API server: kubelet restarts a pod's dead container on its own,
        which is how CoreDNS restarts while the control plane is down. Waits until
        every CoreDNS pod that ran has a new container running (not until it is ready).
        """
        nodes = [n for n, s in self._node_states(name).items() if s == "running"]
        before = {
            n: {c.id for c in kc.running_named(self.nodes.containers(n), kc.COREDNS)} for n in nodes
        }
        killed = [pid for n in nodes for pid in self.nodes.signal(n, kc.COREDNS, "KILL", False)]
        if not killed:
            raise ClusterError(f"CoreDNS does not run in kind cluster {name!r}: nothing to restart")
        self.progress(f"[{name}] killed {len(killed)} CoreDNS container(s); kubelet restarts them")

        def restarted() -> bool:
            for node, old in before.items():
                now = {c.id for c in kc.running_named(self.nodes.containers(node), kc.COREDNS)}
                if len(now - old) < len(old):
                    return False
            return True

        self._until(restarted, f"the CoreDNS containers of {name!r} to run again", timeout=90.0)

    # --- nodes ------------------------------------------------------------------
    def reboot_node(self, name: str, node: str) -> str:
        """Restart ``node``'s container: NotReady, then back with a new boot id (returned)."""
        state = load_state(name, self.cache)
        kind_node = self._kind_node(state, node)
        path = "jsonpath={.status.nodeInfo.bootID}"
        before = self._kctl(state, "get", "node", kind_node, "-o", path).strip()
        self.progress(f"[{name}] rebooting {kind_node}")
        self._run([self.docker, "restart", "--time", "20", kind_node], f"rebooting {kind_node}")

        def new_boot() -> bool:
            try:
                now = self._kctl(state, "get", "node", kind_node, "-o", path).strip()
            except ClusterError:
                return False
            return bool(now) and now != before

        self._until(new_boot, f"{kind_node} to report a new boot id", self.ready_timeout)
        self._wait_ready(state, "node", kind_node)
        self.advertise_gpus(name)
        return self._kctl(state, "get", "node", kind_node, "-o", path).strip()

    def kernel_log(self, name: str, node: str) -> Path:
        """The host file mounted as ``node``'s kernel log (append Xid lines to it)."""
        state = load_state(name, self.cache)
        node_map: dict[str, str] = dict(state.extra.get("node_map", {}))  # type: ignore[call-overload]
        spec_name = node if node in node_map else {v: k for k, v in node_map.items()}.get(node)
        if spec_name is None:
            resolve_kind_node(node, name, node_map)  # raises, naming the valid nodes
            raise KindError(f"{node!r} is the control plane, which has no kernel-log file")
        adopted: dict[str, str] = dict(state.extra.get("kernel_logs", {}))  # type: ignore[call-overload]
        if spec_name in adopted:  # an adopted cluster's file, in the node's /var volume
            return Path(adopted[spec_name])
        return Path(state.kernel_log_dir) / f"{spec_name}.log"

    def limit_control_plane(self, name: str, size: ControlPlaneSize) -> None:
        """Limit the control-plane node container to ``size`` (``docker update``, live).

        What its kube-apiserver, etcd, controllers and kubelet share, as the machine of a
        real control plane bounds them: a storm that fills it gets the biggest of them
        (kube-apiserver) OOM-killed, and kubelet restarts it with its back-off. A spec
        without ``controlPlane`` leaves kind's control plane unlimited, as kind makes it:
        its nodes run real pods, which the sizing advice for simulated fleets does not
        cover.
        """
        state = load_state(name, self.cache)
        memory = str(size.memory)
        self._run(
            [self.docker, "update", f"--cpus={size.cpus:g}", f"--memory={memory}",
             f"--memory-swap={memory}", self._cp(state)],
            f"limiting the control plane of {name!r} to {size.cpus:g} cores and "
            f"{size.memory >> 20} MiB",
        )  # fmt: skip
        state.extra["control_plane_limits"] = {"cpus": size.cpus, "memory": size.memory}
        state.save()

    def control_plane_size(self, name: str) -> tuple[float, int]:
        """The control-plane node container's limits: (cores, bytes); (0, 0) when unlimited."""
        limits = load_state(name, self.cache).extra.get("control_plane_limits")
        if not isinstance(limits, dict):
            return 0.0, 0
        return float(limits.get("cpus") or 0), int(limits.get("memory") or 0)

    def resize_control_plane(self, name: str, cpus: float, memory: int) -> dict[str, Any]:
        """Give the control-plane node container ``cpus`` cores and ``memory`` bytes, live.

        ``(0, 0)`` lifts the limits: the container gets this machine's cores and memory,
        which is what an unlimited kind node can use, and the state forgets the limits.
        Returns the size before and after, as the local provider's resize does.
        """
        before = self.control_plane_size(name)
        if cpus <= 0 and memory <= 0:
            self.limit_control_plane(name, ControlPlaneSize(*host_resources()))
            state = load_state(name, self.cache)
            state.extra.pop("control_plane_limits", None)
            state.save()
        else:
            self.limit_control_plane(name, ControlPlaneSize(cpus=cpus, memory=memory))
        return {"before": _size_text(*before), "after": _size_text(cpus, memory)}

    def restarts(self, name: str, component: str) -> int:
        """How many times kubelet restarted ``component``'s container in its static pod
        (its attempt count: ``kubectl get pods``' RESTARTS); 0 when it never restarted."""
        state = load_state(name, self.cache)
        node = self._cp(state)
        if self._node_states(name).get(node) != "running":
            raise ClusterError(f"the control-plane node {node} of {name!r} is not running")
        return _restarts(self.nodes.containers(node), component)

    def reset_restart_backoff(self, name: str, component: str) -> None:
        """Nothing to do: kubelet keeps a static pod's back-off to itself (nothing outside
        it can reset it short of restarting kubelet) and lets it lapse after a healthy run."""

    def control_plane_usage(self, name: str) -> dict[str, Any]:
        """The control-plane node container's cgroup now (what ``spec.controlPlane``
        bounds: its kube-apiserver, etcd, controllers and kubelet together) and each
        component's restarts, read from the host and the node, not the API server."""
        state = load_state(name, self.cache)
        node = self._cp(state)
        found = self._run([self.docker, "inspect", "-f", "{{.State.Pid}} {{.Id}}", node],
                          f"finding the control-plane node of {name!r}").split()  # fmt: skip
        pid = int(found[0]) if found else 0
        relative = container_cgroup(pid, found[-1]) if pid > 0 else None
        usage = ControlPlaneCgroup(name, relative=relative).usage() if relative else None
        containers = self.nodes.containers(node) if pid > 0 else []
        components = {c: {"restarts": _restarts(containers, c)} for c in CONTROL_PLANE_COMPONENTS}
        limits = state.extra.get("control_plane_limits")
        return {
            "size": dict(limits) if isinstance(limits, dict) else {},
            "usage": asdict(usage) if usage is not None else None,
            "components": components,
        }

    def read_node_files(self, name: str, path: str) -> dict[str, str]:
        """``path`` as each running node of cluster ``name`` holds it: {node container: text}.

        Read through the engine, not the API server (the telemetry storm's figures are
        read so while it keeps the API server down); nodes without the file are left out.
        """
        texts = {}
        for node, status in sorted(self._node_states(name).items()):
            if status != "running":
                continue
            try:
                texts[node] = self._run([self.docker, "exec", node, "cat", path], f"reading {path}")
            except KindError:  # no such file on that node
                continue
        return texts

    def issue_identities(self, name: str) -> dict[str, str]:
        """Sign blackstart's non-admin identities with the cluster's CA; bind their RBAC.

        The users a local cluster has (:mod:`blackstart.clusters.local.credentials`), so
        the same experiments run here: none is in ``system:masters``, so API Priority and
        Fairness classifies and limits their requests as any workload's (the lockout's
        system traffic, the staged roll-out's guard). The CA is read from the
        control-plane node through the engine and kept nowhere; each kubeconfig (0600)
        holds its own certificate. Returns {user: kubeconfig path}, saved in the state.
        """
        state = load_state(name, self.cache)
        node = self._cp(state)
        ca_cert, ca_key = (
            self._run(
                [self.docker, "exec", node, "cat", f"{KUBEADM_PKI}/{file}"],
                f"reading the cluster CA of {name!r} ({file})",
            ).strip().encode() + b"\n"
            for file in ("ca.crt", "ca.key")
        )  # fmt: skip
        try:
            written = write_identities_signed_by(
                ca_cert, ca_key, str(state.apiserver_url), str(state.context),
                Path(state.state_dir) / "identities",
            )  # fmt: skip
        except ValueError as err:  # not a PEM certificate or key
            raise ClusterError(f"the cluster CA of {name!r} could not be read: {err}") from err
        rbac = resources.files("blackstart.clusters.local").joinpath("rbac.yaml")
        self._kctl(state, "apply", "-f", str(rbac))
        state.identities = {user: str(path) for user, path in written.items()}
        state.save()
        return state.identities

    def advertise_gpus(self, name: str) -> None:
        """Patch ``nvidia.com/gpu`` into each GPU worker's status capacity (kubelet keeps it)."""
        state = load_state(name, self.cache)
        gpus: dict[str, int] = dict(state.extra.get("gpus", {}))  # type: ignore[call-overload]
        for node, count in sorted(gpus.items()):
            patch = json.dumps({"status": {"capacity": {GPU_RESOURCE: str(count)}}})
            self._kctl(
                state, "patch", "node", node, "--subresource=status", "--type=merge", "-p", patch
            )

    # --- compatibility with the actions of the first kind provider ---------------
    def stop_apiserver(self, name: str) -> None:
        self.stop_component(name, "kube-apiserver")

    def start_apiserver(self, name: str) -> None:
        self.start_component(name, "kube-apiserver")

    # --- helpers ----------------------------------------------------------------
    def _node_image(self) -> str:
        from blackstart.clusters.node_image import NodeImageError, build_node_image

        try:
            result = build_node_image(self.cache, self.progress)
        except NodeImageError as err:
            raise ClusterError(f"the kind node image could not be built: {err}") from err
        return result.tag

    def _run(self, argv: Sequence[str], what: str, timeout: float | None = None) -> str:
        return _run(argv, what=what, timeout=timeout or self.command_timeout)

    def _kubectl_free_run(self, argv: Sequence[str], verb: str, name: str) -> None:
        self._run(argv, f"{verb} kind cluster {name!r}", self.ready_timeout)

    def _kctl(self, state: ClusterState, *args: str) -> str:
        argv = [self.kubectl, "--kubeconfig", state.kubeconfig, *args]
        return self._run(argv, f"`kubectl {shlex.join(args)}` on {state.name!r}")

    def _wait_ready(self, state: ClusterState, kind: str, *selector: str) -> None:
        self.progress(f"[{state.name}] waiting for {kind}s {' '.join(selector)} to be Ready")
        deadline = time.monotonic() + self.ready_timeout
        while True:
            try:
                argv = [self.kubectl, "--kubeconfig", state.kubeconfig, "wait"]
                argv += ["--for=condition=Ready", kind, *selector, "--timeout=30s"]
                self._run(argv, f"waiting for {kind}s of {state.name!r} to be Ready", 60.0)
                return
            except KindError as err:
                if time.monotonic() > deadline:
                    raise ClusterError(
                        f"{kind}s of kind cluster {state.name!r} not Ready after "
                        f"{self.ready_timeout:.0f} s: {err}"
                    ) from err
                time.sleep(2)

    def _until(self, check: Callable[[], bool], what: str, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline:
                raise ClusterError(f"timed out after {timeout:.0f} s waiting for {what}")
            time.sleep(1.0)

    def _clusters(self) -> list[str]:
        return self._run([self.kind, "get", "clusters"], "listing kind clusters").split()

    def _docker_ps(self, name: str, template: str) -> str:
        label = f"label={CLUSTER_LABEL}={name}"
        argv = [self.docker, "ps", "-a", "--filter", label, "--format", template]
        return self._run(argv, "listing node containers")

    def _containers(self, name: str) -> list[str]:
        return sorted(self._docker_ps(name, "{{.Names}}").split())

    def _node_states(self, name: str) -> dict[str, str]:
        out = self._docker_ps(name, "{{.Names}} {{.State}}")
        return dict(line.split(" ", 1) for line in out.splitlines() if " " in line)

    def _cp(self, state: ClusterState) -> str:
        return str(state.extra.get("control_plane", f"{state.name}-control-plane"))

    def _kind_node(self, state: ClusterState, node: str) -> str:
        node_map: dict[str, str] = dict(state.extra.get("node_map", {}))  # type: ignore[call-overload]
        return resolve_kind_node(node, state.name, node_map)

    def _signal_component(self, name: str, component: str, signal: str) -> int:
        state = load_state(name, self.cache)
        nodes = (
            [n for n, s in self._node_states(name).items() if s == "running"]
            if component == kc.COREDNS
            else [self._cp(state)]
        )
        pids = [pid for node in nodes for pid in self.nodes.signal(node, component, signal, False)]
        if not pids:
            raise ClusterError(f"{component} does not run in kind cluster {name!r}")
        return pids[0]

    def _publish_dns(self, state: ClusterState) -> str:
        """Publish CoreDNS on a NodePort and return ``<control-plane IP>:<port>``.

        The probes' queries enter the cluster at the control-plane node's kube-proxy
        and reach the CoreDNS pods over the pod network, as a pod's query to the
        ``kube-dns`` ClusterIP does; the host cannot reach the ClusterIP itself.
        """
        published = self._system(
            state, "get", "service", DNS_SERVICE, "--ignore-not-found", "-o", "name"
        )
        if not published.strip():  # an adopted cluster may keep it from an earlier adoption
            self._system(
                state,
                "expose",
                "deployment/coredns",
                f"--name={DNS_SERVICE}",
                "--type=NodePort",
                "--port=53",
                "--target-port=53",
                "--protocol=UDP",
            )
        port = self._system(
            state, "get", f"service/{DNS_SERVICE}", "-o", "jsonpath={.spec.ports[0].nodePort}"
        ).strip()
        address = self._run(
            [
                self.docker,
                "inspect",
                "-f",
                "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}",
                self._cp(state),
            ],
            "reading the control plane's address",
        ).split()
        if not port.isdigit() or not address:
            raise ClusterError(
                f"CoreDNS could not be published on a NodePort (port {port!r}, address {address})"
            )
        published = f"{address[0]}:{port}"
        self._until(
            lambda: _dns_answers(address[0], int(port)),
            f"CoreDNS to answer at {published} (kube-proxy programs the NodePort)",
            timeout=60.0,
        )
        self.progress(f"[{state.name}] data-plane DNS published at {published}")
        return published

    def _readyz(self, state: ClusterState) -> bool:
        try:
            argv = [self.kubectl, "--kubeconfig", state.kubeconfig, "get", "--raw", "/readyz"]
            self._run([*argv, "--request-timeout=5s"], "reading /readyz", 15.0)
        except KindError:
            return False
        return True

    def _coredns_rollout(self, state: ClusterState) -> None:
        timeout = f"--timeout={int(self.ready_timeout)}s"
        self._system(state, "rollout", "status", "deployment/coredns", timeout)

    def _system(self, state: ClusterState, *args: str) -> str:
        """kubectl in kube-system."""
        return self._kctl(state, "-n", "kube-system", *args)

    def _coredns_replicas(self, state: ClusterState) -> int:
        out = self._system(state, "get", "deployment/coredns", "-o", "jsonpath={.spec.replicas}")
        return int(out.strip() or 0)

    def _coredns_status(self, state: ClusterState) -> ComponentStatus:
        try:
            path = "jsonpath={.status.readyReplicas}/{.spec.replicas}"
            out = self._system(
                state, "get", "deployment/coredns", "-o", path, "--request-timeout=5s"
            )
        except KindError as err:
            return ComponentStatus(
                kc.COREDNS, None, "kube-system/coredns", "running", False, str(err)[:200]
            )
        ready, _, wanted = out.strip().partition("/")
        ready_n, wanted_n = int(ready or 0), int(wanted or 0)
        current = "stopped" if wanted_n == 0 else "running"
        healthy = wanted_n > 0 and ready_n == wanted_n
        endpoint = "kube-system/coredns (Service kube-dns)"
        detail = f"{ready_n}/{wanted_n} pods ready"
        return ComponentStatus(kc.COREDNS, None, endpoint, current, healthy, detail)


def _size_text(cpus: float, memory: int) -> dict[str, Any]:
    """A control-plane size as the local provider reports it; ``None`` where unlimited."""
    return {
        "cpus": cpus if cpus > 0 else None,
        "memory": format_memory(memory) if memory > 0 else None,
    }


def _restarts(containers: list[kc.Container], component: str) -> int:
    """kubelet's restart count of ``component``'s static pod: its newest container's attempt."""
    latest = kc.newest(containers, component)
    return latest.attempt if latest is not None else 0


def _dns_answers(host: str, port: int) -> bool:
    """``kubernetes.default.svc`` resolves through ``host:port`` (True without dnspython)."""
    try:
        from blackstart.probes.dns import DEFAULT_NAMES, query_once
    except ImportError:  # the rescue images carry no chaos extra; nothing to wait with
        return True
    return query_once(host, port, DEFAULT_NAMES[0], "A", 1.0)[0] == "ok"


def _server_of(kubeconfig: Path) -> str:
    try:
        document = yaml.safe_load(kubeconfig.read_text())
        return str(document["clusters"][0]["cluster"]["server"])
    except (OSError, KeyError, IndexError, TypeError, yaml.YAMLError) as err:
        raise ClusterError(f"kind wrote no usable kubeconfig at {kubeconfig}: {err}") from err


def thaw_container(run: kc.Runner, docker: str, container: str) -> list[Path]:
    """Thaw every frozen cgroup of ``container`` (cgroup v1 freezer, v2 cgroup.freeze)."""
    try:
        full_id = run([docker, "inspect", "-f", "{{.Id}}", container], "inspecting").strip()
    except ClusterError:
        return []
    roots = (
        Path("/sys/fs/cgroup/freezer/docker") / full_id,
        Path("/sys/fs/cgroup/system.slice") / f"docker-{full_id}.scope",
    )
    thawed = []
    for root in roots:
        for path in root.rglob("freezer.state") if root.exists() else ():
            with contextlib.suppress(OSError):
                if path.read_text().strip() != "THAWED":
                    path.write_text("THAWED")
                    thawed.append(path)
        for path in root.rglob("cgroup.freeze") if root.exists() else ():
            with contextlib.suppress(OSError):
                if path.read_text().strip() == "1":
                    path.write_text("0")
                    thawed.append(path)
    return thawed
