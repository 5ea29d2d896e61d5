"""The kind provider: a cluster spec's fleet as kind nodes (Docker containers).

The same spec file that drives the local provider becomes a kind config
(``apiVersion: kind.x-k8s.io/v1alpha4``, ``kind: Cluster``) with one
control-plane node and one worker per spec node, in spec order. Everything
about the config is computed by pure functions, so it can be checked without
Docker; only :class:`KindProvider` runs ``kind``, ``kubectl`` and ``docker``.

What a worker gets:

- the spec node's labels, except those kubelet refuses to self-set at
  registration (``kubernetes.io`` / ``k8s.io`` labels outside kubelet's
  allowed set, such as ``node-role.kubernetes.io/gpu``): those are applied
  after creation with ``kubectl label``. ``kubernetes.io/hostname`` is dropped,
  kubelet sets it to the kind node name. Every worker is also labelled
  ``blackstart.dev/spec-node=<spec node name>`` so the mapping can be read
  back from the cluster itself;
- its own kernel-log file: ``<state_dir>/kmsg/<spec node>.log`` on the host,
  mounted read-write at ``/var/log/blackstart/kmsg.log`` in the node. Fake Xid
  lines are appended to that file, never written to ``/dev/kmsg`` (see
  :data:`KMSG_CONTAINER_PATH`);
- for standby nodes, a cordon and the standby label after creation.

kind names its node containers itself (``<cluster>-worker``,
``<cluster>-worker2``, ...), in the order of the config's nodes of each role,
so worker N is spec node N. :meth:`KindPlan.node_map` exposes that mapping and
:func:`write_kind_config` saves it beside the config as ``kind-nodes.json``.

A 60-worker kind cluster needs a large Docker host (each node runs its own
kubelet and containerd); pass a smaller spec on a laptop.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from blackstart.clusters.provider import ClusterError
from blackstart.clusters.spec import STANDBY_LABEL, ClusterSpec, NodeSpec

__all__ = [
    "APISERVER_MANIFEST",
    "APISERVER_PARKED",
    "KIND_API_VERSION",
    "KMSG_CONTAINER_PATH",
    "SPEC_NODE_LABEL",
    "KindError",
    "KindNode",
    "KindPlan",
    "NodeFixup",
    "kind_config",
    "kind_config_schema",
    "kind_create_command",
    "kind_worker_name",
    "kubelet_may_set_label",
    "plan_kind_cluster",
    "post_create_commands",
    "post_create_fixups",
    "read_node_map",
    "render_kind_config",
    "resolve_kind_node",
    "split_node_labels",
    "start_apiserver_command",
    "stop_apiserver_command",
    "wait_nodes_ready_command",
    "write_kind_config",
]

KIND_API_VERSION = "kind.x-k8s.io/v1alpha4"
#: the packaged spec of the default kind fleet (`cluster up --provider kind`, the game day)
KIND_DEFAULT_SPEC = "kind-gpu.yaml"

# The real /dev/kmsg inside a kind node is the host kernel's ring buffer,
# shared by the host and every container: a fake Xid written there would
# show up on the host and on every node at once (and needs CAP_SYSLOG). So
# each worker gets a file of its own that stands for its kernel log, and the
# node agent on a kind cluster reads this path instead of /dev/kmsg.
KMSG_CONTAINER_PATH = "/var/log/blackstart/kmsg.log"
KMSG_HOST_FOLDER = "kmsg"

SPEC_NODE_LABEL = "blackstart.dev/spec-node"
CONFIG_FILE = "kind-config.yaml"
NODE_MAP_FILE = "kind-nodes.json"
KUBECONFIG_FILE = "kubeconfig"
SCHEMA_RESOURCE = "schemas/kind-v1alpha4.json"

# kubelet watches this folder for static pods; moving the manifest out (not
# merely renaming it inside the folder, kubelet reads every non-hidden file
# there) stops the API server, moving it back starts it.
APISERVER_MANIFEST = "/etc/kubernetes/manifests/kube-apiserver.yaml"
APISERVER_PARKED = "/etc/kubernetes/kube-apiserver.yaml.blackstart-stopped"

DEFAULT_WAIT = "5m"

# kind's own limits: names must match validNameRE, and it warns above 50
# characters because "-control-plane" must still fit a 64-character hostname.
_CLUSTER_NAME = re.compile(r"^[a-z0-9.-]+$")
_CLUSTER_NAME_MAX = 50

# Mirror of k8s.io/kubelet/pkg/apis/well_known_labels.go (v0.33): the
# kubernetes.io labels kubelet may set on its own Node via --node-labels.
_KUBELET_LABELS = frozenset(
    {
        "kubernetes.io/hostname",
        "kubernetes.io/os",
        "kubernetes.io/arch",
        "beta.kubernetes.io/os",
        "beta.kubernetes.io/arch",
        "beta.kubernetes.io/instance-type",
        "node.kubernetes.io/instance-type",
        "topology.kubernetes.io/zone",
        "topology.kubernetes.io/region",
        "failure-domain.beta.kubernetes.io/zone",
        "failure-domain.beta.kubernetes.io/region",
    }
)
_KUBELET_LABEL_NAMESPACES = ("kubelet.kubernetes.io", "node.kubernetes.io")
# Set by kubelet to the kind node name; the spec's value would be wrong.
_KIND_SETS_LABELS = frozenset({"kubernetes.io/hostname"})

_INSTALL_HINTS = {
    "kind": "install it with `blackstart toolchain install` (kind v0.29.0) or pass its path",
    "kubectl": "install it with `blackstart toolchain install` or pass its path",
    "docker": (
        "kind needs Docker: install Docker Engine (https://docs.docker.com/engine/install/), "
        "or use the local provider, which needs no container engine"
    ),
}


class KindError(ClusterError):
    """A kind cluster could not be planned, created, changed or removed.

    The message names the command that failed (or the field that was wrong)
    and what kind, kubectl or docker wrote to stderr.
    """


# --- labels -----------------------------------------------------------------


def _label_namespace(key: str) -> str:
    prefix, slash, _ = key.partition("/")
    return prefix if slash else ""


def kubelet_may_set_label(key: str) -> bool:
    """Whether kubelet accepts ``key`` in ``--node-labels`` at registration.

    kind passes a node's ``labels`` to kubelet as ``--node-labels``; kubelet
    refuses to start when one of them is in the ``kubernetes.io`` or
    ``k8s.io`` namespaces (or a subdomain of them) unless it is one of the
    well-known node labels or under ``kubelet.kubernetes.io`` /
    ``node.kubernetes.io``. This mirrors kubelet's own check.
    """
    namespace = _label_namespace(key)
    kubernetes_owned = any(
        namespace == domain or namespace.endswith("." + domain)
        for domain in ("kubernetes.io", "k8s.io")
    )
    if not kubernetes_owned or key in _KUBELET_LABELS:
        return True
    return any(
        namespace == allowed or namespace.endswith("." + allowed)
        for allowed in _KUBELET_LABEL_NAMESPACES
    )


def split_node_labels(labels: Mapping[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """Split a spec node's labels into (in the kind config, applied after creation).

    Labels kubelet refuses at registration go to the second mapping and are
    set with ``kubectl label`` once the node exists. ``kubernetes.io/hostname``
    is in neither: kubelet sets it to the kind node's name.
    """
    at_registration: dict[str, str] = {}
    after_creation: dict[str, str] = {}
    for key, value in labels.items():
        if key in _KIND_SETS_LABELS:
            continue
        target = at_registration if kubelet_may_set_label(key) else after_creation
        target[key] = value
    return at_registration, after_creation


# --- the plan ---------------------------------------------------------------


def kind_worker_name(cluster: str, index: int) -> str:
    """The name kind gives the worker at position ``index`` (from 0) of its config.

    kind's node namer numbers each role separately and leaves the first one
    bare: ``<cluster>-worker``, ``<cluster>-worker2``, ``<cluster>-worker3``...
    """
    if index < 0:
        raise ValueError(f"worker index must be 0 or more, not {index}")
    return f"{cluster}-worker" if index == 0 else f"{cluster}-worker{index + 1}"


def resolve_kind_node(node: str, cluster: str, node_map: Mapping[str, str]) -> str:
    """The kind node name for ``node`` in ``cluster``, a spec node name or a kind node name.

    ``node_map`` maps spec node names to kind node names (see
    :meth:`KindPlan.node_map` and :func:`read_node_map`). The control plane is
    ``<cluster>-control-plane``. Raises :class:`KindError` naming the node
    when it is neither.
    """
    if node == f"{cluster}-control-plane" or node in node_map.values():
        return node
    if node in node_map:
        return node_map[node]
    example = next(iter(node_map.items()), None)
    hint = (
        f"give a spec node name such as {example[0]!r} or a kind node name such as {example[1]!r}"
        if example
        else "the cluster has no workers"
    )
    raise KindError(f"node {node!r} is not in kind cluster {cluster!r}: {hint}")


def _check_cluster_name(name: str) -> None:
    if not _CLUSTER_NAME.match(name):
        raise KindError(
            f"kind cluster name {name!r} is invalid: use lower-case letters, digits, '-' and '.'"
        )
    if len(name) > _CLUSTER_NAME_MAX:
        raise KindError(
            f"kind cluster name {name!r} is {len(name)} characters long; "
            f"use at most {_CLUSTER_NAME_MAX} so node hostnames fit in 64 characters"
        )


@dataclass(frozen=True)
class KindNode:
    """One spec node as a kind worker: its kind name, kernel-log file and labels."""

    spec: NodeSpec
    kind_name: str
    kmsg_host_path: Path
    config_labels: dict[str, str]
    post_create_labels: dict[str, str]

    @property
    def spec_name(self) -> str:
        return self.spec.name

    @property
    def standby(self) -> bool:
        """Standby workers are cordoned after creation until the controller swaps one in."""
        return self.spec.unschedulable


@dataclass(frozen=True)
class KindPlan:
    """Everything needed to create one kind cluster from a spec, computed up front."""

    cluster: str
    state_dir: Path
    workers: tuple[KindNode, ...]
    service_cidr: str
    node_image: str | None = None

    @property
    def control_plane(self) -> str:
        """Name of the control-plane node (and of its Docker container)."""
        return f"{self.cluster}-control-plane"

    @property
    def config_path(self) -> Path:
        return self.state_dir / CONFIG_FILE

    @property
    def kubeconfig_path(self) -> Path:
        return self.state_dir / KUBECONFIG_FILE

    @property
    def node_map_path(self) -> Path:
        return self.state_dir / NODE_MAP_FILE

    def node_map(self) -> dict[str, str]:
        """Spec node name -> kind node name, in spec order (worker N is spec node N)."""
        return {worker.spec_name: worker.kind_name for worker in self.workers}

    def kind_node(self, node: str) -> str:
        """The kind node name for ``node``, given as a spec node name or a kind node name."""
        return resolve_kind_node(node, self.cluster, self.node_map())

    def config(self) -> dict[str, Any]:
        """The kind config as a mapping, ready for :func:`render_kind_config`."""
        control_plane: dict[str, Any] = {"role": "control-plane"}
        if self.node_image:
            control_plane["image"] = self.node_image
        nodes: list[dict[str, Any]] = [control_plane]
        for worker in self.workers:
            node: dict[str, Any] = {"role": "worker"}
            if self.node_image:
                node["image"] = self.node_image
            node["labels"] = dict(worker.config_labels)
            node["extraMounts"] = [
                {
                    "hostPath": str(worker.kmsg_host_path),
                    "containerPath": KMSG_CONTAINER_PATH,
                    "readOnly": False,
                }
            ]
            nodes.append(node)
        return {
            "kind": "Cluster",
            "apiVersion": KIND_API_VERSION,
            "name": self.cluster,
            # The API server is published on loopback only.
            "networking": {"serviceSubnet": self.service_cidr, "apiServerAddress": "127.0.0.1"},
            "nodes": nodes,
        }


def plan_kind_cluster(
    spec: ClusterSpec,
    name: str,
    state_dir: str | os.PathLike[str],
    *,
    node_image: str | None = None,
) -> KindPlan:
    """Plan a kind cluster called ``name`` for ``spec``, keeping its files in ``state_dir``.

    Pure: nothing is written. ``node_image`` (e.g. ``kindest/node:v1.33.1``)
    pins every node's image; None leaves kind's default. Raises
    :class:`KindError` when ``name`` is not a valid kind cluster name.
    """
    _check_cluster_name(name)
    # Docker reads a relative bind-mount source as a named volume, so the
    # kernel-log files must be named by absolute paths.
    state = Path(state_dir).expanduser().resolve()
    workers = []
    for index, node in enumerate(spec.nodes()):
        at_registration, after_creation = split_node_labels(node.labels)
        at_registration[SPEC_NODE_LABEL] = node.name
        workers.append(
            KindNode(
                spec=node,
                kind_name=kind_worker_name(name, index),
                kmsg_host_path=state / KMSG_HOST_FOLDER / f"{node.name}.log",
                config_labels=at_registration,
                post_create_labels=after_creation,
            )
        )
    return KindPlan(
        cluster=name,
        state_dir=state,
        workers=tuple(workers),
        service_cidr=spec.service_cidr,
        node_image=node_image,
    )


def kind_config(
    spec: ClusterSpec,
    name: str,
    state_dir: str | os.PathLike[str],
    *,
    node_image: str | None = None,
) -> dict[str, Any]:
    """The kind config for ``spec`` as a mapping (see :func:`plan_kind_cluster`)."""
    return plan_kind_cluster(spec, name, state_dir, node_image=node_image).config()


def render_kind_config(plan: KindPlan) -> str:
    """The kind config of ``plan`` as YAML text, nodes and labels in spec order."""
    header = (
        f"# kind cluster {plan.cluster}: written by blackstart, do not edit.\n"
        f"# Spec node -> kind node names are in {NODE_MAP_FILE} beside this file.\n"
    )
    return header + yaml.safe_dump(plan.config(), sort_keys=False, default_flow_style=False)


def write_kind_config(plan: KindPlan) -> Path:
    """Write the kind config, the node map and empty kernel-log files; return the config path.

    The kernel-log files must exist before ``kind create cluster``: Docker
    creates a missing bind-mount source as a directory. Existing files are
    emptied, so a new cluster does not inherit old Xid lines. Write to these
    files by appending; replacing one (write-and-rename) leaves the node
    watching the old file.
    """
    kmsg_dir = plan.state_dir / KMSG_HOST_FOLDER
    kmsg_dir.mkdir(parents=True, exist_ok=True)
    for worker in plan.workers:
        worker.kmsg_host_path.write_bytes(b"")
    plan.config_path.write_text(render_kind_config(plan))
    plan.node_map_path.write_text(json.dumps(plan.node_map(), indent=2) + "\n")
    return plan.config_path


def read_node_map(state_dir: str | os.PathLike[str]) -> dict[str, str]:
    """Spec node name -> kind node name, as saved by :func:`write_kind_config`."""
    path = Path(state_dir).expanduser() / NODE_MAP_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError as err:
        raise KindError(f"{path} not found: no kind cluster was planned in {path.parent}") from err
    except json.JSONDecodeError as err:
        raise KindError(f"{path} is not valid JSON: {err}") from err
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in data.items()
    ):
        raise KindError(f"{path} must map spec node names to kind node names")
    return dict(data)


def kind_config_schema() -> dict[str, Any]:
    """The JSON Schema of kind's v1alpha4 config shipped with blackstart.

    Derived from kind v0.29.0's Go types; unknown fields are rejected as
    kind's strict decoder rejects them. Validate with any JSON Schema
    (2020-12) library, e.g. ``jsonschema.validate(config, kind_config_schema())``.
    """
    text = resources.files("blackstart.clusters").joinpath(SCHEMA_RESOURCE).read_text()
    schema: dict[str, Any] = json.loads(text)
    return schema


# --- after creation ---------------------------------------------------------


@dataclass(frozen=True)
class NodeFixup:
    """What to change on one kind node once it has joined the cluster."""

    kind_name: str
    spec_name: str
    labels: dict[str, str] = field(default_factory=dict)
    cordon: bool = False
    taints: tuple[dict[str, str], ...] = ()

    def kubectl_commands(self, kubectl: str, kubeconfig: str | os.PathLike[str]) -> list[list[str]]:
        """The ``kubectl`` commands that make this change, each as an argv list."""
        base = [kubectl, "--kubeconfig", str(kubeconfig)]
        commands: list[list[str]] = []
        if self.labels:
            pairs = [f"{key}={value}" for key, value in self.labels.items()]
            commands.append([*base, "label", "node", self.kind_name, *pairs, "--overwrite"])
        for taint in self.taints:
            key = taint["key"] + (f"={taint['value']}" if "value" in taint else "")
            commands.append(
                [*base, "taint", "node", self.kind_name, f"{key}:{taint['effect']}", "--overwrite"]
            )
        if self.cordon:
            commands.append([*base, "cordon", self.kind_name])
        return commands

    def patch(self) -> dict[str, Any]:
        """The same change as a merge patch of the Node object (for an API client).

        ``spec.taints`` replaces the node's taint list; kind workers start
        with none, so this only adds the spec's.
        """
        patch: dict[str, Any] = {}
        if self.labels:
            patch["metadata"] = {"labels": dict(self.labels)}
        spec: dict[str, Any] = {}
        if self.cordon:
            spec["unschedulable"] = True
        if self.taints:
            spec["taints"] = [dict(t) for t in self.taints]
        if spec:
            patch["spec"] = spec
        return patch


def post_create_fixups(plan: KindPlan) -> list[NodeFixup]:
    """The changes to make once the workers are Ready, one per worker that needs any.

    A worker needs one when it has labels kubelet refuses at registration,
    when it is a standby (cordoned, and its standby label re-asserted with
    the cordon so the two are set together), or when its spec has taints.
    Until the cordon lands, a standby is schedulable; nothing is deployed
    before :meth:`KindProvider.up` returns, so that window is harmless.
    """
    fixups = []
    for worker in plan.workers:
        labels = dict(worker.post_create_labels)
        if worker.standby:
            labels[STANDBY_LABEL] = "true"
        if labels or worker.standby or worker.spec.taints:
            fixups.append(
                NodeFixup(
                    kind_name=worker.kind_name,
                    spec_name=worker.spec_name,
                    labels=labels,
                    cordon=worker.standby,
                    taints=worker.spec.taints,
                )
            )
    return fixups


def post_create_commands(
    plan: KindPlan, kubectl: str = "kubectl", kubeconfig: str | os.PathLike[str] | None = None
) -> list[list[str]]:
    """All ``kubectl`` commands of :func:`post_create_fixups`, in worker order.

    ``kubeconfig`` defaults to the plan's own kubeconfig file.
    """
    config = kubeconfig if kubeconfig is not None else plan.kubeconfig_path
    return [
        command
        for fixup in post_create_fixups(plan)
        for command in fixup.kubectl_commands(kubectl, config)
    ]


# --- commands ---------------------------------------------------------------


def kind_create_command(plan: KindPlan, kind: str = "kind", wait: str = DEFAULT_WAIT) -> list[str]:
    """``kind create cluster`` for ``plan``, writing the plan's own kubeconfig."""
    return [
        kind, "create", "cluster",
        "--name", plan.cluster,
        "--config", str(plan.config_path),
        "--kubeconfig", str(plan.kubeconfig_path),
        "--wait", wait,
    ]  # fmt: skip


