"""One real local cluster per test session: etcd, kube-apiserver, controller-manager,
scheduler, the kwok controller with the default GPU fleet, CoreDNS and Prometheus.

The toolchain must be installed (`blackstart toolchain install`, which .ci/run does);
a missing binary fails the session with the command to run, it is never skipped.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client

from blackstart.clusters.local.kwokctl import KwokCluster
from blackstart.clusters.local.provider import LocalProvider
from blackstart.clusters.local.supervisor import read_status
from blackstart.clusters.spec import load_spec
from blackstart.clusters.state import ClusterState, state_dir_for
from blackstart.clusters.toolchain import resolve
from blackstart.kube import api_client
from blackstart.paths import cache_dir

E2E_CLUSTER = os.environ.get("BLACKSTART_E2E_CLUSTER", "e2e")
# kube-scheduler's and kube-controller-manager's leader election renew deadline (default)
LEADER_RENEW_DEADLINE_S = 10.0
# set to 1 to leave the session's clusters up after the tests, to look at what failed
KEEP_ENV = "BLACKSTART_E2E_KEEP"


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


# how much of each process log a failed test shows (CI prints only the end of its output)
FAILURE_LOG_LINES = 40
# the cluster's own components a failed test shows the end of the logs of
CONTROL_PLANE_LOGS = ("kube-controller-manager", "kube-scheduler", "kwok-controller")
CONTROL_PLANE_LOG_LINES = 15


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """A failed test shows the end of the logs its processes wrote, and the control plane's
    supervisor status: a failure in CI can be read from its output alone."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if report.when != "call" or not report.failed:
        return
    funcargs = getattr(item, "funcargs", {})
    tmp = funcargs.get("tmp_path")
    if isinstance(tmp, Path):
        for log in sorted(tmp.rglob("*.log")):
            lines = log.read_text(errors="replace").splitlines()[-FAILURE_LOG_LINES:]
            report.sections.append((f"{log.name}, last {len(lines)} lines", "\n".join(lines)))
    namespace, core = funcargs.get("namespace"), funcargs.get("core")
    if isinstance(namespace, str) and isinstance(core, client.CoreV1Api):
        report.sections.append((f"pods in {namespace}", _pods_summary(core, namespace)))
    state = funcargs.get("cluster")
    if isinstance(state, ClusterState):
        status = read_status(state_dir_for(state.name))
        report.sections.append(("control-plane supervisor", json.dumps(status, indent=1)))
        kwok = KwokCluster(name=state.name, workdir=cache_dir() / "kwok")
        for component in CONTROL_PLANE_LOGS:
            log = kwok.log_file(component)
            if log.exists():
                lines = log.read_text(errors="replace").splitlines()[-CONTROL_PLANE_LOG_LINES:]
                report.sections.append((f"{component}, last {len(lines)} lines", "\n".join(lines)))


def _pods_summary(core: client.CoreV1Api, namespace: str) -> str:
    try:
        pods = core.list_namespaced_pod(namespace, _request_timeout=10).items
        events = core.list_namespaced_event(namespace, _request_timeout=10).items
    except Exception as err:  # the API server may be what failed
        return f"(cannot list: {err})"
    lines = [
        f"{p.metadata.name} {p.status.phase} node={p.spec.node_name} "
        f"deleting={p.metadata.deletion_timestamp is not None}"
        for p in pods
    ]
    lines += [f"event {e.reason} {e.involved_object.name}: {e.message}" for e in events[-20:]]
    return "\n".join(lines) or "(none)"


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
        if os.environ.get(KEEP_ENV) == "1":
            print(f"{KEEP_ENV}=1: cluster {name} left up (`blackstart cluster down --name {name}`)")
        else:
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
    """Wait until kube-controller-manager and kube-scheduler lead again after an outage.

    They exit when an API server outage outlasts their leader lease's renew deadline
    (10 s), and they do it a few seconds *after* the API server is back; the supervisor
    then starts them after a back-off that grows with each exit (kubelet's), which can
    outlast a following test's wait. So: start any that exited at once (as the
    catalogue's start_apiserver rollback does), until each one's Lease shows a renewal
    later than the renew deadline after now, which only a process that kept or won the
    lease after the outage can write.
    """
    from blackstart.actions._components import restart_exited_controllers

    coordination = client.CoordinationV1Api(api_client(cluster.kubeconfig))
    settled = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=LEADER_RENEW_DEADLINE_S + 2)

    def leading_again() -> bool:
        restart_exited_controllers(local, cluster.name)
        for name in ("kube-controller-manager", "kube-scheduler"):
            try:
                lease = coordination.read_namespaced_lease(name, "kube-system")
            except Exception:  # the API server may still be settling
                return False
            renewed = lease.spec.renew_time
            if renewed is None or renewed < settled:
                return False
        return True

    eventually(
        leading_again,
        90,
        "kube-controller-manager and kube-scheduler leading again after the outage",
        interval=1.0,
    )
    workloads_flow_again(cluster)


# where controllers_back_after_an_outage runs its probe Deployment, on a CPU node
PROBE_NAMESPACE = "blackstart-e2e-probe"
PROBE_NODE = "cpu-7"


def workloads_flow_again(cluster: ClusterState) -> None:
    """Wait until a new Deployment gets a Ready pod: the controllers' informers work again.

    A lease renewed is not enough. Each informer of kube-controller-manager, kube-scheduler
    and the kwok controller re-lists after an outage on its own back-off (client-go's
    reflector: 0.8 s doubling to 30 s, with up to as much again of jitter), so for up to a
    minute after the API server is back a leader can hold its lease and still not see a
    new Deployment (CI saw the next test's ReplicaSet never made). This probe goes through
    every one of them: Deployment -> ReplicaSet -> Pod (controller-manager), binding
    (scheduler), Running and Ready (kwok), ready replicas (controller-manager again).
    """
    import time

    admin = api_client(cluster.kubeconfig)
    core, apps = client.CoreV1Api(admin), client.AppsV1Api(admin)
    with contextlib.suppress(client.ApiException):  # made by an earlier outage
        core.create_namespace({"metadata": {"name": PROBE_NAMESPACE}})
    name = f"probe-{int(time.time())}"
    labels = {"app": name}
    apps.create_namespaced_deployment(
        PROBE_NAMESPACE,
        {
            "metadata": {"name": name},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "nodeSelector": {"kubernetes.io/hostname": PROBE_NODE},
                        "containers": [{"name": "c", "image": "registry.invalid/probe:1"}],
                    },
                },
            },
        },
    )
    started = time.monotonic()
    try:
        eventually(
            lambda: (
                (apps.read_namespaced_deployment(name, PROBE_NAMESPACE).status.ready_replicas or 0)
                == 1
            ),
            150,
            "a new Deployment's pod Ready (controller-manager, scheduler and kwok all "
            "acting again after the outage)",
            interval=1.0,
        )
        print(
            f"workloads flow again: a probe Deployment Ready in {time.monotonic() - started:.1f} s"
        )
    finally:
        apps.delete_namespaced_deployment(name, PROBE_NAMESPACE, propagation_policy="Background")
