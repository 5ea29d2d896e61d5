"""Cluster specs: the packaged fleets, and malformed specs rejected naming the bad field."""

from __future__ import annotations

import copy
import textwrap
from pathlib import Path
from typing import Any

import pytest

from blackstart.clusters.spec import (
    DEFAULT_SPEC,
    GPU_PRODUCT_LABEL,
    GPU_RESOURCE,
    LARGE_SPEC,
    POOL_LABEL,
    ROLE_LABEL,
    STANDBY_LABEL,
    SpecError,
    load_spec,
    packaged_spec,
    parse_spec,
    resolve_spec_path,
)

H100 = "NVIDIA-H100-80GB-HBM3"


def small_spec() -> dict[str, Any]:
    """A valid two-pool spec document; each malformed case breaks one field of a copy."""
    return {
        "apiVersion": "blackstart.dev/v1",
        "kind": "ClusterSpec",
        "metadata": {"name": "small"},
        "spec": {
            "serviceCIDR": "10.96.0.0/16",
            "pools": [
                {
                    "name": "gpu",
                    "role": "gpu",
                    "count": 2,
                    "labels": {GPU_PRODUCT_LABEL: H100},
                    "capacity": {"cpu": "96", "memory": "1Ti", GPU_RESOURCE: "8"},
                    "taints": [{"key": "nvidia.com/gpu", "value": "present"}],
                },
                {"name": "standby", "role": "standby", "count": 1},
            ],
        },
    }


def broken(change: tuple[str | int, ...], value: Any) -> dict[str, Any]:
    """``small_spec()`` with the field at path ``change`` set to ``value``."""
    document = copy.deepcopy(small_spec())
    target: Any = document
    *parents, last = change
    for part in parents:
        target = target[part]
    target[last] = value
    return document


# --- the packaged fleets ------------------------------------------------------


def test_the_default_spec_is_a_60_node_fleet_of_48_gpu_8_cpu_and_4_standby_nodes() -> None:
    spec = load_spec()
    assert spec.name == "gpu-fleet"
    assert spec.source == str(packaged_spec(DEFAULT_SPEC))
    assert len(spec.nodes()) == 60
    assert (spec.count("gpu"), spec.count("cpu"), spec.count("standby")) == (48, 8, 4)
    assert spec.service_cidr == "10.96.0.0/16"


def test_default_gpu_nodes_advertise_8_gpus_and_the_gpu_product() -> None:
    gpu_nodes = [n for n in load_spec().nodes() if n.role == "gpu"]
    assert [n.name for n in gpu_nodes[:3]] == ["gpu-0", "gpu-1", "gpu-2"]
    assert gpu_nodes[-1].name == "gpu-47"
    for node in gpu_nodes:
        assert node.capacity[GPU_RESOURCE] == "8"
        assert node.gpus == 8
        assert node.labels[GPU_PRODUCT_LABEL] == H100
        assert node.labels[POOL_LABEL] == "gpu"
        assert node.labels[ROLE_LABEL] == "gpu"
        assert node.labels["kubernetes.io/hostname"] == node.name
        assert not node.unschedulable
        assert STANDBY_LABEL not in node.labels


def test_default_cpu_nodes_have_no_gpus() -> None:
    cpu_nodes = [n for n in load_spec().nodes() if n.role == "cpu"]
    assert [n.name for n in cpu_nodes] == [f"cpu-{i}" for i in range(8)]
    for node in cpu_nodes:
        assert GPU_RESOURCE not in node.capacity
        assert node.gpus == 0
        assert not node.unschedulable


def test_default_standby_nodes_start_unschedulable_and_labelled_standby() -> None:
    standby = [n for n in load_spec().nodes() if n.role == "standby"]
    assert [n.name for n in standby] == ["standby-0", "standby-1", "standby-2", "standby-3"]
    for node in standby:
        assert node.unschedulable
        assert node.labels[STANDBY_LABEL] == "true"
        assert node.labels[ROLE_LABEL] == "standby"
        assert node.gpus == 8


