"""The optional parts of blackstart and the Python packages each brings.

``pip install blackstart`` gives the command line, the local cluster and the
GPU Xid node agent; the rest comes with extras, so that the agent's image
carries neither Chaos Toolkit nor the report stack:

- ``blackstart[rescue]``: the self-heal controller (kopf, aiohttp);
- ``blackstart[chaos]``: the Chaos Toolkit activities, probes and controls
  (Chaos Toolkit, chaostoolkit-kubernetes, prometheus-api-client, dnspython);
- ``blackstart[reports]``: the HTML reports and charts (Jinja2, matplotlib);
- ``blackstart[all]``: all of them.

A command that needs a part that is not installed ends with an error that names
the extra to install, never with a bare ``ModuleNotFoundError``.
"""

from __future__ import annotations

__all__ = ["EXTRAS", "extra_for", "missing_extra_message"]

#: extra -> the top-level modules it brings (import names, not distribution names)
EXTRAS: dict[str, tuple[str, ...]] = {
    "rescue": ("kopf", "aiohttp"),
    "chaos": ("chaoslib", "chaostoolkit", "chaosk8s", "prometheus_api_client", "dns"),
    "reports": ("jinja2", "matplotlib"),
}


def extra_for(module: str | None) -> str | None:
    """The extra that brings ``module`` (any dotted name under it), or None."""
    if not module:
        return None
    top = module.split(".", 1)[0]
    for extra, modules in EXTRAS.items():
        if top in modules:
            return extra
    return None


def missing_extra_message(module: str, extra: str) -> str:
    return (
        f"this command needs the Python package {module!r}, which comes with "
        f"blackstart[{extra}]: pip install 'blackstart[{extra}]' (or 'blackstart[all]')"
    )
