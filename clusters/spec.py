"""Cluster specs: the node pools of a simulated GPU fleet, read from YAML.

A spec file looks like::

    apiVersion: blackstart.dev/v1
    kind: ClusterSpec
    metadata: {name: gpu-fleet}
    spec:
      serviceCIDR: 10.96.0.0/16
      pools:
      - name: gpu
        role: gpu            # gpu | cpu | standby
        count: 40
        labels: {nvidia.com/gpu.product: NVIDIA-H100-80GB-HBM3}
        capacity: {cpu: "96", memory: 1Ti, pods: "110", nvidia.com/gpu: "8"}

Node names are ``<pool>-<index>``. Every node carries ``blackstart.dev/pool``
and ``blackstart.dev/role``; standby nodes also ``blackstart.dev/standby=true``
and start unschedulable. Errors name the file and the field that was wrong.

``controlPlane`` sizes the control plane (what kube-apiserver may use, as a
static pod's limits or its VM bound it); the local provider enforces it with
a cgroup, so a storm can exhaust it. Without it the size follows the
sizing advice (about 4 cores and 8 GiB per 100 nodes) scaled to this machine,
see :func:`default_control_plane`.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from blackstart.names import (  # the fleet labels, re-exported for spec users
    GPU_RESOURCE as GPU_RESOURCE,
)
from blackstart.names import (
    POOL_LABEL as POOL_LABEL,
)
from blackstart.names import (
    ROLE_LABEL as ROLE_LABEL,
)
from blackstart.names import (
    STANDBY_LABEL as STANDBY_LABEL,
)

GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
ROLES = ("gpu", "cpu", "standby")
DEFAULT_SPEC = "gpu-fleet.yaml"
LARGE_SPEC = "gpu-fleet-1000.yaml"

_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$")
_LABEL_KEY = re.compile(
    r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
)
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")


# Sizing advice for a real control plane: cores and memory per 100 nodes.
ADVICE_CPUS_PER_100_NODES = 4.0
ADVICE_MEMORY_PER_100_NODES = 8 * 1024**3
# A KWOK node costs the API server far less than a real one (no kubelet, no
# images, no pods of its own): the local control plane gets a quarter of the
# advice, so that the objects a storm lists weigh on it as a real fleet's do.
LOCAL_MEMORY_SCALE = 0.25
# Bounds: what the control plane can run in at all, and what this machine can spare.
MIN_CONTROL_PLANE_CPUS = 0.5
MIN_CONTROL_PLANE_MEMORY = 768 * 1024**2
MAX_SHARE_OF_HOST_CPUS = 0.5
MAX_SHARE_OF_HOST_MEMORY = 0.25

_BINARY_UNITS = {"Ki": 1024, "Mi": 1024**2, "Gi": 1024**3, "Ti": 1024**4}
_DECIMAL_UNITS = {"k": 1000, "M": 1000**2, "G": 1000**3, "T": 1000**4}


class SpecError(ValueError):
    """A cluster spec is malformed; the message names the file and the field."""


@dataclass(frozen=True)
class NodeSpec:
    """One simulated node to create."""

    name: str
    pool: str
    role: str
    labels: dict[str, str]
    capacity: dict[str, str]
    taints: tuple[dict[str, str], ...] = ()

    @property
    def unschedulable(self) -> bool:
        return self.role == "standby"

    @property
    def gpus(self) -> int:
        return int(self.capacity.get(GPU_RESOURCE, "0"))


@dataclass(frozen=True)
class NodePool:
    name: str
    role: str
    count: int
    labels: dict[str, str] = field(default_factory=dict)
    capacity: dict[str, str] = field(default_factory=dict)
    taints: tuple[dict[str, str], ...] = ()

    def nodes(self) -> list[NodeSpec]:
        labels = {**self.labels, POOL_LABEL: self.name, ROLE_LABEL: self.role}
        if self.role == "standby":
            labels[STANDBY_LABEL] = "true"
        return [
            NodeSpec(
                name=f"{self.name}-{index}",
                pool=self.name,
                role=self.role,
                labels={**labels, "kubernetes.io/hostname": f"{self.name}-{index}"},
                capacity=dict(self.capacity),
                taints=self.taints,
            )
            for index in range(self.count)
        ]


def memory_bytes(quantity: str) -> int:
    """A Kubernetes memory quantity (``1536Mi``, ``2Gi``, ``500M``, ``1073741824``) in bytes."""
    match = re.fullmatch(r"([0-9]+(?:\.[0-9]+)?)(Ki|Mi|Gi|Ti|k|M|G|T)?", quantity.strip())
    if not match:
        raise ValueError(f"{quantity!r} is not a memory quantity such as 1536Mi or 2Gi")
    unit = match.group(2) or ""
    factor = _BINARY_UNITS.get(unit) or _DECIMAL_UNITS.get(unit) or 1
    return int(float(match.group(1)) * factor)


def format_memory(size: int) -> str:
    """Bytes as the largest whole binary unit: 1610612736 -> ``1536Mi``."""
    for unit in ("Ti", "Gi", "Mi", "Ki"):
        if size % _BINARY_UNITS[unit] == 0:
            return f"{size // _BINARY_UNITS[unit]}{unit}"
    return str(size)


@dataclass(frozen=True)
class ControlPlaneSize:
    """The machine the control plane runs on: CPU cores and memory (bytes)."""

    cpus: float
    memory: int
    from_advice: bool = False

    @property
    def memory_text(self) -> str:
        return format_memory(self.memory)

    def describe(self) -> str:
        origin = (
            " (sizing advice for this fleet, scaled to this machine)" if self.from_advice else ""
        )
        return f"{self.cpus:g} CPU, {self.memory_text} memory{origin}"


def host_resources() -> tuple[int, int]:
    """(cores, bytes of memory) of this machine."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return int(cores or 1), int(memory)