def test_every_default_node_name_is_unique() -> None:
    names = [n.name for n in load_spec().nodes()]
    assert len(set(names)) == len(names)


def test_the_large_spec_has_1000_gpu_nodes_of_8_gpus() -> None:
    spec = load_spec(LARGE_SPEC)
    assert spec.name == "gpu-fleet-1000"
    assert spec.count("gpu") == 1000
    gpu_nodes = [n for n in spec.nodes() if n.role == "gpu"]
    assert len(gpu_nodes) == 1000
    assert gpu_nodes[-1].name == "gpu-999"
    assert {n.gpus for n in gpu_nodes} == {8}


def test_the_fleet_scale_spec_has_10000_gpu_nodes_of_8_gpus() -> None:
    spec = load_spec("gpu-fleet-10k.yaml")
    assert spec.name == "gpu-fleet-10k"
    assert (spec.count("gpu"), len(spec.nodes())) == (10000, 10028)
    assert {n.gpus for n in spec.nodes() if n.role == "gpu"} == {8}


def test_a_packaged_spec_is_found_by_name_or_by_its_repository_path() -> None:
    assert resolve_spec_path(LARGE_SPEC) == packaged_spec(LARGE_SPEC)
    assert resolve_spec_path(None) == packaged_spec(DEFAULT_SPEC)


def test_pool_lookup_by_name_and_an_unknown_pool_names_it() -> None:
    spec = load_spec()
    assert spec.pool("standby").count == 4
    with pytest.raises(SpecError, match="no pool named 'tpu'"):
        spec.pool("tpu")


