"""The kind provider's interface, the node image recipe and the in-node component commands,
checked without Docker."""

from __future__ import annotations

import inspect
import json
import tarfile
from dataclasses import replace
from pathlib import Path

import pytest

from blackstart.clusters import kind_components as kc
from blackstart.clusters.image_archive import ImageSpec, binary_layer, write_archive
from blackstart.clusters.kind_provider import KindProvider
from blackstart.clusters.node_image import (
    check_image_names,
    inputs_digest,
    load_settings,
    node_image_tag,
)
from blackstart.clusters.node_rootfs import NodeImageError, install_node_files, node_files
from blackstart.clusters.provider import ClusterError, ClusterProvider
from blackstart.clusters.toolchain import NODE_IMAGE_GROUP, load_pins

KUBEADM_IMAGES = [
    "registry.k8s.io/kube-apiserver:v1.33.13",
    "registry.k8s.io/kube-controller-manager:v1.33.13",
    "registry.k8s.io/kube-scheduler:v1.33.13",
    "registry.k8s.io/kube-proxy:v1.33.13",
    "registry.k8s.io/coredns/coredns:v1.12.0",
    "registry.k8s.io/pause:3.10",
    "registry.k8s.io/etcd:3.5.24-0",
]


def test_the_kind_provider_is_a_cluster_provider(tmp_path: Path) -> None:
    provider = KindProvider(tmp_path)
    assert isinstance(provider, ClusterProvider)
    assert provider.name == "kind"


@pytest.mark.parametrize(
    "operation",
    [
        name
        for name, member in vars(ClusterProvider).items()
        if callable(member) and not name.startswith("_")
    ],
)
def test_each_operation_takes_the_protocols_parameters(operation: str) -> None:
    wanted = list(inspect.signature(getattr(ClusterProvider, operation)).parameters)
    actual = list(inspect.signature(getattr(KindProvider, operation)).parameters)
    assert actual[: len(wanted)] == wanted
    extra = inspect.signature(getattr(KindProvider, operation)).parameters
    assert all(extra[p].default is not inspect.Parameter.empty for p in actual[len(wanted) :])


def test_the_node_image_pins_match_what_kubeadm_names() -> None:
    pins = load_pins(group=NODE_IMAGE_GROUP)
    settings = load_settings()
    mapping = check_image_names(
        KUBEADM_IMAGES,
        pins["etcd-node"].version,
        pins["coredns-node"].version,
        settings.pause_version,
    )
    assert mapping["registry.k8s.io/etcd:3.5.24-0"] == "etcd"
    assert mapping["registry.k8s.io/coredns/coredns:v1.12.0"] == "coredns"
    assert set(mapping.values()) >= {"kube-apiserver", "kube-proxy", "pause"}
    assert node_image_tag() == "blackstart/kind-node:v1.33.13"


def test_a_kubeadm_that_wants_another_etcd_fails_naming_the_pin_to_change() -> None:
    wanted = [n.replace("3.5.24-0", "3.6.0-0") for n in KUBEADM_IMAGES]
    with pytest.raises(NodeImageError, match=r"etcd:3.6.0-0 .* pins etcd 3.5.24.*toolchain.toml"):
        check_image_names(wanted, "v3.5.24", "v1.12.0", "3.10")


def test_the_node_image_groups_stay_out_of_the_local_toolchain() -> None:
    local = load_pins(group="")
    node = load_pins(group=NODE_IMAGE_GROUP)
    assert local["etcd"].version != node["etcd-node"].version
    assert {"kubelet", "kubeadm", "kube-proxy"} <= set(node["kubernetes-node"].binaries)
    # same_as: the node binaries take the control plane's version and ldflags.
    assert node["kubernetes-node"].version == local["kubernetes"].version
    assert node["kubernetes-node"].ldflags == local["kubernetes"].ldflags


def test_the_image_is_rebuilt_when_a_pin_or_a_node_file_changes() -> None:
    settings = load_settings()
    pins = {**load_pins(group=""), **load_pins(group=NODE_IMAGE_GROUP)}
    files = node_files()
    digest = inputs_digest(settings, pins, files)
    assert digest == inputs_digest(settings, pins, files)
    bumped = {**pins, "etcd-node": replace(pins["etcd-node"], version="v3.5.25")}
    assert inputs_digest(settings, bumped, files) != digest
    edited = {**files, "entrypoint": files["entrypoint"] + "\n# changed\n"}
    assert inputs_digest(settings, pins, edited) != digest


