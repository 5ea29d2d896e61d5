"""blackstart: rehearse the failures that take a GPU Kubernetes fleet down.

The distribution has one import namespace. The core package holds the CLI,
the Chaos Toolkit controls and shared helpers; the subpackages
``blackstart.actions``, ``blackstart.probes``, ``blackstart.clusters``,
``blackstart.rescue`` and ``blackstart.reports`` live in the top-level
folders of the same names, reached through the symlinks in ``blackstart/``.
"""

from __future__ import annotations

from importlib import metadata
from typing import Any

try:
    __version__ = metadata.version("blackstart")
except metadata.PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0.0.0+source"

__all__ = ["__version__", "discover"]


def discover(discover_system: bool = True) -> dict[str, Any]:
    """What ``chaos discover blackstart`` shows: the actions, the probes and the target.

    chaoslib looks this function up in the extension's top-level package.
    """
    from blackstart.discovery import discover_extension

    return discover_extension(discover_system)
