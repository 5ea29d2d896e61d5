"""The ``blackstart`` entry the controls add to a Chaos Toolkit journal's ``extensions``.

One entry per journal (``{"name": "blackstart", ...}``), shared by the
controls: the cluster control writes ``environment``, the guard ``guard``, the
metrics sampler ``metrics``, ``faults`` and ``rescue_plans``. Each control
writes only its own keys, so any subset of controls gives a valid entry.
"""

from __future__ import annotations

import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

from blackstart import __version__
from blackstart.clusters.toolchain import resolve
from blackstart.paths import cache_dir
from blackstart.target import Target

EXTENSION_NAME = "blackstart"


def blackstart_entry(journal: dict[str, Any]) -> dict[str, Any]:
    """The journal's ``blackstart`` extension entry, created when missing."""
    extensions = journal.get("extensions")
    if not isinstance(extensions, list):
        extensions = []
        journal["extensions"] = extensions
    for entry in extensions:
        if isinstance(entry, dict) and entry.get("name") == EXTENSION_NAME:
            return entry
    entry = {"name": EXTENSION_NAME}
    extensions.append(entry)
    return entry


def _prometheus_version(path: Path) -> str:
    try:
        done = subprocess.run(
            [str(path), "--version"], capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    first = (done.stdout or done.stderr).splitlines()
    parts = first[0].split() if first else []
    return parts[2] if len(parts) > 2 else "unknown"


def versions(provider: str) -> dict[str, str]:
    """Versions of what the run used: the toolchain's binaries and the libraries."""
    found: dict[str, str] = {"blackstart": __version__}
    for dist in ("chaostoolkit-lib", "chaostoolkit", "chaostoolkit-kubernetes"):
        try:
            found[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    if provider == "local":
        toolchain, _ = resolve(cache_dir())
        for key, binary in (
            ("kubernetes", "kube-apiserver"),
            ("etcd", "etcd"),
            ("kwok", "kwok"),
            ("coredns", "coredns"),
        ):
            if binary in toolchain.versions:
                found[key] = toolchain.versions[binary]
        if "prometheus" in toolchain.paths:
            found["prometheus"] = _prometheus_version(toolchain.paths["prometheus"])
    return found


def environment(target: Target) -> dict[str, Any]:
    """The ``environment`` section for ``target``."""
    spec: dict[str, Any] | None = None
    if target.state is not None and target.state.spec_path:
        try:
            loaded = yaml.safe_load(Path(target.state.spec_path).read_text())
            spec = loaded if isinstance(loaded, dict) else None
        except (OSError, yaml.YAMLError):
            spec = None
    return {
        "provider": target.provider,
        "cluster": target.cluster,
        "context": target.context,
        "spec": spec,
        "nodes": target.state.nodes if target.state is not None else None,
        "versions": versions(target.provider),
    }