def test_a_spec_file_on_disk_is_read_and_its_defaults_filled_in(tmp_path: Path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text(
        textwrap.dedent(
            """\
            kind: ClusterSpec
            spec:
              pools:
              - {name: workers, role: cpu, count: 3}
            """
        )
    )
    spec = load_spec(path)
    assert spec.name == "mine"  # from the file name when metadata.name is absent
    assert spec.source == str(path)
    assert [n.name for n in spec.nodes()] == ["workers-0", "workers-1", "workers-2"]
    assert spec.nodes()[0].capacity == {"cpu": "32", "memory": "256Gi", "pods": "110"}


def test_the_small_spec_used_below_is_valid() -> None:
    spec = parse_spec(small_spec(), source="small.yaml")
    assert [n.name for n in spec.nodes()] == ["gpu-0", "gpu-1", "standby-0"]
    assert spec.nodes()[0].taints == (
        {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"},
    )


# --- malformed specs ----------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "value", "field", "complaint"),
    [
        (("spec", "pools", 0, "role"), "tpu", "spec.pools[0].role", "'tpu' is not one of gpu, cpu"),
        (("spec", "pools", 1, "count"), -1, "spec.pools[1].count", "-1 is not a whole number"),
        (("spec", "pools", 1, "count"), True, "spec.pools[1].count", "True is not a whole number"),
        (("spec", "pools", 1, "count"), "3", "spec.pools[1].count", "'3' is not a whole number"),
        (("spec", "pools", 1, "count"), 20001, "spec.pools[1].count", "from 0 to 20000"),
        (("spec", "pools"), None, "spec.pools", "must be a non-empty list"),
        (("spec", "pools"), [], "spec.pools", "must be a non-empty list"),
        (("spec", "pools", 1, "name"), "gpu", "spec.pools[1].name", "pool 'gpu' appears twice"),
        (("spec", "pools", 1, "name"), "Standby_Pool", "spec.pools[1].name", "is not a DNS label"),
        (
            ("spec", "pools", 0, "capacity", "memory"),
            "lots",
            "spec.pools[0].capacity.memory",
            "'lots' is not a resource quantity",
        ),
        (
            ("spec", "pools", 0, "capacity"),
            {"cpu": "96"},
            f"spec.pools[0].capacity.{GPU_RESOURCE}",
            "a gpu pool needs at least one nvidia.com/gpu",
        ),
        (
            ("spec", "pools", 0, "capacity", GPU_RESOURCE),
            "0",
            f"spec.pools[0].capacity.{GPU_RESOURCE}",
            "a gpu pool needs at least one",
        ),
        (("spec", "serviceCIDR"), "10.96.0.0/24", "spec.serviceCIDR", "room for 254 Services"),
        (("spec", "serviceCIDR"), "10.96.0.0/33", "spec.serviceCIDR", ""),
        (
            ("spec", "pools", 0, "labels", GPU_PRODUCT_LABEL),
            "NVIDIA H100",
            f"spec.pools[0].labels.{GPU_PRODUCT_LABEL}",
            "'NVIDIA H100' is not a valid label value",
        ),
        (
            ("spec", "pools", 0, "labels", "zone"),
            "a" * 64,
            "spec.pools[0].labels.zone",
            "is not a valid label value",
        ),
        (
            ("spec", "pools", 0, "taints"),
            [{"key": "gpu", "effect": "NoRun"}],
            "spec.pools[0].taints[0].effect",
            "'NoRun' is not NoSchedule, PreferNoSchedule or NoExecute",
        ),
        (
            ("spec", "pools", 0, "taints"),
            [{"effect": "NoSchedule"}],
            "spec.pools[0].taints[0]",
            "needs a 'key'",
        ),
        (("kind",), "Cluster", "kind", "must be ClusterSpec, not 'Cluster'"),
        (("metadata", "name"), "GPU Fleet", "metadata.name", "is not a DNS label"),
        (("spec",), None, "spec", "is missing or not a mapping"),
    ],
)
def test_a_malformed_spec_is_rejected_naming_the_file_and_the_field(
    change: tuple[str | int, ...], value: Any, field: str, complaint: str
) -> None:
    with pytest.raises(SpecError) as caught:
        parse_spec(broken(change, value), source="fleet.yaml")
    message = str(caught.value)
    assert message.startswith(f"fleet.yaml: {field}: "), message
    assert complaint in message


def test_a_spec_that_is_not_a_mapping_is_rejected() -> None:
    with pytest.raises(SpecError, match=r"^fleet.yaml: top level: must be a mapping"):
        parse_spec(["not", "a", "spec"], source="fleet.yaml")


@pytest.mark.parametrize("quantity", ["500m", "1k", "1.5", "2Ki"])
@pytest.mark.parametrize("pool", [0, 1], ids=["gpu-pool", "standby-pool"])
def test_a_gpu_count_that_is_not_whole_devices_is_rejected_naming_the_field(
    quantity: str, pool: int
) -> None:
    # nvidia.com/gpu is an extended resource: whole devices, never a bare ValueError
    document = small_spec()
    document["spec"]["pools"][pool]["capacity"] = {GPU_RESOURCE: quantity}
    with pytest.raises(SpecError) as caught:
        parse_spec(document, source="fleet.yaml")
    assert str(caught.value) == (
        f"fleet.yaml: spec.pools[{pool}].capacity.{GPU_RESOURCE}: "
        f"{quantity!r} is not a whole number of GPUs"
    )


def test_a_missing_spec_file_names_the_path_and_the_packaged_specs(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.yaml"
    with pytest.raises(SpecError) as caught:
        load_spec(missing)
    message = str(caught.value)
    assert str(missing) in message
    assert "not found" in message
    assert DEFAULT_SPEC in message and LARGE_SPEC in message


def test_a_spec_file_that_is_not_yaml_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("spec:\n  pools: [\n    - name: gpu\n  count: {\n")
    with pytest.raises(SpecError, match=rf"^{path}: not valid YAML"):
        load_spec(path)


def test_an_empty_spec_file_is_rejected_as_not_a_mapping(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("")
    with pytest.raises(SpecError, match=rf"^{path}: top level: must be a mapping"):
        load_spec(path)
