"""The binary toolchain: pins, finding binaries, installing, and release mirrors.

Nothing here builds with Go or leaves the machine: binaries are small shell
scripts in ``tmp_path`` and the "mirror" is an HTTP server on loopback.
"""

from __future__ import annotations

import functools
import io
import os
import shutil
import tarfile
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from blackstart.clusters import toolchain as toolchain_module
from blackstart.clusters.toolchain import (
    Component,
    ToolchainError,
    download_from_mirror,
    go_arch,
    install,
    load_pins,
    resolve,
    staging_replaces,
    wrapper_gomod,
)
from blackstart.paths import BIN_DIR_ENV

# Two small Go components and Debian's prometheus, at a system path that does not exist.
SMALL_PINS = """
[etcd]
version = "v3.5.21"
module = "go.etcd.io/etcd/server/v3"
mirror_path = "{version}/etcd-{version}-linux-{arch}.tar.gz"

[etcd.binaries]
etcd = "go.etcd.io/etcd/server/v3"
etcdctl = "go.etcd.io/etcd/etcdctl/v3"

[kwok]
version = "v0.7.0"
module = "sigs.k8s.io/kwok"
mirror_path = "{version}/{name}-linux-{arch}"

[kwok.binaries]
kwok = "sigs.k8s.io/kwok/cmd/kwok"
kwokctl = "sigs.k8s.io/kwok/cmd/kwokctl"
"""


def prometheus_pins(system_path: Path) -> str:
    return f'{SMALL_PINS}\n[prometheus]\napt_package = "prometheus"\npath = "{system_path}"\n'


