"""Given the session's local fleet: the control plane runs in its cgroup under its limits,
a crashed kube-apiserver is restarted by its supervisor and counted while a stopped one
stays down, the firewall remedy cuts only the telemetry agents, and a CoreDNS restarted
while the API server is down answers from the records snapshot when the mitigation is on.
"""

import os
import signal
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from blackstart.actions import apiserver, dns, dns_survival, network
from blackstart.clusters.local.cgroups import ControlPlaneCgroup
from blackstart.clusters.local.provider import LocalProvider
from blackstart.clusters.local.supervisor import hold_file
from blackstart.clusters.state import ClusterState
from blackstart.probes.dns import query_once

from .conftest import controllers_back_after_an_outage, eventually

pytestmark = pytest.mark.e2e

NAME = "kubernetes.default.svc.cluster.local"


@pytest.fixture
def config(cluster: ClusterState) -> dict[str, Any]:
    return {"blackstart_cluster": cluster.name}


@pytest.fixture
def api_restored(
    config: dict[str, Any], cluster: ClusterState, local: LocalProvider
) -> Iterator[None]:
    yield
    apiserver.start_apiserver(timeout_s=120, configuration=config)
    # the controllers that exited in the outage are back and their informers work again:
    # CI saw the next module's Deployments make no pod for 60 s while they waited out
    # their back-off after this module's last outage
    controllers_back_after_an_outage(cluster, local)


def test_kube_apiserver_runs_in_the_control_planes_cgroup_under_its_limits(
    local: LocalProvider, cluster: ClusterState
) -> None:
    info = local.control_plane_info(cluster.name)
    assert info["limited"] is True, "this machine has cgroups: the control plane must be limited"
    cgroup = ControlPlaneCgroup(cluster.name)
    kc = local.kwok_cluster(cluster.name)
    pid = kc.pid("kube-apiserver")
    assert pid is not None
    eventually(lambda: cgroup.contains(pid), 10, "kube-apiserver in the cgroup")
    for component in ("etcd", "kube-controller-manager", "kwok-controller", "prometheus"):
        other = kc.pid(component)
        assert other is not None
        eventually(lambda o=other: not cgroup.contains(o), 10, f"{component} out of the cgroup")
    usage = cgroup.usage()
    assert usage.memory_limit_bytes == info["memory_bytes"]
    assert usage.cpu_quota == pytest.approx(info["cpus"])
    assert 0 < usage.memory_bytes < usage.memory_limit_bytes

    def adj(component: str) -> int:
        return int(Path(f"/proc/{kc.pid(component)}/oom_score_adj").read_text())

    # the OOM killer's first choice
    eventually(lambda: adj("kube-apiserver") > adj("etcd"), 10, "kube-apiserver the OOM victim")


def test_a_crashed_kube_apiserver_is_restarted_by_its_supervisor_and_counted(
    local: LocalProvider, cluster: ClusterState, api_restored: None
) -> None:
    before = local.restarts(cluster.name, "kube-apiserver")
    pid = local.kwok_cluster(cluster.name).pid("kube-apiserver")
    assert pid is not None
    os.kill(pid, signal.SIGKILL)  # as the OOM killer does
    eventually(
        lambda: local.restarts(cluster.name, "kube-apiserver") == before + 1,
        90,
        "the supervisor restarting kube-apiserver after its back-off",
    )
    statuses = {s.name: s for s in local.status(cluster.name)}
    assert statuses["kube-apiserver"].restarts == before + 1
    assert "last exit Error" in statuses["kube-apiserver"].detail
    assert statuses["kube-apiserver"].pid != pid
    eventually(
        lambda: {s.name: s for s in local.status(cluster.name)}["kube-apiserver"].healthy,
        60,
        "kube-apiserver ready again",
    )


def test_a_kube_apiserver_stopped_on_purpose_stays_down_until_started(
    local: LocalProvider, cluster: ClusterState, config: dict[str, Any], api_restored: None
) -> None:
    def record() -> dict[str, Any]:
        return dict(local.supervisor_status(cluster.name)["components"]["kube-apiserver"])

    before, exits = local.restarts(cluster.name, "kube-apiserver"), record()["exits"]
    apiserver.stop_apiserver(configuration=config)
    assert hold_file(local.state_dir(cluster.name), "kube-apiserver").exists()
    eventually(lambda: record()["exits"] > exits, 10, "the supervisor seeing the stop")
    seen = record()
    assert seen["last_exit"] == "Stopped"
    assert seen["next_start_at"] == 0, "a stopped API server is not scheduled for a restart"
    apiserver.start_apiserver(timeout_s=120, configuration=config)
    assert not hold_file(local.state_dir(cluster.name), "kube-apiserver").exists()
    assert local.restarts(cluster.name, "kube-apiserver") == before


def _connect(source: str, host: str, port: int) -> str:
    with socket.socket() as sock:
        sock.settimeout(3)
        sock.bind((source, 0))
        try:
            sock.connect((host, port))
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            with context.wrap_socket(sock) as tls:
                tls.do_handshake()
            return "ok"
        except OSError as err:
            return type(err).__name__


def test_the_network_remedy_cuts_the_telemetry_agents_and_nobody_else(
    cluster: ClusterState, config: dict[str, Any]
) -> None:
    url = urlsplit(cluster.apiserver_url)
    host, port = url.hostname or "", int(url.port or 443)
    assert _connect("127.0.0.2", host, port) == "ok"
    network.block_telemetry_network(configuration=config)
    try:
        assert _connect("127.0.0.2", host, port) == "ConnectionRefusedError"
        assert _connect("127.0.0.1", host, port) == "ok"
    finally:
        network.unblock_telemetry_network(configuration=config)
    assert _connect("127.0.0.2", host, port) == "ok"


def test_coredns_restarted_while_the_api_server_is_down_answers_from_the_snapshot(
    local: LocalProvider, cluster: ClusterState, config: dict[str, Any], api_restored: None
) -> None:
    host, _, port = cluster.dns_address.rpartition(":")
    enabled = dns_survival.enable_dns_survival(configuration=config)
    try:
        assert enabled["records"] >= 1
        apiserver.stop_apiserver(configuration=config)
        dns.restart_coredns(configuration=config)
        answers = eventually(
            lambda: query_once(host, int(port), NAME, "A", 0.5)[0] == "ok",
            20,
            "the restarted CoreDNS answering from the snapshot",
        )
        assert answers
        outcomes = [query_once(host, int(port), NAME, "A", 0.5)[0] for _ in range(10)]
        assert outcomes == ["ok"] * 10
    finally:
        apiserver.start_apiserver(timeout_s=120, configuration=config)
        dns_survival.disable_dns_survival(configuration=config)
        dns.restore_coredns(timeout_s=90, configuration=config)
    assert "hosts" not in local.corefile(cluster.name).read_text()