def default_control_plane(
    nodes: int, host_cpus: int | None = None, host_memory: int | None = None
) -> ControlPlaneSize:
    """The control plane for ``nodes`` nodes by the sizing advice, scaled to this machine.

    Advice: about 4 cores and 8 GiB per 100 nodes. Memory is scaled by
    :data:`LOCAL_MEMORY_SCALE` (simulated nodes are light); both are kept
    within what a control plane needs at least and what this machine can
    spare (half its cores, a quarter of its memory). Cores are rounded to
    half cores and memory to 256 MiB.
    """
    if host_cpus is None or host_memory is None:
        detected = host_resources()
        host_cpus = host_cpus or detected[0]
        host_memory = host_memory or detected[1]
    cpus = ADVICE_CPUS_PER_100_NODES * nodes / 100
    cpus = min(
        max(cpus, MIN_CONTROL_PLANE_CPUS),
        max(MIN_CONTROL_PLANE_CPUS, host_cpus * MAX_SHARE_OF_HOST_CPUS),
    )
    cpus = max(MIN_CONTROL_PLANE_CPUS, math.floor(cpus * 2) / 2)
    memory = ADVICE_MEMORY_PER_100_NODES * nodes / 100 * LOCAL_MEMORY_SCALE
    memory = min(max(memory, MIN_CONTROL_PLANE_MEMORY), host_memory * MAX_SHARE_OF_HOST_MEMORY)
    step = 256 * 1024**2
    memory_rounded = max(MIN_CONTROL_PLANE_MEMORY, int(memory // step) * step)
    return ControlPlaneSize(cpus=cpus, memory=memory_rounded, from_advice=True)


@dataclass(frozen=True)
class ClusterSpec:
    name: str
    pools: tuple[NodePool, ...]
    service_cidr: str = "10.96.0.0/16"
    source: str = "<memory>"
    # spec.controlPlane as written; None where the sizing advice decides
    control_plane_cpus: float | None = None
    control_plane_memory: int | None = None

    @property
    def control_plane(self) -> ControlPlaneSize:
        """The control plane's size: the spec's ``controlPlane``, the sizing advice for the rest."""
        advice = default_control_plane(sum(p.count for p in self.pools))
        if self.control_plane_cpus is None and self.control_plane_memory is None:
            return advice
        return ControlPlaneSize(
            cpus=self.control_plane_cpus if self.control_plane_cpus is not None else advice.cpus,
            memory=self.control_plane_memory or advice.memory,
        )

    def nodes(self) -> list[NodeSpec]:
        return [node for pool in self.pools for node in pool.nodes()]

    def pool(self, name: str) -> NodePool:
        for pool in self.pools:
            if pool.name == name:
                return pool
        raise SpecError(f"{self.source}: no pool named {name!r}")

    def count(self, role: str) -> int:
        return sum(p.count for p in self.pools if p.role == role)


def packaged_spec(name: str) -> Path:
    """Path of a spec shipped with blackstart (``gpu-fleet.yaml``, ``gpu-fleet-1000.yaml``)."""
    return Path(str(resources.files("blackstart.clusters").joinpath(name)))


def resolve_spec_path(value: str | Path | None) -> Path:
    """A user's ``--spec``: a file path, or the name of a packaged spec; None is the default."""
    if value is None:
        return packaged_spec(DEFAULT_SPEC)
    path = Path(value).expanduser()
    if path.exists():
        return path
    packaged = packaged_spec(path.name)
    if packaged.exists() and str(value) in (path.name, f"clusters/{path.name}"):
        return packaged
    raise SpecError(
        f"cluster spec {value} not found (packaged specs: {DEFAULT_SPEC}, {LARGE_SPEC})"
    )


def load_spec(value: str | Path | None = None) -> ClusterSpec:
    """Read and validate a spec file (default: the packaged ``gpu-fleet.yaml``)."""
    path = resolve_spec_path(value)
    try:
        document = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise SpecError(f"{path}: not valid YAML: {err}") from err
    return parse_spec(document, source=str(path))


def _require(cond: bool, source: str, where: str, what: str) -> None:
    if not cond:
        raise SpecError(f"{source}: {where}: {what}")


def _str_map(value: Any, source: str, where: str, *, quantities: bool = False) -> dict[str, str]:
    if value is None:
        return {}
    _require(isinstance(value, dict), source, where, "must be a mapping")
    result: dict[str, str] = {}
    for key, item in value.items():
        key_s = str(key)
        item_s = str(item)
        _require(bool(_LABEL_KEY.match(key_s)), source, f"{where}.{key_s}", "is not a valid key")
        if quantities:
            _require(
                bool(_QUANTITY.match(item_s)),
                source,
                f"{where}.{key_s}",
                f"{item_s!r} is not a resource quantity such as 8, 96, 512Gi",
            )
        else:
            _require(
                bool(_LABEL_VALUE.match(item_s)) and len(item_s) <= 63,
                source,
                f"{where}.{key_s}",
                f"{item_s!r} is not a valid label value",
            )
        result[key_s] = item_s
    return result


def _taints(value: Any, source: str, where: str) -> tuple[dict[str, str], ...]:
    if value is None:
        return ()
    _require(isinstance(value, list), source, where, "must be a list")
    taints = []
    for i, taint in enumerate(value):
        here = f"{where}[{i}]"
        _require(isinstance(taint, dict) and "key" in taint, source, here, "needs a 'key'")
        effect = taint.get("effect", "NoSchedule")
        _require(
            effect in ("NoSchedule", "PreferNoSchedule", "NoExecute"),
            source,
            f"{here}.effect",
            f"{effect!r} is not NoSchedule, PreferNoSchedule or NoExecute",
        )
        entry = {"key": str(taint["key"]), "effect": str(effect)}
        if "value" in taint:
            entry["value"] = str(taint["value"])
        taints.append(entry)
    return tuple(taints)


def parse_spec(document: Any, source: str = "<memory>") -> ClusterSpec:
    """Validate a parsed spec document; raise :class:`SpecError` naming the bad field."""
    _require(isinstance(document, dict), source, "top level", "must be a mapping")
    kind = document.get("kind", "ClusterSpec")
    _require(kind == "ClusterSpec", source, "kind", f"must be ClusterSpec, not {kind!r}")
    meta = document.get("metadata") or {}
    _require(isinstance(meta, dict), source, "metadata", "must be a mapping")
    name = str(meta.get("name", Path(source).stem))
    _require(bool(_NAME.match(name)), source, "metadata.name", f"{name!r} is not a DNS label")
    body = document.get("spec")
    _require(isinstance(body, dict), source, "spec", "is missing or not a mapping")
    cidr = str(body.get("serviceCIDR", "10.96.0.0/16"))
    try:
        network = ipaddress.ip_network(cidr)
    except ValueError as err:
        raise SpecError(f"{source}: spec.serviceCIDR: {err}") from err
    _require(
        network.num_addresses >= 1024,
        source,
        "spec.serviceCIDR",
        f"{cidr} has room for {network.num_addresses - 2} Services; use /22 or larger",
    )
    raw_pools = body.get("pools")
    _require(
        isinstance(raw_pools, list) and bool(raw_pools),
        source,
        "spec.pools",
        "must be a non-empty list",
    )
    pools: list[NodePool] = []
    seen: set[str] = set()
    for i, raw in enumerate(raw_pools):
        where = f"spec.pools[{i}]"
        _require(isinstance(raw, dict), source, where, "must be a mapping")
        pool_name = str(raw.get("name", ""))
        _require(
            bool(_NAME.match(pool_name)),
            source,
            f"{where}.name",
            f"{pool_name!r} is not a DNS label",
        )
        _require(
            pool_name not in seen, source, f"{where}.name", f"pool {pool_name!r} appears twice"
        )
        seen.add(pool_name)
        role = raw.get("role")
        _require(
            role in ROLES, source, f"{where}.role", f"{role!r} is not one of {', '.join(ROLES)}"
        )
        count = raw.get("count")
        _require(
            isinstance(count, int) and not isinstance(count, bool) and 0 <= count <= 20000,
            source,
            f"{where}.count",
            f"{count!r} is not a whole number from 0 to 20000",
        )
        capacity = {"cpu": "32", "memory": "256Gi", "pods": "110"}
        capacity.update(_str_map(raw.get("capacity"), source, f"{where}.capacity", quantities=True))
        # an extended resource counts whole devices: "8", never "500m", "1k" or "1.5"
        _require(
            capacity.get(GPU_RESOURCE, "0").isdigit(),
            source,
            f"{where}.capacity.{GPU_RESOURCE}",
            f"{capacity.get(GPU_RESOURCE)!r} is not a whole number of GPUs",
        )
        if role == "gpu":
            _require(
                int(capacity.get(GPU_RESOURCE, "0")) > 0,
                source,
                f"{where}.capacity.{GPU_RESOURCE}",
                "a gpu pool needs at least one nvidia.com/gpu per node",
            )
        pools.append(
            NodePool(
                name=pool_name,
                role=str(role),
                count=int(count),
                labels=_str_map(raw.get("labels"), source, f"{where}.labels"),
                capacity=capacity,
                taints=_taints(raw.get("taints"), source, f"{where}.taints"),
            )
        )
    cp_cpus, cp_memory = _control_plane(body.get("controlPlane"), source)
    return ClusterSpec(
        name=name,
        pools=tuple(pools),
        service_cidr=cidr,
        source=source,
        control_plane_cpus=cp_cpus,
        control_plane_memory=cp_memory,
    )


def _control_plane(value: Any, source: str) -> tuple[float | None, int | None]:
    """``spec.controlPlane``: ``{cpus: 2, memory: 2Gi}``; either may be left to the advice."""
    if value is None:
        return None, None
    where = "spec.controlPlane"
    _require(
        isinstance(value, dict), source, where, "must be a mapping such as {cpus: 2, memory: 2Gi}"
    )
    unknown = sorted(set(value) - {"cpus", "memory"})
    _require(
        not unknown, source, where, f"unknown field(s) {', '.join(unknown)}; use cpus and memory"
    )
    cpus = value.get("cpus")
    if cpus is not None:
        _require(
            isinstance(cpus, int | float) and not isinstance(cpus, bool) and 0.1 <= cpus <= 256,
            source,
            f"{where}.cpus",
            f"{cpus!r} is not a number of cores from 0.1 to 256",
        )
    memory = value.get("memory")
    size: int | None = None
    if memory is not None:
        try:
            size = memory_bytes(str(memory))
        except ValueError as err:
            raise SpecError(f"{source}: {where}.memory: {err}") from None
        _require(
            256 * 1024**2 <= size <= 4 * 1024**4,
            source,
            f"{where}.memory",
            f"{memory!r} is outside 256Mi to 4Ti (kube-apiserver and etcd need 256Mi at least)",
        )
    return (float(cpus) if cpus is not None else None), size