def wait_nodes_ready_command(
    plan: KindPlan, kubectl: str = "kubectl", timeout: str = DEFAULT_WAIT
) -> list[str]:
    """``kubectl wait`` until every node of ``plan`` reports Ready."""
    return [
        kubectl, "--kubeconfig", str(plan.kubeconfig_path),
        "wait", "--for=condition=Ready", "node", "--all", f"--timeout={timeout}",
    ]  # fmt: skip


def stop_apiserver_command(cluster: str, docker: str = "docker") -> list[str]:
    """``docker exec`` that parks the API server's static-pod manifest out of kubelet's folder.

    Idempotent: when the manifest is already parked it does nothing; when it
    is in neither place the command fails.
    """
    script = (
        f"if [ -f {APISERVER_MANIFEST} ]; then mv {APISERVER_MANIFEST} {APISERVER_PARKED}; "
        f"elif [ ! -f {APISERVER_PARKED} ]; then "
        f"echo 'neither {APISERVER_MANIFEST} nor {APISERVER_PARKED} exists' >&2; exit 1; fi"
    )
    return [docker, "exec", f"{cluster}-control-plane", "sh", "-c", script]


def start_apiserver_command(cluster: str, docker: str = "docker") -> list[str]:
    """``docker exec`` that moves a parked API-server manifest back; a no-op if not parked."""
    script = f"if [ -f {APISERVER_PARKED} ]; then mv {APISERVER_PARKED} {APISERVER_MANIFEST}; fi"
    return [docker, "exec", f"{cluster}-control-plane", "sh", "-c", script]


def _install_hint(binary: str) -> str:
    return _INSTALL_HINTS.get(Path(binary).name, "check the path, or install it")


def _run(args: Sequence[str], *, what: str, timeout: float) -> str:
    """Run one command; return its stdout or raise :class:`KindError` naming it and its stderr."""
    argv = list(args)
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except FileNotFoundError as err:
        raise KindError(f"{what}: {argv[0]!r} not found; {_install_hint(argv[0])}") from err
    except PermissionError as err:
        raise KindError(f"{what}: {argv[0]!r} is not executable: {err}") from err
    except subprocess.TimeoutExpired as err:
        raise KindError(f"{what}: `{shlex.join(argv)}` did not finish in {timeout:.0f} s") from err
    if done.returncode != 0:
        output = (done.stderr or done.stdout).strip() or "(no output)"
        raise KindError(f"{what}: `{shlex.join(argv)}` exited with {done.returncode}: {output}")
    return done.stdout
