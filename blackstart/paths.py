"""Where blackstart keeps what it builds and runs, outside the repository.

Everything lives under one cache folder, ``~/.cache/blackstart`` by default
(``$XDG_CACHE_HOME/blackstart`` when that is set), overridable with the
``BLACKSTART_CACHE_DIR`` environment variable or the ``--cache-dir`` flag of
the commands that take it.
"""

from __future__ import annotations

import os
from pathlib import Path

CACHE_DIR_ENV = "BLACKSTART_CACHE_DIR"
BIN_DIR_ENV = "BLACKSTART_BIN_DIR"


def cache_dir(override: str | os.PathLike[str] | None = None) -> Path:
    """The blackstart cache folder: ``override``, else the env var, else the XDG default."""
    if override:
        return Path(override).expanduser().resolve()
    env = os.environ.get(CACHE_DIR_ENV)
    if env:
        return Path(env).expanduser().resolve()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return (base / "blackstart").resolve()


def toolchain_dir(cache: Path) -> Path:
    """Versioned folders of built binaries: ``<cache>/toolchain/<component>-<version>/``."""
    return cache / "toolchain"


def clusters_dir(cache: Path) -> Path:
    """One folder per local cluster: state, kubeconfigs, logs, kernel-log files of nodes."""
    return cache / "clusters"
