"""One real local cluster per test session: etcd, kube-apiserver, controller-manager,
scheduler, the kwok controller with the default GPU fleet, CoreDNS and Prometheus.

The toolchain must be installed (`blackstart toolchain install`, which .ci/run does);
a missing binary fails the session with the command to run, it is never skipped.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client

from blackstart.clusters.local.provider import LocalProvider
from blackstart.clusters.spec import load_spec
from blackstart.clusters.state import ClusterState
from blackstart.clusters.toolchain import resolve
from blackstart.kube import api_client
from blackstart.paths import cache_dir

E2E_CLUSTER = os.environ.get("BLACKSTART_E2E_CLUSTER", "e2e")


def _provider() -> LocalProvider:
    cache = cache_dir()
    toolchain, missing = resolve(cache)
    if missing:
        pytest.fail(
            "e2e tests need the toolchain: run `blackstart toolchain install` "
            f"(missing: {', '.join(n for _, n in missing)})",
            pytrace=False,
        )
    return LocalProvider(cache, toolchain, progress=lambda m: print(m, flush=True))


@pytest.fixture(scope="session")
def local() -> LocalProvider:
    return _provider()


@contextlib.contextmanager
def fresh_cluster(local: LocalProvider, name: str) -> Iterator[ClusterState]:
    """A new default GPU fleet named ``name`` (any leftover of that name removed first)."""
    if (local.state_dir(name) / "cluster.json").exists() or local.kwok_cluster(
        name
    ).cluster_dir.exists():
        local.down(name)  # left over from an interrupted run
    state = local.up(load_spec(), name=name)
    try:
        yield state
    finally:
        local.down(name)


@pytest.fixture(scope="session")
def cluster(local: LocalProvider) -> Iterator[ClusterState]:
    """The default GPU fleet (60 nodes), brought up once for the whole session."""
    with fresh_cluster(local, E2E_CLUSTER) as state:
        yield state


@pytest.fixture(scope="session")
def core(cluster: ClusterState) -> client.CoreV1Api:
    return client.CoreV1Api(api_client(cluster.kubeconfig))


@pytest.fixture(scope="session")
def apps(cluster: ClusterState) -> client.AppsV1Api:
    return client.AppsV1Api(api_client(cluster.kubeconfig))


@pytest.fixture
def namespace(core: client.CoreV1Api, request: pytest.FixtureRequest) -> Iterator[str]:
    """A namespace of its own for one test, deleted afterwards."""
    name = "t-" + request.node.name.lower().replace("_", "-")[:50].strip("-")
    core.create_namespace({"metadata": {"name": name}})
    yield name
    core.delete_namespace(name)


def repo_root() -> Path:
    return Path(__file__).resolve().parents[2]


def eventually(check: object, timeout: float, what: str, interval: float = 0.5) -> object:
    """Poll ``check()`` until it returns something truthy; fail naming ``what``."""
    import time

    assert callable(check)
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})")


def controllers_back_after_an_outage(cluster: ClusterState, local: LocalProvider) -> None:
    """kube-controller-manager and kube-scheduler exit when an API server outage outlasts
    their leader lease (a real node's kubelet restarts them): start them again, as the
    catalogue's start_apiserver rollback does, so the tests after an outage find a whole
    cluster (a stuck namespace deletion, say, needs the controller-manager)."""
    from blackstart.actions._components import restart_exited_controllers

    restart_exited_controllers(local, cluster.name)
    eventually(
        lambda: all(
            s.healthy
            for s in local.status(cluster.name)
            if s.name in ("kube-controller-manager", "kube-scheduler")
        ),
        60,
        "kube-controller-manager and kube-scheduler healthy after the outage",
    )
