"""How the rescue images are layered (rescue/image.py), without an engine: the
controller's own layer holds only what its extras add to the shared site, and the
kind nodes the images are loaded into. Building and running the images is in
tests/kind/test_images.py."""

from __future__ import annotations

import tarfile
from pathlib import Path

import pytest

from blackstart.rescue.image import (
    SITE,
    RescueImageError,
    _extra_layer,
    _pins,
    kind_load_nodes,
)


def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


SHARED = {
    "kubernetes/__init__.py": "client",
    "kubernetes-33.1.0.dist-info/METADATA": "Name: kubernetes\nVersion: 33.1.0\n",
    "blackstart/cli.py": "main",
}


def members(layer: Path) -> dict[str, str]:
    with tarfile.open(layer) as tar:
        return {
            m.name: (tar.extractfile(m).read().decode() if m.isfile() else "/")  # type: ignore[union-attr]
            for m in tar.getmembers()
        }


def test_the_extra_layer_holds_only_what_the_extras_add_or_change(tmp_path: Path) -> None:
    shared = write(tmp_path / "shared", SHARED)
    fuller = write(
        tmp_path / "fuller",
        {
            **SHARED,
            "kopf/__init__.py": "operator",
            "kopf-1.38.0.dist-info/METADATA": "Name: kopf\nVersion: 1.38.0\n",
            "blackstart/cli.py": "main, with more",  # changed: the layer replaces it
            "kopf/__pycache__/x.cpython-311.pyc": "bytecode",
        },
    )
    count = _extra_layer(shared, fuller, tmp_path / "extra.tar")
    got = members(tmp_path / "extra.tar")
    site = SITE.lstrip("/")
    assert got == {
        f"{site}/blackstart/cli.py": "main, with more",
        f"{site}/kopf": "/",
        f"{site}/kopf-1.38.0.dist-info": "/",
        f"{site}/kopf-1.38.0.dist-info/METADATA": "Name: kopf\nVersion: 1.38.0\n",
        f"{site}/kopf/__init__.py": "operator",
    }
    assert count == 5
    with tarfile.open(tmp_path / "extra.tar") as tar:
        assert {(m.uid, m.gid, m.mtime) for m in tar.getmembers()} == {(0, 0, 0)}


def test_a_site_with_extras_that_lost_a_shared_file_is_refused(tmp_path: Path) -> None:
    shared = write(tmp_path / "shared", SHARED)
    fuller = write(tmp_path / "fuller", {k: v for k, v in SHARED.items() if "33.1.0" not in k})
    with pytest.raises(RescueImageError, match=r"kubernetes-33\.1\.0\.dist-info/METADATA"):
        _extra_layer(shared, fuller, tmp_path / "extra.tar")


def test_the_pins_are_the_shared_sites_versions_but_blackstarts(tmp_path: Path) -> None:
    site = write(
        tmp_path / "site",
        {
            **SHARED,
            "blackstart-0.1.0.dist-info/METADATA": "Name: blackstart\nVersion: 0.1.0\n",
            "PyYAML-6.0.2.dist-info/METADATA": "Name: PyYAML\nVersion: 6.0.2\n",
        },
    )
    assert _pins(site) == "PyYAML==6.0.2\nkubernetes==33.1.0\n"


@pytest.mark.parametrize(
    ("nodes", "loaded"),
    [
        (["k-control-plane", "k-worker", "k-worker2"], ["k-worker", "k-worker2"]),
        (
            ["k-external-load-balancer", "k-control-plane", "k-control-plane2", "k-worker"],
            ["k-worker"],
        ),
        (["k-control-plane"], ["k-control-plane"]),  # one node: kind leaves it untainted
        ([], []),
    ],
)
def test_the_images_go_to_the_nodes_their_pods_can_run_on(
    nodes: list[str], loaded: list[str]
) -> None:
    assert kind_load_nodes(nodes) == loaded
