"""The binary toolchain: real etcd, Kubernetes, KWOK, CoreDNS, kind, Helm and Prometheus.

Versions are pinned in ``toolchain.toml`` beside this module. For every binary
the toolchain looks, in order, at:

1. a folder of binaries the user already has (``--bin-dir`` or
   ``$BLACKSTART_BIN_DIR``), used as it is;
2. the versioned cache folder ``<cache>/toolchain/<component>-<version>/``;
3. a release mirror (``--mirror URL``), for users with internet access;
4. a build from the component's Go module through the Go module proxy, in a
   small wrapper module (``CGO_ENABLED=0``), which is what works here.

Prometheus is Debian's ``prometheus`` package and is never built.
"""

from __future__ import annotations

import io
import json
import os
import platform
import shutil
import subprocess
import tarfile
import time
import tomllib
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from blackstart.paths import BIN_DIR_ENV, toolchain_dir

Progress = Callable[[str], None]


class ToolchainError(RuntimeError):
    """A binary is missing and cannot be had; the message says how to get it."""


@dataclass(frozen=True)
class Component:
    """One pinned upstream project and the binaries blackstart takes from it."""

    name: str
    version: str
    module: str = ""
    binaries: dict[str, str] = field(default_factory=dict)
    ldflags: tuple[str, ...] = ()
    also_require: tuple[str, ...] = ()
    staging_version: str = ""
    mirror_path: str = ""
    apt_package: str = ""
    system_path: str = ""
    #: "" for the binaries blackstart runs itself; "node-image" for what only
    #: the kind node image holds (kept apart: an etcd of another version).
    group: str = ""

    @property
    def cache_folder(self) -> str:
        return f"{self.name}-{self.version}"

    def format(self, template: str, binary: str = "") -> str:
        return template.format(
            version=self.version,
            version_nov=self.version.removeprefix("v"),
            arch=go_arch(),
            name=binary,
        )