def test_component_images_are_a_docker_archive_ctr_can_import(tmp_path: Path) -> None:
    binary = tmp_path / "etcd"
    binary.write_bytes(b"\x7fELF fake etcd")
    layer = binary_layer(tmp_path / "etcd.tar", {"/usr/local/bin/etcd": binary})
    name = "registry.k8s.io/etcd:3.5.24-0"
    write_archive(tmp_path / "images.tar", [ImageSpec(name, (layer,), entrypoint=("etcd",))])
    with tarfile.open(tmp_path / "images.tar") as archive:
        manifest = json.load(archive.extractfile("manifest.json"))  # type: ignore[arg-type]
        assert manifest[0]["RepoTags"] == [name]
        config = json.load(archive.extractfile(manifest[0]["Config"]))  # type: ignore[arg-type]
        layer_name = manifest[0]["Layers"][0]
        assert config["rootfs"]["diff_ids"] == ["sha256:" + layer_name.split("/")[0]]
        assert config["config"]["Entrypoint"] == ["etcd"]
        with tarfile.open(fileobj=archive.extractfile(layer_name)) as inner:
            members = {m.name: m for m in inner.getmembers()}
    assert members["usr/local/bin/etcd"].mode == 0o755
    assert members["tmp"].mode == 0o1777
    assert "etc/passwd" in members


def test_the_node_files_give_kind_what_it_reads_and_systemd_what_it_starts(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "sbin").mkdir(parents=True)
    (root / "sbin/init").symlink_to("/lib/systemd/systemd")
    (root / "usr/bin").mkdir(parents=True)
    (root / "etc/systemd").mkdir(parents=True)
    kubelet = tmp_path / "kubelet"
    kubelet.write_text("#!/bin/sh\n")
    install_node_files(root, {"kubelet": kubelet}, "v1.33.13", "registry.k8s.io/pause:3.10")
    assert (root / "kind/version").read_text() == "v1.33.13"
    assert (
        "would you kindly template this file"
        in (root / "kind/manifests/default-cni.yaml").read_text()
    )
    config = (root / "etc/containerd/config.toml").read_text()
    assert 'sandbox_image = "registry.k8s.io/pause:3.10"' in config
    assert "restrict_oom_score_adj = true" in config
    wants = root / "etc/systemd/system/multi-user.target.wants"
    assert {p.name for p in wants.iterdir()} == {
        "containerd.service",
        "kubelet.service",
        "blackstart-node-network.service",
    }
    assert (root / "usr/bin/kubelet").stat().st_mode & 0o111
    assert "ReadKMsg=no" in (root / "etc/systemd/journald.conf").read_text()


def test_parking_a_manifest_moves_it_out_of_kubelets_folder() -> None:
    park = kc.park_script("etcd")
    assert "mv /etc/kubernetes/manifests/etcd.yaml /etc/kubernetes/etcd.yaml.blackstart" in park
    unpark = kc.unpark_script("etcd")
    assert "mv /etc/kubernetes/etcd.yaml.blackstart-stopped /etc/kubernetes/manifests/" in unpark
    with pytest.raises(ClusterError, match="unknown component 'kube-dns'"):
        kc.check_component("kube-dns")


def test_the_newest_running_container_of_a_component_is_the_one_acted_on() -> None:
    listing = {
        "containers": [
            {
                "id": "old",
                "metadata": {"name": "kube-apiserver", "attempt": 0},
                "state": "CONTAINER_EXITED",
                "createdAt": "100",
                "labels": {"io.kubernetes.pod.name": "kube-apiserver-x"},
            },
            {
                "id": "new",
                "metadata": {"name": "kube-apiserver", "attempt": 1},
                "state": "CONTAINER_RUNNING",
                "createdAt": "200",
                "labels": {},
            },
        ]
    }
    containers = kc.parse_containers(json.dumps(listing))
    newest = kc.newest(containers, "kube-apiserver")
    assert newest is not None and newest.id == "new" and newest.running
    assert [c.id for c in kc.running_named(containers, "kube-apiserver")] == ["new"]
    assert kc.parse_pid(json.dumps({"info": {"pid": 4242}})) == 4242
    assert kc.process_state("Name:\tetcd\nState:\tT (stopped)\n") == "T"
    with pytest.raises(ClusterError, match="no pid"):
        kc.parse_pid(json.dumps({"info": {"pid": 0}}))
