"""The kind provider's config generation: no Docker, no cluster, only the files and commands."""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from blackstart.clusters.kind import (
    KMSG_CONTAINER_PATH,
    SPEC_NODE_LABEL,
    KindError,
    KindPlan,
    kind_config,
    kind_config_schema,
    kind_create_command,
    kind_worker_name,
    kubelet_may_set_label,
    plan_kind_cluster,
    post_create_commands,
    post_create_fixups,
    read_node_map,
    render_kind_config,
    resolve_kind_node,
    split_node_labels,
    start_apiserver_command,
    stop_apiserver_command,
    write_kind_config,
)
from blackstart.clusters.kind_provider import KindProvider
from blackstart.clusters.spec import (
    LARGE_SPEC,
    POOL_LABEL,
    ROLE_LABEL,
    STANDBY_LABEL,
    ClusterSpec,
    load_spec,
    parse_spec,
)
from blackstart.clusters.state import ClusterNotFound
from blackstart.clusters.toolchain import load_pins

KIND_TYPES = Path("pkg/apis/config/v1alpha4/types.go")


def kind_types_go() -> Path:
    """kind's config types at the pinned version, from the Go module cache.

    Found as the toolchain finds modules when it builds kind: ``go mod download
    -json <module>@<version>`` names the folder in ``$(go env GOMODCACHE)``,
    fetching it through the module proxy when the cache lacks it. No ``go`` is a
    failure naming what to install, never a skip.
    """
    kind = load_pins()["kind"]
    go = shutil.which("go")
    if go is None:
        pytest.fail(
            f"this test reads kind's Go types ({kind.module}@{kind.version}) from the Go module "
            "cache: install Go 1.24 or newer (.ci/bootstrap needs it too)",
            pytrace=False,
        )
    done = subprocess.run(
        [go, "mod", "download", "-json", f"{kind.module}@{kind.version}"],
        env={**os.environ, "GOTOOLCHAIN": "local", "GOWORK": "off", "GOFLAGS": "-mod=mod"},
        cwd=Path(__file__).parent,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    info = json.loads(done.stdout or "{}")
    if done.returncode != 0 or "Dir" not in info:
        pytest.fail(
            f"`go mod download -json {kind.module}@{kind.version}` failed (exit {done.returncode}):"
            f" {info.get('Error') or done.stderr.strip()[-500:]}",
            pytrace=False,
        )
    return Path(info["Dir"]) / KIND_TYPES


@pytest.fixture
def fleet_plan(tmp_path: Path) -> KindPlan:
    return plan_kind_cluster(load_spec(), "fleet", tmp_path / "state")


@pytest.fixture
def labelled_spec() -> ClusterSpec:
    """A small spec whose labels include ones kubelet refuses at registration."""
    return parse_spec(
        {
            "kind": "ClusterSpec",
            "metadata": {"name": "labelled"},
            "spec": {
                "pools": [
                    {
                        "name": "gpu",
                        "role": "gpu",
                        "count": 2,
                        "labels": {
                            "node-role.kubernetes.io/gpu": "",
                            "example.k8s.io/rack": "r1",
                            "node-restriction.kubernetes.io/tier": "a",
                            "node.kubernetes.io/instance-type": "gpu-h100x8",
                            "topology.kubernetes.io/zone": "zone-a",
                            "nvidia.com/gpu.present": "true",
                        },
                        "capacity": {"nvidia.com/gpu": "8"},
                        "taints": [{"key": "nvidia.com/gpu", "value": "present"}],
                    },
                    {"name": "standby", "role": "standby", "count": 1},
                ]
            },
        },
        source="labelled.yaml",
    )


def workers(config: dict[str, Any]) -> list[dict[str, Any]]:
    return [n for n in config["nodes"] if n.get("role") == "worker"]


# --- shape of the config ----------------------------------------------------


def test_default_spec_gives_one_control_plane_and_a_worker_per_spec_node(
    fleet_plan: KindPlan,
) -> None:
    config = fleet_plan.config()
    assert config["kind"] == "Cluster"
    assert config["apiVersion"] == "kind.x-k8s.io/v1alpha4"
    assert config["name"] == "fleet"
    roles = [n["role"] for n in config["nodes"]]
    assert roles.count("control-plane") == 1
    assert roles[0] == "control-plane"
    assert roles.count("worker") == 60 == len(load_spec().nodes())


def test_the_spec_service_cidr_becomes_the_kind_service_subnet(fleet_plan: KindPlan) -> None:
    assert fleet_plan.config()["networking"] == {
        "serviceSubnet": load_spec().service_cidr,
        "apiServerAddress": "127.0.0.1",
    }


def test_every_worker_carries_its_spec_labels_but_not_the_hostname(
    fleet_plan: KindPlan,
) -> None:
    for node, spec_node in zip(workers(fleet_plan.config()), load_spec().nodes(), strict=True):
        expected = {k: v for k, v in spec_node.labels.items() if k != "kubernetes.io/hostname"}
        expected[SPEC_NODE_LABEL] = spec_node.name
        assert node["labels"] == expected
        assert node["labels"][POOL_LABEL] == spec_node.pool
        assert node["labels"][ROLE_LABEL] == spec_node.role
        assert "kubernetes.io/hostname" not in node["labels"]


def test_the_default_spec_needs_no_labels_after_creation(fleet_plan: KindPlan) -> None:
    # instance-type and zone are in kubelet's allowed set, so they stay in the config.
    assert all(not w.post_create_labels for w in fleet_plan.workers)
    gpu_labels = workers(fleet_plan.config())[0]["labels"]
    assert gpu_labels["node.kubernetes.io/instance-type"] == "gpu-h100x8"
    assert gpu_labels["topology.kubernetes.io/zone"] == "zone-a"


def test_each_worker_mounts_its_own_kernel_log_file(fleet_plan: KindPlan) -> None:
    host_paths = []
    for node, worker in zip(workers(fleet_plan.config()), fleet_plan.workers, strict=True):
        assert node["extraMounts"] == [
            {
                "hostPath": str(fleet_plan.state_dir / "kmsg" / f"{worker.spec_name}.log"),
                "containerPath": KMSG_CONTAINER_PATH,
                "readOnly": False,
            }
        ]
        host_paths.append(node["extraMounts"][0]["hostPath"])
    assert len(set(host_paths)) == 60
    assert all(Path(p).is_absolute() for p in host_paths)


def test_the_control_plane_gets_no_labels_and_no_kernel_log(fleet_plan: KindPlan) -> None:
    assert fleet_plan.config()["nodes"][0] == {"role": "control-plane"}


def test_a_node_image_pins_every_node(tmp_path: Path) -> None:
    config = kind_config(load_spec(), "fleet", tmp_path, node_image="kindest/node:v1.33.1")
    assert {n["image"] for n in config["nodes"]} == {"kindest/node:v1.33.1"}


@pytest.mark.parametrize("name", ["Fleet", "fleet_1", "", "x" * 51])
def test_a_name_kind_would_refuse_is_rejected_up_front(tmp_path: Path, name: str) -> None:
    with pytest.raises(KindError, match="kind cluster name"):
        plan_kind_cluster(load_spec(), name, tmp_path)


# --- labels kubelet refuses -------------------------------------------------


@pytest.mark.parametrize(
    ("key", "allowed"),
    [
        ("blackstart.dev/pool", True),
        ("nvidia.com/gpu.product", True),
        ("plain", True),
        ("kubernetes.io/hostname", True),
        ("kubernetes.io/arch", True),
        ("beta.kubernetes.io/instance-type", True),
        ("failure-domain.beta.kubernetes.io/zone", True),
        ("topology.kubernetes.io/zone", True),
        ("topology.kubernetes.io/region", True),
        ("node.kubernetes.io/instance-type", True),
        ("node.kubernetes.io/anything", True),
        ("kubelet.kubernetes.io/anything", True),
        ("foo.node.kubernetes.io/x", True),
        ("node-role.kubernetes.io/gpu", False),
        ("node-restriction.kubernetes.io/tier", False),
        ("kubernetes.io/role", False),
        ("topology.kubernetes.io/rack", False),
        ("example.k8s.io/rack", False),
        ("k8s.io/x", False),
        ("notkubernetes.io/x", True),
    ],
)
def test_kubelet_label_rule_matches_kubelets_own_check(key: str, allowed: bool) -> None:
    assert kubelet_may_set_label(key) is allowed


def test_labels_kubelet_refuses_are_moved_to_after_creation(
    tmp_path: Path, labelled_spec: ClusterSpec
) -> None:
    plan = plan_kind_cluster(labelled_spec, "lab", tmp_path)
    refused = {
        "node-role.kubernetes.io/gpu": "",
        "example.k8s.io/rack": "r1",
        "node-restriction.kubernetes.io/tier": "a",
    }
    gpu0 = plan.workers[0]
    assert gpu0.post_create_labels == refused
    assert not set(refused) & set(workers(plan.config())[0]["labels"])
    assert workers(plan.config())[0]["labels"]["nvidia.com/gpu.present"] == "true"

    commands = post_create_commands(plan, "kubectl", "/k/config")
    assert [
        "kubectl", "--kubeconfig", "/k/config", "label", "node", "lab-worker",
        "node-role.kubernetes.io/gpu=", "example.k8s.io/rack=r1",
        "node-restriction.kubernetes.io/tier=a", "--overwrite",
    ] in commands  # fmt: skip


def test_split_drops_the_hostname_from_both_sides() -> None:
    at_registration, after_creation = split_node_labels(
        {"kubernetes.io/hostname": "gpu-0", "a.io/b": "c", "node-role.kubernetes.io/x": ""}
    )
    assert at_registration == {"a.io/b": "c"}
    assert after_creation == {"node-role.kubernetes.io/x": ""}


def test_spec_taints_are_applied_after_creation(tmp_path: Path, labelled_spec: ClusterSpec) -> None:
    plan = plan_kind_cluster(labelled_spec, "lab", tmp_path)
    commands = post_create_commands(plan, "kubectl", "/k/config")
    for kind_name in ("lab-worker", "lab-worker2"):
        assert [
            "kubectl", "--kubeconfig", "/k/config", "taint", "node", kind_name,
            "nvidia.com/gpu=present:NoSchedule", "--overwrite",
        ] in commands  # fmt: skip


# --- standby workers ---------------------------------------------------------


def test_standby_workers_get_a_standby_label_and_a_cordon(fleet_plan: KindPlan) -> None:
    standbys = [w for w in fleet_plan.workers if w.standby]
    assert [w.spec_name for w in standbys] == [f"standby-{i}" for i in range(4)]
    commands = post_create_commands(fleet_plan, "kubectl", "/k/config")
    base = ["kubectl", "--kubeconfig", "/k/config"]
    expected = []
    for worker in standbys:
        expected.append(
            [*base, "label", "node", worker.kind_name, f"{STANDBY_LABEL}=true", "--overwrite"]
        )
        expected.append([*base, "cordon", worker.kind_name])
    # In the default spec only the standbys need anything after creation.
    assert commands == expected
    assert [w.kind_name for w in standbys] == [f"fleet-worker{n}" for n in range(57, 61)]


def test_the_fixups_also_come_as_node_patches(fleet_plan: KindPlan) -> None:
    fixups = post_create_fixups(fleet_plan)
    assert [f.spec_name for f in fixups] == [f"standby-{i}" for i in range(4)]
    assert fixups[0].patch() == {
        "metadata": {"labels": {STANDBY_LABEL: "true"}},
        "spec": {"unschedulable": True},
    }


def test_post_create_commands_default_to_the_plans_kubeconfig(fleet_plan: KindPlan) -> None:
    command = post_create_commands(fleet_plan)[0]
    assert command[:3] == ["kubectl", "--kubeconfig", str(fleet_plan.state_dir / "kubeconfig")]


# --- spec node -> kind node mapping ------------------------------------------


def test_worker_names_follow_kinds_namer() -> None:
    assert [kind_worker_name("c", i) for i in range(4)] == [
        "c-worker", "c-worker2", "c-worker3", "c-worker4",
    ]  # fmt: skip


def test_worker_n_is_spec_node_n_and_the_order_is_stable(
    tmp_path: Path, fleet_plan: KindPlan
) -> None:
    node_map = fleet_plan.node_map()
    spec_names = [n.name for n in load_spec().nodes()]
    assert list(node_map) == spec_names
    assert list(node_map.values()) == [kind_worker_name("fleet", i) for i in range(60)]
    assert node_map["gpu-0"] == "fleet-worker"
    assert node_map["cpu-0"] == "fleet-worker49"
    again = plan_kind_cluster(load_spec(), "fleet", tmp_path / "state").node_map()
    assert list(again.items()) == list(node_map.items())


def test_nodes_resolve_by_spec_name_or_kind_name(fleet_plan: KindPlan) -> None:
    assert fleet_plan.kind_node("gpu-2") == "fleet-worker3"
    assert fleet_plan.kind_node("fleet-worker3") == "fleet-worker3"
    assert fleet_plan.kind_node("fleet-control-plane") == "fleet-control-plane"
    with pytest.raises(KindError, match=r"node 'gpu-99' is not in kind cluster 'fleet'"):
        fleet_plan.kind_node("gpu-99")
    with pytest.raises(KindError, match="no workers"):
        resolve_kind_node("x", "empty", {})


# --- files ----------------------------------------------------------------


def test_writing_creates_config_node_map_and_empty_kernel_logs(fleet_plan: KindPlan) -> None:
    stale = fleet_plan.workers[0].kmsg_host_path
    stale.parent.mkdir(parents=True)
    stale.write_text("NVRM: Xid (PCI:0000:01:00): 79, old line from a previous cluster\n")

    path = write_kind_config(fleet_plan)

    assert path == fleet_plan.config_path
    assert yaml.safe_load(path.read_text()) == fleet_plan.config()
    for worker in fleet_plan.workers:
        assert worker.kmsg_host_path.is_file()
        assert worker.kmsg_host_path.stat().st_size == 0
    assert read_node_map(fleet_plan.state_dir) == fleet_plan.node_map()
    assert json.loads(fleet_plan.node_map_path.read_text()) == fleet_plan.node_map()


def test_reading_a_missing_node_map_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(KindError, match=r"kind-nodes\.json not found"):
        read_node_map(tmp_path)


def test_yaml_round_trips_with_string_label_values(
    fleet_plan: KindPlan, labelled_spec: ClusterSpec, tmp_path: Path
) -> None:
    for plan in (fleet_plan, plan_kind_cluster(labelled_spec, "lab", tmp_path)):
        loaded = yaml.safe_load(render_kind_config(plan))
        assert loaded == plan.config()
        for node in workers(loaded):
            assert all(isinstance(v, str) for v in node["labels"].values())


# --- kind's schema -------------------------------------------------------------


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    loaded: dict[str, Any] = kind_config_schema()
    jsonschema.Draft202012Validator.check_schema(loaded)
    return loaded


@pytest.mark.parametrize("spec_name", [None, LARGE_SPEC])
def test_generated_configs_satisfy_kinds_schema(
    tmp_path: Path, schema: dict[str, Any], labelled_spec: ClusterSpec, spec_name: str | None
) -> None:
    config = kind_config(load_spec(spec_name), "fleet", tmp_path, node_image="kindest/node:v1.33.1")
    jsonschema.validate(config, schema)
    jsonschema.validate(kind_config(labelled_spec, "lab", tmp_path), schema)
    jsonschema.validate(yaml.safe_load(render_kind_config(
        plan_kind_cluster(labelled_spec, "lab", tmp_path))), schema)  # fmt: skip


def _broken(config: dict[str, Any], how: str) -> dict[str, Any]:
    bad = copy.deepcopy(config)
    worker = bad["nodes"][1]
    if how == "unknown cluster field":
        bad["workers"] = 3
    elif how == "unknown node field":
        worker["taints"] = []
    elif how == "unknown mount field":
        worker["extraMounts"][0]["readonly"] = True
    elif how == "bad role":
        worker["role"] = "gpu-worker"
    elif how == "bad propagation":
        worker["extraMounts"][0]["propagation"] = "Shared"
    elif how == "wrong apiVersion":
        bad["apiVersion"] = "kind.x-k8s.io/v1alpha3"
    elif how == "non-string label":
        worker["labels"]["nvidia.com/gpu.count"] = 8
    elif how == "bad cluster name":
        bad["name"] = "Fleet_1"
    return bad


@pytest.mark.parametrize(
    "how",
    [
        "unknown cluster field",
        "unknown node field",
        "unknown mount field",
        "bad role",
        "bad propagation",
        "wrong apiVersion",
        "non-string label",
        "bad cluster name",
    ],
)
def test_the_schema_rejects_a_malformed_config(
    fleet_plan: KindPlan, schema: dict[str, Any], how: str
) -> None:
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(_broken(fleet_plan.config(), how), schema)


def _go_yaml_fields(source: str) -> dict[str, set[str]]:
    """Struct name -> its yaml field names, read from kind's types.go."""
    structs: dict[str, set[str]] = {}
    for match in re.finditer(r"^type (\w+) struct \{\n(.*?)^\}", source, re.S | re.M):
        names = set(re.findall(r'yaml:"(\w+)', match.group(2)))
        if 'yaml:",inline"' in match.group(2):
            names |= {"kind", "apiVersion"}
        structs[match.group(1)] = names
    return structs


def test_the_schema_has_exactly_the_fields_of_kinds_go_types(schema: dict[str, Any]) -> None:
    structs = _go_yaml_fields(kind_types_go().read_text())
    assert set(schema["properties"]) == structs["Cluster"]
    for name in ("Node", "Networking", "PatchJSON6902", "Mount", "PortMapping"):
        assert set(schema["$defs"][name]["properties"]) == structs[name], name
    assert set(schema["$defs"]["Node"]["properties"]["role"]["enum"]) == {"control-plane", "worker"}


# --- commands the provider runs (built, not run) --------------------------------


def test_kind_create_uses_the_plans_files_and_waits(fleet_plan: KindPlan) -> None:
    assert kind_create_command(fleet_plan, "/bin/kind") == [
        "/bin/kind", "create", "cluster", "--name", "fleet",
        "--config", str(fleet_plan.config_path),
        "--kubeconfig", str(fleet_plan.kubeconfig_path), "--wait", "5m",
    ]  # fmt: skip


def test_apiserver_stop_and_start_move_the_manifest_in_the_control_plane() -> None:
    stop = stop_apiserver_command("fleet")
    start = start_apiserver_command("fleet")
    assert stop[:5] == ["docker", "exec", "fleet-control-plane", "sh", "-c"]
    assert start[:5] == ["docker", "exec", "fleet-control-plane", "sh", "-c"]
    assert "mv /etc/kubernetes/manifests/kube-apiserver.yaml /etc/kubernetes/" in stop[5]
    assert "/etc/kubernetes/manifests/kube-apiserver.yaml" in start[5].split("mv ")[1]


def test_a_missing_kind_binary_is_named_with_how_to_install_it(tmp_path: Path) -> None:
    provider = KindProvider(tmp_path, kind_binary=str(tmp_path / "no-such" / "kind"))
    with pytest.raises(KindError, match=r"no-such/kind' not found; install it with"):
        provider._clusters()


def test_a_node_of_an_unknown_cluster_is_refused_with_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(ClusterNotFound, match=r"no blackstart cluster named 'nope'"):
        KindProvider(tmp_path).kernel_log("nope", "gpu-0")