def fake_binary(folder: Path, name: str, executable: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(f"#!/bin/sh\necho {name}\n")
    path.chmod(0o755 if executable else 0o644)
    return path


def all_binaries(pins: dict[str, Component]) -> list[str]:
    return [name for comp in pins.values() for name in (comp.binaries or {comp.name: ""})]


@pytest.fixture(autouse=True)
def no_user_bin_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    """$BLACKSTART_BIN_DIR from the developer's shell must not leak into these tests."""
    monkeypatch.delenv(BIN_DIR_ENV, raising=False)


@pytest.fixture
def empty_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A PATH with nothing on it: no go, no prometheus."""
    nothing = tmp_path / "empty-path"
    nothing.mkdir()
    monkeypatch.setenv("PATH", str(nothing))


# --- pins ---------------------------------------------------------------------


def test_every_pinned_component_has_a_version_or_an_apt_package_and_binaries() -> None:
    pins = load_pins()
    assert set(pins) == {"kubernetes", "etcd", "kwok", "coredns", "kind", "helm", "prometheus"}
    for name, comp in pins.items():
        if comp.apt_package:
            assert comp.system_path, name
            continue
        assert comp.version.startswith("v"), name
        assert comp.module, name
        assert comp.binaries, name
        assert comp.mirror_path, name
        # each binary is built from the pinned module or one required alongside it
        modules = (comp.module, *comp.also_require)
        for package in comp.binaries.values():
            assert package.startswith(modules), (name, package)


def test_the_pinned_versions_are_the_supported_release_lines() -> None:
    pins = load_pins()
    assert pins["kubernetes"].version.startswith("v1.33.")
    assert pins["kubernetes"].staging_version == "v0." + pins["kubernetes"].version[3:]
    assert pins["etcd"].version.startswith("v3.5.")
    assert pins["kwok"].version.startswith("v0.7.")
    assert pins["coredns"].version.startswith("v1.12.")
    assert pins["kind"].version.startswith("v0.2")
    assert pins["helm"].version.startswith("v3.")
    assert pins["prometheus"].apt_package == "prometheus"


def test_the_pins_name_every_binary_the_local_cluster_runs() -> None:
    names = set(all_binaries(load_pins()))
    assert {
        "kube-apiserver",
        "kube-controller-manager",
        "kube-scheduler",
        "kubectl",
        "etcd",
        "etcdctl",
        "kwok",
        "kwokctl",
        "coredns",
        "kind",
        "helm",
        "prometheus",
    } <= names


def test_a_pin_with_neither_version_nor_apt_package_is_rejected_naming_it() -> None:
    with pytest.raises(ToolchainError, match=r"\[etcd\] has neither 'version' nor 'apt_package'"):
        load_pins('[etcd]\nmodule = "go.etcd.io/etcd/server/v3"\n')


def test_kubernetes_ldflags_stamp_the_pinned_version() -> None:
    kube = load_pins()["kubernetes"]
    stamped = [kube.format(flag) for flag in kube.ldflags]
    assert f"-X k8s.io/component-base/version.gitVersion={kube.version}" in stamped
    kwok = load_pins()["kwok"]
    assert kwok.format(kwok.ldflags[0]).endswith("Version=" + kwok.version.removeprefix("v"))


def test_helm_ldflags_stamp_the_pinned_version_and_a_current_kubernetes() -> None:
    helm = load_pins()["helm"]
    stamped = [helm.format(flag) for flag in helm.ldflags]
    # what `helm version` prints; unstamped it would print "v3.22" (the source's default)
    assert f"-X helm.sh/helm/v3/internal/version.version={helm.version}" in stamped
    # unstamped, `helm template` and `helm lint` would assume Kubernetes 1.20
    assert "-X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=37" in stamped
    assert helm.format(helm.mirror_path) == f"helm-{helm.version}-linux-{go_arch()}.tar.gz"


# --- the wrapper module that builds from the Go module proxy ------------------

# What `go mod edit -json` prints for k8s.io/kubernetes' go.mod, cut down.
KUBERNETES_GOMOD: dict[str, Any] = {
    "Module": {"Path": "k8s.io/kubernetes"},
    "Go": "1.24.0",
    "Godebug": [{"Key": "default", "Value": "go1.24"}, {"Key": "winsymlink", "Value": "0"}],
    "Require": [{"Path": "k8s.io/api", "Version": "v0.0.0"}],
    "Replace": [
        {"Old": {"Path": "k8s.io/api"}, "New": {"Path": "./staging/src/k8s.io/api"}},
        {
            "Old": {"Path": "k8s.io/client-go"},
            "New": {"Path": "./staging/src/k8s.io/client-go"},
        },
        {
            "Old": {"Path": "k8s.io/component-base"},
            "New": {"Path": "staging/src/k8s.io/component-base"},
        },
        {
            "Old": {"Path": "github.com/example/forked"},
            "New": {"Path": "github.com/example/fork", "Version": "v1.2.3"},
        },
    ],
}


def test_staging_replaces_map_each_staging_module_to_the_published_version() -> None:
    assert staging_replaces(KUBERNETES_GOMOD, "v0.33.13") == {
        "k8s.io/api": "v0.33.13",
        "k8s.io/client-go": "v0.33.13",
        "k8s.io/component-base": "v0.33.13",
    }


def test_staging_replaces_of_a_gomod_without_replace_is_empty() -> None:
    assert staging_replaces({"Module": {"Path": "x"}, "Replace": None}, "v0.33.13") == {}
    assert staging_replaces({"Module": {"Path": "x"}}, "v0.33.13") == {}


def test_the_wrapper_gomod_requires_the_component_and_replaces_staging_modules() -> None:
    kube = load_pins()["kubernetes"]
    replaces = staging_replaces(KUBERNETES_GOMOD, kube.staging_version)
    text = wrapper_gomod(kube, KUBERNETES_GOMOD, replaces)
    lines = text.splitlines()
    assert lines[0] == "module blackstart.local/build/kubernetes"
    assert "go 1.24.0" in lines
    assert "godebug default=go1.24" in lines
    assert "godebug winsymlink=0" in lines
    assert f"require k8s.io/kubernetes {kube.version}" in lines
    assert "replace (" in lines
    assert f"\tk8s.io/api => k8s.io/api {kube.staging_version}" in lines
    assert f"\tk8s.io/client-go => k8s.io/client-go {kube.staging_version}" in lines
    assert "github.com/example/forked" not in text
    assert text.endswith(")\n")


def test_the_etcd_wrapper_also_requires_etcdctl_and_has_no_replace_block() -> None:
    etcd = load_pins()["etcd"]
    text = wrapper_gomod(etcd, {"Go": "1.23"}, {})
    assert f"require go.etcd.io/etcd/server/v3 {etcd.version}" in text
    assert f"require go.etcd.io/etcd/etcdctl/v3 {etcd.version}" in text
    assert "go 1.23\n" in text
    assert "replace" not in text


# --- resolve: finding binaries without building -------------------------------


def test_resolve_finds_every_binary_in_the_bin_dir(tmp_path: Path) -> None:
    pins = load_pins()
    bin_dir = tmp_path / "bin"
    for name in all_binaries(pins):
        fake_binary(bin_dir, name)
    found, missing = resolve(tmp_path / "cache", bin_dir, pins)
    assert missing == []
    assert set(found.paths) == set(all_binaries(pins))
    assert found.paths["kube-apiserver"] == bin_dir / "kube-apiserver"
    assert set(found.sources.values()) == {"bin-dir"}
    assert found.versions["etcd"] == pins["etcd"].version
    assert found.versions["prometheus"] == "prometheus"
    assert found.path_dir == tmp_path / "cache" / "toolchain" / "bin"


def test_resolve_takes_the_bin_dir_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, empty_path: None
) -> None:
    pins = load_pins(SMALL_PINS)
    bin_dir = tmp_path / "bin"
    for name in all_binaries(pins):
        fake_binary(bin_dir, name)
    monkeypatch.setenv(BIN_DIR_ENV, str(bin_dir))
    found, missing = resolve(tmp_path / "cache", None, pins)
    assert missing == []
    assert found.sources == dict.fromkeys(all_binaries(pins), "bin-dir")


def test_a_file_in_the_bin_dir_that_is_not_executable_counts_as_missing(
    tmp_path: Path, empty_path: None
) -> None:
    pins = load_pins(SMALL_PINS)
    bin_dir = tmp_path / "bin"
    fake_binary(bin_dir, "etcd")
    fake_binary(bin_dir, "etcdctl", executable=False)
    found, missing = resolve(tmp_path / "cache", bin_dir, pins)
    assert "etcd" in found.paths
    assert "etcdctl" not in found.paths
    assert [(comp.name, name) for comp, name in missing] == [
        ("etcd", "etcdctl"),
        ("kwok", "kwok"),
        ("kwok", "kwokctl"),
    ]


def test_a_binary_in_the_versioned_cache_folder_is_found(tmp_path: Path) -> None:
    pins = load_pins(SMALL_PINS)
    cache = tmp_path / "cache"
    fake_binary(cache / "toolchain" / "kwok-v0.7.0", "kwokctl")
    found, _ = resolve(cache, None, pins)
    assert found.paths["kwokctl"] == cache / "toolchain" / "kwok-v0.7.0" / "kwokctl"
    assert found.sources["kwokctl"] == "cache"


def test_a_bin_dir_that_is_not_a_folder_is_rejected_naming_it(tmp_path: Path) -> None:
    not_a_folder = fake_binary(tmp_path, "etcd")
    with pytest.raises(ToolchainError, match=f"names {not_a_folder}, which is not a folder"):
        resolve(tmp_path / "cache", not_a_folder, load_pins(SMALL_PINS))
    with pytest.raises(ToolchainError, match="which is not a folder"):
        resolve(tmp_path / "cache", tmp_path / "nowhere", load_pins(SMALL_PINS))


def test_an_unknown_binary_of_the_toolchain_says_to_install_it(tmp_path: Path) -> None:
    found, _ = resolve(tmp_path / "cache", None, load_pins(SMALL_PINS))
    with pytest.raises(ToolchainError, match="run `blackstart toolchain install`"):
        found.binary("kube-apiserver")


def test_the_toolchain_environment_puts_its_bin_folder_first_on_path(tmp_path: Path) -> None:
    found, _ = resolve(tmp_path / "cache", None, load_pins(SMALL_PINS))
    env = found.env({"PATH": "/usr/bin", "HOME": "/root"})
    assert env["PATH"] == f"{found.path_dir}{os.pathsep}/usr/bin"
    assert env["HOME"] == "/root"


# --- install ------------------------------------------------------------------


def test_install_with_every_binary_present_links_them_without_calling_go(
    tmp_path: Path,
) -> None:
    pins = load_pins()
    bin_dir = tmp_path / "bin"
    for name in all_binaries(pins):
        fake_binary(bin_dir, name)
    cache = tmp_path / "cache"
    messages: list[str] = []
    # go="/nonexistent": any attempt to build would fail loudly
    installed = install(cache, bin_dir, go="/nonexistent", progress=messages.append, pins=pins)
    assert messages == []
    links = cache / "toolchain" / "bin"
    assert sorted(p.name for p in links.iterdir()) == sorted(all_binaries(pins))
    for name in all_binaries(pins):
        assert (links / name).is_symlink()
        assert (links / name).resolve() == bin_dir / name
    assert installed.paths["kubectl"] == bin_dir / "kubectl"
    assert not (cache / "build").exists()


def test_install_is_idempotent_and_later_resolves_find_the_linked_binaries(
    tmp_path: Path, empty_path: None
) -> None:
    pins = load_pins(SMALL_PINS)
    bin_dir = tmp_path / "bin"
    for name in all_binaries(pins):
        fake_binary(bin_dir, name)
    cache = tmp_path / "cache"
    install(cache, bin_dir, go="/nonexistent", progress=print, pins=pins)
    install(cache, bin_dir, go="/nonexistent", progress=print, pins=pins)
    found, missing = resolve(cache, None, pins)  # no --bin-dir this time
    assert missing == []
    assert found.sources == dict.fromkeys(all_binaries(pins), "linked")
    assert found.paths["kwokctl"] == bin_dir / "kwokctl"


def test_install_without_go_says_how_to_get_go_or_binaries(
    tmp_path: Path, empty_path: None
) -> None:
    assert shutil.which("go") is None
    pins = load_pins(SMALL_PINS)
    bin_dir = tmp_path / "bin"
    fake_binary(bin_dir, "etcd")
    fake_binary(bin_dir, "etcdctl")
    with pytest.raises(ToolchainError) as caught:
        install(tmp_path / "cache", bin_dir, progress=print, pins=pins)
    message = str(caught.value)
    assert message.startswith("missing binaries: kwok, kwokctl.")
    assert "install Go 1.24 or newer" in message
    assert "https://go.dev/dl" in message
    assert "--bin-dir" in message
    assert "--mirror" in message
    assert not (tmp_path / "cache" / "toolchain" / "bin").exists()


def test_install_without_prometheus_says_to_apt_get_install_it(
    tmp_path: Path, empty_path: None
) -> None:
    system_path = tmp_path / "usr-bin" / "prometheus"
    pins = load_pins(prometheus_pins(system_path))
    bin_dir = tmp_path / "bin"
    for name in ("etcd", "etcdctl", "kwok", "kwokctl"):
        fake_binary(bin_dir, name)
    with pytest.raises(ToolchainError) as caught:
        install(tmp_path / "cache", bin_dir, go="/nonexistent", progress=print, pins=pins)
    message = str(caught.value)
    assert f"prometheus not found at {system_path}" in message
    assert "`apt-get install prometheus`" in message
    assert "--bin-dir" in message


def test_prometheus_is_found_at_its_debian_path_or_on_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, empty_path: None
) -> None:
    system_path = fake_binary(tmp_path / "usr-bin", "prometheus")
    found, _ = resolve(tmp_path / "cache", None, load_pins(prometheus_pins(system_path)))
    assert found.paths["prometheus"] == system_path
    assert found.sources["prometheus"] == "debian:prometheus"

    on_path = fake_binary(tmp_path / "path-bin", "prometheus")
    monkeypatch.setenv("PATH", str(on_path.parent))
    gone = tmp_path / "nowhere" / "prometheus"
    found, _ = resolve(tmp_path / "cache", None, load_pins(prometheus_pins(gone)))
    assert found.paths["prometheus"] == on_path
    assert found.sources["prometheus"] == "PATH"


# --- release mirror -----------------------------------------------------------


# (base URL, folder it serves, request paths it saw)
Mirror = tuple[str, Path, list[str]]


class _QuietHandler(SimpleHTTPRequestHandler):
    requests: list[str]

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        type(self).requests.append(self.path)
        super().do_GET()


@pytest.fixture
def mirror(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Mirror]:
    """A release mirror on 127.0.0.1 serving ``root``; yields (url, root, requests seen)."""
    for var in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    root = tmp_path / "mirror"
    root.mkdir()
    requests: list[str] = []
    handler = type("Handler", (_QuietHandler,), {"requests": requests})

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=root))
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", root, requests
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def etcd_tarball(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o755
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


@pytest.fixture
def amd64(monkeypatch: pytest.MonkeyPatch) -> None:
    """Release file names carry the architecture; pin it so the mirror layout is fixed."""
    monkeypatch.setattr(toolchain_module.platform, "machine", lambda: "x86_64")


def test_a_plain_release_binary_is_downloaded_from_the_mirror(
    tmp_path: Path, mirror: Mirror, amd64: None
) -> None:
    url, root, requests = mirror
    release = root / "kwok" / "v0.7.0"
    release.mkdir(parents=True)
    (release / "kwokctl-linux-amd64").write_bytes(b"\x7fELF kwokctl")
    out = tmp_path / "out"
    out.mkdir()
    download_from_mirror(load_pins(SMALL_PINS)["kwok"], ["kwokctl"], url, out)
    assert (out / "kwokctl").read_bytes() == b"\x7fELF kwokctl"
    assert os.access(out / "kwokctl", os.X_OK)
    assert requests == ["/kwok/v0.7.0/kwokctl-linux-amd64"]


def test_etcd_and_etcdctl_come_out_of_one_release_tarball_fetched_once(
    tmp_path: Path, mirror: Mirror, amd64: None
) -> None:
    url, root, requests = mirror
    release = root / "etcd" / "v3.5.21"
    release.mkdir(parents=True)
    (release / "etcd-v3.5.21-linux-amd64.tar.gz").write_bytes(
        etcd_tarball(
            {
                "etcd-v3.5.21-linux-amd64/README.md": b"docs",
                "etcd-v3.5.21-linux-amd64/etcd": b"\x7fELF etcd",
                "etcd-v3.5.21-linux-amd64/etcdctl": b"\x7fELF etcdctl",
            }
        )
    )
    out = tmp_path / "out"
    out.mkdir()
    download_from_mirror(load_pins(SMALL_PINS)["etcd"], ["etcd", "etcdctl"], url, out)
    assert (out / "etcd").read_bytes() == b"\x7fELF etcd"
    assert (out / "etcdctl").read_bytes() == b"\x7fELF etcdctl"
    assert os.access(out / "etcd", os.X_OK)
    assert requests == ["/etcd/v3.5.21/etcd-v3.5.21-linux-amd64.tar.gz"]


def test_a_tarball_without_the_binary_names_the_url_and_the_binary(
    tmp_path: Path, mirror: Mirror, amd64: None
) -> None:
    url, root, _ = mirror
    release = root / "etcd" / "v3.5.21"
    release.mkdir(parents=True)
    (release / "etcd-v3.5.21-linux-amd64.tar.gz").write_bytes(
        etcd_tarball({"etcd-v3.5.21-linux-amd64/etcd": b"\x7fELF etcd"})
    )
    with pytest.raises(ToolchainError, match=r"linux-amd64.tar.gz holds no file named etcdctl"):
        download_from_mirror(load_pins(SMALL_PINS)["etcd"], ["etcdctl"], url, tmp_path)


def test_a_binary_the_mirror_does_not_have_names_the_url(
    tmp_path: Path, mirror: Mirror, amd64: None
) -> None:
    url, _, _ = mirror
    with pytest.raises(ToolchainError) as caught:
        download_from_mirror(load_pins(SMALL_PINS)["kwok"], ["kwok"], url, tmp_path)
    message = str(caught.value)
    assert f"download of kwok from {url}kwok/v0.7.0/kwok-linux-amd64 failed" in message
    assert "404" in message
    assert not (tmp_path / "kwok").exists()


def test_install_from_a_mirror_fills_the_versioned_cache_and_links_it(
    tmp_path: Path, mirror: Mirror, amd64: None, empty_path: None
) -> None:
    url, root, _ = mirror
    release = root / "kwok" / "v0.7.0"
    release.mkdir(parents=True)
    for name in ("kwok", "kwokctl"):
        (release / f"{name}-linux-amd64").write_bytes(b"#!/bin/sh\n")
    bin_dir = tmp_path / "bin"
    fake_binary(bin_dir, "etcd")
    fake_binary(bin_dir, "etcdctl")
    cache = tmp_path / "cache"
    messages: list[str] = []
    installed = install(
        cache, bin_dir, mirror=url, progress=messages.append, pins=load_pins(SMALL_PINS)
    )
    assert installed.paths["kwokctl"] == cache / "toolchain" / "kwok-v0.7.0" / "kwokctl"
    assert installed.sources["kwokctl"] == "cache"
    assert installed.sources["etcd"] == "bin-dir"
    assert (cache / "toolchain" / "bin" / "kwok").resolve() == installed.paths["kwok"]
    assert any(m.startswith("downloading kwok, kwokctl v0.7.0 from") for m in messages)


def test_a_component_without_a_mirror_layout_cannot_be_downloaded(tmp_path: Path) -> None:
    with pytest.raises(ToolchainError, match="kind has no mirror layout"):
        download_from_mirror(Component("kind", "v0.29.0"), ["kind"], "http://127.0.0.1:9", tmp_path)
