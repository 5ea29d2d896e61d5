"""The self-heal controller and its agents on a kind cluster, as users deploy them.

:func:`install_on_kind` builds (or finds current) the two images, loads them into the
cluster's nodes (:func:`.image.build_images`) and ``helm install``s the chart in
``rescue/deploy/chart`` with what a blackstart kind cluster needs:

- ``image.pullPolicy=Never``: the images are in the nodes, there is no registry;
- ``agent.kernelLog``: each node's kernel-log file (a kind node shares the host's
  ``/dev/kmsg``, so blackstart mounts a file of its own into each node);
- ``agent.hostReboot.enabled=true``: the agent reboots its node on the controller's
  ``annotation`` request (``systemctl reboot`` in the node container, which Docker
  starts again under a new boot ID).

``cluster up --provider kind --with-rescue`` and the game day on kind use it; the
kind tests install the chart through it.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Mapping
from importlib import resources
from pathlib import Path

from blackstart.clusters.kind import KMSG_CONTAINER_PATH
from blackstart.clusters.state import ClusterState

__all__ = [
    "KIND_VALUES",
    "NAMESPACE",
    "RELEASE",
    "ChartError",
    "chart_path",
    "install_on_kind",
    "uninstall",
]

RELEASE = "blackstart-rescue"
#: where the controller keeps its leader Lease: the chart's eventsNamespace (default)
LEASE_NAMESPACE = "default"
NAMESPACE = "blackstart-rescue"
#: the chart values every blackstart kind cluster needs (see the module doc)
KIND_VALUES: dict[str, str] = {
    "image.pullPolicy": "Never",
    "agent.kernelLog": KMSG_CONTAINER_PATH,
    "agent.hostReboot.enabled": "true",
}


class ChartError(RuntimeError):
    """helm could not install or remove the release; the message has its output."""


def chart_path() -> Path:
    return Path(str(resources.files("blackstart.rescue").joinpath("deploy", "chart")))


def _helm(cache: Path) -> str:
    from blackstart.clusters.toolchain import resolve

    toolchain, _missing = resolve(cache)
    if "helm" not in toolchain.paths:
        raise ChartError("helm is not installed: run `blackstart toolchain install`")
    return str(toolchain.paths["helm"])


def _run_helm(argv: list[str], what: str, timeout: float) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise ChartError(f"{what}: {(done.stderr.strip() or done.stdout.strip())[-3000:]}")


def install_on_kind(
    cache: Path,
    state: ClusterState,
    progress: Callable[[str], None] = print,
    values: Mapping[str, str] | None = None,
    timeout_s: float = 240.0,
) -> float:
    """Build and load the images, ``helm install --wait`` the chart; its seconds.

    ``values`` are ``--set`` after :data:`KIND_VALUES` (they win).
    """
    from blackstart.rescue.image import RescueImageError, build_images

    try:
        build_images(cache, progress=progress, kind_cluster=state.name)
    except RescueImageError as err:
        raise ChartError(f"the rescue images: {err}") from err
    sets = [f"{key}={value}" for key, value in {**KIND_VALUES, **(values or {})}.items()]
    argv = [
        _helm(cache), "install", RELEASE, str(chart_path()),
        "--namespace", NAMESPACE, "--create-namespace",
        "--kubeconfig", state.kubeconfig, "--wait", "--timeout", f"{timeout_s:.0f}s",
    ]  # fmt: skip
    for value in sets:
        argv += ["--set", value]
    progress(f"[{state.name}] helm install {RELEASE} (the rescue controller and agents)")
    started = time.monotonic()
    _run_helm(argv, f"helm install of the rescue chart on {state.name}", timeout_s + 60)
    # Ready pods are not yet a controller that acts: it waits for the leader Lease, which
    # an uninstalled release's controller may still hold (its RBAC can go first, so it
    # cannot give the Lease up) until it expires
    _wait_leading(state, timeout_s)
    seconds = time.monotonic() - started
    progress(f"[{state.name}] rescue controller and agents running and leading ({seconds:.0f} s)")
    return seconds


def _wait_leading(state: ClusterState, timeout_s: float) -> None:
    """Wait until a running controller pod of the release holds the leader Lease."""
    from kubernetes import client

    from blackstart.kube import api_client
    from blackstart.rescue.controller.leader import LEASE_NAME

    api = api_client(state.kubeconfig, state.context, pool_size=1)
    core, leases = client.CoreV1Api(api), client.CoordinationV1Api(api)
    selector = "app.kubernetes.io/component=controller"
    holder = ""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        pods = core.list_namespaced_pod(NAMESPACE, label_selector=selector).items
        running = [
            str(p.metadata.name)
            for p in pods
            if p.metadata is not None and p.status is not None and p.status.phase == "Running"
        ]
        try:
            lease = leases.read_namespaced_lease(LEASE_NAME, LEASE_NAMESPACE)
            holder = str((lease.spec.holder_identity if lease.spec else None) or "")
        except client.ApiException as err:
            if err.status != 404:
                raise ChartError(f"reading the Lease {LEASE_NAME}: {err.reason}") from err
        if any(holder.startswith(f"{pod}_") for pod in running):
            return
        time.sleep(0.5)
    raise ChartError(
        f"no controller pod of {NAMESPACE} took the Lease {LEASE_NAMESPACE}/{LEASE_NAME} "
        f"within {timeout_s:.0f} s (held by {holder or 'no one'})"
    )


def uninstall(
    cache: Path, state: ClusterState, timeout_s: float = 120.0, missing_ok: bool = False
) -> None:
    """``helm uninstall --wait`` of the release (the CRDs stay, as Helm leaves them).

    ``missing_ok``: a release that is not installed is not an error.
    """
    _run_helm(
        [_helm(cache), "uninstall", RELEASE, "--namespace", NAMESPACE,
         "--kubeconfig", state.kubeconfig, "--wait",
         *(["--ignore-not-found"] if missing_ok else [])],
        f"helm uninstall of the rescue chart on {state.name}",
        timeout_s,
    )  # fmt: skip
