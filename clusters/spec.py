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
"""

from __future__ import annotations

import ipaddress
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


@dataclass(frozen=True)
class ClusterSpec:
    name: str
    pools: tuple[NodePool, ...]
    service_cidr: str = "10.96.0.0/16"
    source: str = "<memory>"

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
    return ClusterSpec(name=name, pools=tuple(pools), service_cidr=cidr, source=source)