def go_arch() -> str:
    machine = platform.machine().lower()
    return {"x86_64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(machine, machine)


#: Tables of toolchain.toml that hold settings, not binaries.
SETTINGS_TABLES = ("node-image",)
NODE_IMAGE_GROUP = "node-image"


def load_toml(text: str | None = None) -> dict[str, dict[str, object]]:
    """``toolchain.toml`` (or ``text`` for tests) as a mapping of its tables."""
    if text is None:
        text = resources.files("blackstart.clusters").joinpath("toolchain.toml").read_text()
    return tomllib.loads(text)


def load_pins(text: str | None = None, group: str | None = "") -> dict[str, Component]:
    """Read the pinned versions (``toolchain.toml``, or ``text`` for tests).

    ``group`` keeps only that group's components ("": the toolchain blackstart
    runs itself; None: every component). A table with ``same_as = "<other>"``
    takes the other table's version, module, ldflags and staging version
    unless it sets them itself.
    """
    data = load_toml(text)
    pins: dict[str, Component] = {}
    for name, raw in data.items():
        if name in SETTINGS_TABLES:
            continue
        entry: dict[str, Any] = dict(raw)
        if "same_as" in entry:
            base = data.get(str(entry["same_as"]))
            if base is None:
                raise ToolchainError(f"toolchain.toml: [{name}] same_as names no table")
            for key in ("version", "module", "ldflags", "staging_version"):
                if key in base:
                    entry.setdefault(key, base[key])
        if "version" not in entry and "apt_package" not in entry:
            raise ToolchainError(
                f"toolchain.toml: [{name}] has neither 'version' nor 'apt_package'"
            )
        pins[name] = Component(
            name=name,
            version=str(entry.get("version", "")),
            module=str(entry.get("module", "")),
            binaries={str(k): str(v) for k, v in entry.get("binaries", {}).items()},
            ldflags=tuple(entry.get("ldflags", ())),
            also_require=tuple(entry.get("also_require", ())),
            staging_version=str(entry.get("staging_version", "")),
            mirror_path=str(entry.get("mirror_path", "")),
            apt_package=str(entry.get("apt_package", "")),
            system_path=str(entry.get("path", "")),
            group=str(entry.get("group", "")),
        )
    if group is not None:
        pins = {key: comp for key, comp in pins.items() if comp.group == group}
    return pins


@dataclass
class Toolchain:
    """Resolved paths of every binary, and where each came from."""

    paths: dict[str, Path]
    sources: dict[str, str]
    versions: dict[str, str]
    path_dir: Path

    def binary(self, name: str) -> Path:
        try:
            return self.paths[name]
        except KeyError:
            raise ToolchainError(
                f"binary {name!r} is not in the toolchain; run `blackstart toolchain install`"
            ) from None

    def env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """An environment whose PATH starts with the toolchain (kwokctl runs kubectl)."""
        env = dict(os.environ if base is None else base)
        env["PATH"] = f"{self.path_dir}{os.pathsep}{env.get('PATH', '')}"
        return env


def _executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def _bin_dir(bin_dir: str | os.PathLike[str] | None) -> Path | None:
    chosen = bin_dir or os.environ.get(BIN_DIR_ENV)
    if not chosen:
        return None
    folder = Path(chosen).expanduser()
    if not folder.is_dir():
        raise ToolchainError(f"--bin-dir / ${BIN_DIR_ENV} names {folder}, which is not a folder")
    return folder


def resolve(
    cache: Path,
    bin_dir: str | os.PathLike[str] | None = None,
    pins: dict[str, Component] | None = None,
    group: str = "",
) -> tuple[Toolchain, list[tuple[Component, str]]]:
    """Find every pinned binary of ``group`` without building anything.

    Returns the toolchain of what was found and the (component, binary) pairs
    still missing.
    """
    pins = pins if pins is not None else load_pins(group=group)
    user_bins = _bin_dir(bin_dir)
    root = toolchain_dir(cache)
    paths: dict[str, Path] = {}
    sources: dict[str, str] = {}
    versions: dict[str, str] = {}
    missing: list[tuple[Component, str]] = []
    for comp in pins.values():
        names = list(comp.binaries) or ([comp.name] if comp.apt_package else [])
        for name in names:
            candidates: list[tuple[Path, str]] = []
            # A node-image binary may share its name with one of another
            # version (etcd): only its own cache folder counts.
            shared = not comp.group
            if user_bins is not None and shared:
                candidates.append((user_bins / name, "bin-dir"))
            if comp.apt_package:
                if comp.system_path:
                    candidates.append((Path(comp.system_path), f"debian:{comp.apt_package}"))
                found = shutil.which(name)
                if found:
                    candidates.append((Path(found), "PATH"))
            else:
                candidates.append((root / comp.cache_folder / name, "cache"))
            # what an earlier `install --bin-dir` linked into <cache>/toolchain/bin
            link = root / "bin" / name
            if link.is_symlink() and shared:
                candidates.append((link.resolve(), "linked"))
            hit = next(((p, s) for p, s in candidates if _executable(p)), None)
            if hit is None:
                missing.append((comp, name))
                continue
            paths[name], sources[name] = hit
            versions[name] = comp.version or comp.apt_package
    return Toolchain(paths, sources, versions, root / "bin"), missing


def link_path_dir(toolchain: Toolchain) -> None:
    """Refresh ``<cache>/toolchain/bin``: one symlink per binary, for PATH."""
    toolchain.path_dir.mkdir(parents=True, exist_ok=True)
    for name, target in toolchain.paths.items():
        link = toolchain.path_dir / name
        if link.is_symlink() or link.exists():
            if link.is_symlink() and Path(os.readlink(link)) == target:
                continue
            link.unlink()
        link.symlink_to(target)


def install(
    cache: Path,
    bin_dir: str | os.PathLike[str] | None = None,
    mirror: str | None = None,
    go: str | None = None,
    progress: Progress = print,
    pins: dict[str, Component] | None = None,
    group: str = "",
) -> Toolchain:
    """Make every pinned binary of ``group`` available; build what is missing. Idempotent.

    Only the default group is linked into ``<cache>/toolchain/bin`` (PATH).
    """
    pins = pins if pins is not None else load_pins(group=group)
    toolchain, missing = resolve(cache, bin_dir, pins)
    apt_missing = [(c, n) for c, n in missing if c.apt_package]
    if apt_missing:
        comp, name = apt_missing[0]
        raise ToolchainError(
            f"{name} not found at {comp.system_path or name}: install Debian's package with "
            f"`apt-get install {comp.apt_package}` (or put a {name} binary in --bin-dir)"
        )
    by_component: dict[str, list[str]] = {}
    for comp, name in missing:
        by_component.setdefault(comp.name, []).append(name)
    if by_component and not mirror:
        go = go or shutil.which("go")
        if go is None:
            wanted = ", ".join(n for names in by_component.values() for n in names)
            raise ToolchainError(
                f"missing binaries: {wanted}. No `go` on PATH to build them from their Go "
                "modules: install Go 1.24 or newer (https://go.dev/dl or `apt-get install "
                "golang`), or pass --bin-dir with prebuilt binaries, or --mirror with a "
                "release mirror URL"
            )
    for comp_name, names in by_component.items():
        comp = pins[comp_name]
        out = toolchain_dir(cache) / comp.cache_folder
        out.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        if mirror:
            progress(f"downloading {', '.join(names)} {comp.version} from {mirror}")
            download_from_mirror(comp, names, mirror, out)
        else:
            assert go is not None
            build_with_go(comp, names, cache / "build" / comp.cache_folder, out, go, progress)
        progress(f"{comp.name} {comp.version}: ready in {time.monotonic() - started:.0f} s")
    if by_component:
        toolchain, missing = resolve(cache, bin_dir, pins)
        if missing:
            raise ToolchainError("still missing after install: " + ", ".join(n for _, n in missing))
    if not group:
        link_path_dir(toolchain)
    return toolchain


def download_from_mirror(comp: Component, names: Iterable[str], mirror: str, out: Path) -> None:
    """Fetch release binaries from ``mirror`` using the component's ``mirror_path`` layout."""
    if not comp.mirror_path:
        raise ToolchainError(f"{comp.name} has no mirror layout in toolchain.toml")
    base = mirror.rstrip("/")
    fetched: dict[str, bytes] = {}
    for name in names:
        url = f"{base}/{comp.name}/{comp.format(comp.mirror_path, name)}"
        if url not in fetched:
            try:
                with urllib.request.urlopen(url, timeout=120) as response:
                    fetched[url] = response.read()
            except OSError as err:
                raise ToolchainError(f"download of {name} from {url} failed: {err}") from err
        data = fetched[url]
        if url.endswith((".tar.gz", ".tgz")):
            data = _member_of_tarball(data, name, url)
        target = out / name
        target.write_bytes(data)
        target.chmod(0o755)


def _member_of_tarball(data: bytes, name: str, url: str) -> bytes:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        for member in tar.getmembers():
            if member.isfile() and Path(member.name).name == name:
                extracted = tar.extractfile(member)
                if extracted is not None:
                    return extracted.read()
    raise ToolchainError(f"{url} holds no file named {name}")


def _go_env(go: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(CGO_ENABLED="0", GOFLAGS="-mod=mod", GOTOOLCHAIN="local", GOWORK="off")
    return env


def _run_go(go: str, args: list[str], cwd: Path) -> str:
    result = subprocess.run(
        [go, *args], cwd=cwd, env=_go_env(go), capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise ToolchainError(
            f"`go {' '.join(args)}` failed in {cwd} (exit {result.returncode}):\n"
            f"{result.stderr.strip()[-4000:]}"
        )
    return result.stdout


def module_gomod(go: str, module: str, version: str, cwd: Path) -> dict[str, object]:
    """Download ``module@version`` through the module proxy and return its go.mod as JSON."""
    info = json.loads(_run_go(go, ["mod", "download", "-json", f"{module}@{version}"], cwd))
    if "Error" in info:
        raise ToolchainError(f"go mod download {module}@{version}: {info['Error']}")
    parsed: dict[str, object] = json.loads(
        _run_go(go, ["mod", "edit", "-json", info["GoMod"]], cwd)
    )
    return parsed


def staging_replaces(gomod: dict[str, object], staging_version: str) -> dict[str, str]:
    """Map each module the release replaces with ``./staging/...`` to its published version."""
    replaces: dict[str, str] = {}
    for entry in gomod.get("Replace") or []:  # type: ignore[attr-defined]
        old, new = entry["Old"]["Path"], entry["New"]["Path"]
        if new.startswith("./staging/") or new.startswith("staging/"):
            replaces[old] = staging_version
    return replaces


def wrapper_gomod(comp: Component, gomod: dict[str, object], replaces: dict[str, str]) -> str:
    """The go.mod of the small module that builds ``comp`` from the proxy."""
    go_version = str(gomod.get("Go") or "1.24.0")
    lines = [f"module blackstart.local/build/{comp.name}", "", f"go {go_version}", ""]
    for debug in gomod.get("Godebug") or []:  # type: ignore[attr-defined]
        lines.append(f"godebug {debug['Key']}={debug['Value']}")
    lines.append("")
    lines.append(f"require {comp.module} {comp.version}")
    for extra in comp.also_require:
        lines.append(f"require {extra} {comp.version}")
    if replaces:
        lines.append("")
        lines.append("replace (")
        for path, version in sorted(replaces.items()):
            lines.append(f"\t{path} => {path} {version}")
        lines.append(")")
    return "\n".join(lines) + "\n"


def build_with_go(
    comp: Component, names: list[str], workdir: Path, out: Path, go: str, progress: Progress
) -> None:
    """Build ``names`` of ``comp`` with ``go build`` from a wrapper module in ``workdir``."""
    workdir.mkdir(parents=True, exist_ok=True)
    progress(f"{comp.name} {comp.version}: resolving {comp.module} through the Go module proxy")
    gomod = module_gomod(go, comp.module, comp.version, workdir)
    replaces = staging_replaces(gomod, comp.staging_version) if comp.staging_version else {}
    (workdir / "go.mod").write_text(wrapper_gomod(comp, gomod, replaces))
    ldflags = " ".join(["-s", "-w", *(comp.format(flag) for flag in comp.ldflags)])
    for name in names:
        package = comp.binaries[name]
        started = time.monotonic()
        progress(f"building {name} from {package}@{comp.version} (cold builds take minutes)")
        _run_go(
            go, ["build", "-trimpath", "-ldflags", ldflags, "-o", str(out / name), package], workdir
        )
        progress(f"built {name} in {time.monotonic() - started:.0f} s")
