"""Given the local fleet, the provider operations that faults are built on do what
their names say, and undo cleanly."""

from __future__ import annotations

import json
import ssl
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from blackstart.clusters.local.kwok_nodes import node_is_ready
from blackstart.clusters.local.provider import LocalProvider, processes_under
from blackstart.clusters.processes import is_alive, is_stopped, is_unreaped, read_pid
from blackstart.clusters.state import ClusterState
from blackstart.probes.dns import query_once

from .conftest import controllers_back_after_an_outage, eventually

pytestmark = pytest.mark.e2e


def apiserver_ready(cluster: ClusterState, local: LocalProvider) -> bool:
    pki = local.kwok_cluster(cluster.name).pki_dir
    ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    ctx.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
    try:
        with urllib.request.urlopen(f"{cluster.apiserver_url}/readyz", timeout=1, context=ctx) as r:
            return r.status == 200
    except OSError:
        return False


# First, before the API server outages below: after kube-apiserver was stopped or hung,
# the KWOK controller was seen reacting to the node-not-ready label only after more than
# 30 s (CI 2026-11-30, and a full run here; alone the test passes in seconds): it waits
# up to 120 s. Noted in
# issue 13's note; not fixed.
def test_reboot_of_a_node_goes_not_ready_then_ready_with_a_new_boot_id(
    cluster: ClusterState, local: LocalProvider, core: client.CoreV1Api
):
    node = "gpu-7"
    boot_before = core.read_node(node).status.node_info.boot_id
    local.mark_node_not_ready(cluster.name, node)
    eventually(lambda: not node_is_ready(core.read_node(node)), 120, f"{node} NotReady")
    local.mark_node_ready(cluster.name, node)
    eventually(lambda: node_is_ready(core.read_node(node)), 120, f"{node} Ready again")
    assert core.read_node(node).status.node_info.boot_id != boot_before


def test_stopped_apiserver_refuses_and_comes_back_on_start(
    cluster: ClusterState, local: LocalProvider
):
    pid_before = local.kwok_cluster(cluster.name).pid("kube-apiserver")
    assert local.stop_component(cluster.name, "kube-apiserver") is True
    assert not is_alive(pid_before)
    assert not apiserver_ready(cluster, local)
    local.start_component(cluster.name, "kube-apiserver")
    eventually(lambda: apiserver_ready(cluster, local), 60, "kube-apiserver ready again")
    assert local.kwok_cluster(cluster.name).pid("kube-apiserver") != pid_before
    controllers_back_after_an_outage(cluster, local)


def test_hung_apiserver_keeps_its_process_but_answers_nothing_until_resumed(
    cluster: ClusterState, local: LocalProvider
):
    pid = local.hang_component(cluster.name, "kube-apiserver")
    try:
        assert is_stopped(pid)
        assert not apiserver_ready(cluster, local)
        states = {s.name: s.state for s in local.status(cluster.name)}
        assert states["kube-apiserver"] == "hung"
    finally:
        local.resume_component(cluster.name, "kube-apiserver")
    assert not is_stopped(pid)
    eventually(lambda: apiserver_ready(cluster, local), 30, "kube-apiserver ready after SIGCONT")
    controllers_back_after_an_outage(cluster, local)


def test_a_scheduler_that_lost_its_lease_in_a_freeze_is_started_again_by_the_supervisor(
    cluster: ClusterState, local: LocalProvider, core: client.CoreV1Api, namespace: str
):
    # kube-scheduler and kube-controller-manager exit once a frozen API server cost them
    # their Lease (10 s renew deadline), seconds after the freeze ends: resume_apiserver's
    # restart of exited controllers comes too early. A CI run then left every later pod
    # Pending. The supervisor restarts them as the kubelet restarts static pods.
    kc = local.kwok_cluster(cluster.name)
    scheduler = kc.pid("kube-scheduler")
    restarts_before = local.restarts(cluster.name, "kube-scheduler")
    pid = local.hang_component(cluster.name, "kube-apiserver")
    try:
        time.sleep(16)
    finally:
        local.resume_component(cluster.name, "kube-apiserver")
    assert not is_stopped(pid)
    eventually(lambda: not is_alive(scheduler), 30, "kube-scheduler exits on its lost Lease")
    # the namespace's default ServiceAccount, which a pod needs, is the controller-manager's
    eventually(
        lambda: core.list_namespaced_service_account(namespace).items,
        90,
        "the namespace's ServiceAccount (kube-controller-manager started again)",
    )
    container = {"name": "c", "image": "registry.invalid/after:1"}
    pod = {"metadata": {"name": "after-the-freeze"}, "spec": {"containers": [container]}}
    core.create_namespaced_pod(namespace, pod)
    eventually(
        lambda: core.read_namespaced_pod("after-the-freeze", namespace).spec.node_name,
        90,
        "a pod created after the freeze scheduled (kube-scheduler started again)",
    )
    # counted once kwokctl returned, and written to supervisor.json within a second
    eventually(
        lambda: local.restarts(cluster.name, "kube-scheduler") > restarts_before,
        15,
        "the supervisor's count of kube-scheduler restarts up by one",
    )
    assert kc.pid("kube-scheduler") != scheduler


def test_an_api_server_that_fails_its_liveness_probe_is_killed_and_restarted(
    cluster: ClusterState, local: LocalProvider
):
    # kube-apiserver's /livez includes etcd: with etcd stopped it answers 500, as a
    # thrashing one answers nothing. kubelet (kubeadm's probe: 10 s, 8 failures) kills it;
    # so does the supervisor, and it starts again once etcd is back.
    def apiserver_record() -> dict[str, Any]:
        components = local.supervisor_status(cluster.name).get("components") or {}
        return dict(components.get("kube-apiserver") or {})

    kills_before = int(apiserver_record().get("liveness_kills", 0))
    pid = local.kwok_cluster(cluster.name).pid("kube-apiserver")
    assert local.stop_component(cluster.name, "etcd") is True
    try:
        eventually(lambda: not is_alive(pid), 150, "kube-apiserver killed by its liveness probe")
        eventually(
            lambda: apiserver_record().get("liveness_kills") == kills_before + 1,
            10,
            "the liveness kill counted",
        )
        assert apiserver_record()["last_exit"] == "Unhealthy"
    finally:
        local.start_component(cluster.name, "etcd")
    eventually(lambda: apiserver_ready(cluster, local), 60, "kube-apiserver ready with etcd back")
    controllers_back_after_an_outage(cluster, local)


def test_coredns_restart_serves_again(cluster: ClusterState, local: LocalProvider):
    """A new CoreDNS process (the old one gone), ready and answering from the API server:
    its cache went with the old process."""
    pid_before = read_pid(local.pid_file(cluster.name, "coredns"))
    assert pid_before is not None and is_alive(pid_before)
    local.restart_component(cluster.name, "coredns")
    assert not is_alive(pid_before)
    pid_after = read_pid(local.pid_file(cluster.name, "coredns"))
    assert pid_after is not None and pid_after != pid_before and is_alive(pid_after)
    eventually(lambda: local.coredns_ready(cluster.name), 30, "CoreDNS ready after restart")
    host, port = cluster.dns_address.rsplit(":", 1)
    name = "kubernetes.default.svc.cluster.local"
    eventually(
        lambda: query_once(host, int(port), name, "A", 1.0)[0] == "ok", 30, f"{name} resolves"
    )


def _program(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode().rsplit("/")[-1]
    except OSError:  # it exited meanwhile
        return ""


def test_two_starts_at_once_leave_one_controller_manager_the_one_its_pid_file_names(
    cluster: ClusterState, local: LocalProvider
):
    # The supervisor's start after a back-off and a rollback's start raced in CI: both
    # found kube-controller-manager stopped and both started it; the second lost the port
    # and exited, its pid file named the dead one, and the live one ran untracked (status
    # said "last exit Error", and a later stop_component could not stop it).
    kc = local.kwok_cluster(cluster.name)
    component = "kube-controller-manager"

    def managers() -> list[int]:
        return [p for p in processes_under((kc.cluster_dir,)) if _program(p) == component]

    def start(errors: list[Exception]) -> None:
        try:
            local.start_component(cluster.name, component)
        except Exception as err:  # reported by the assertion below
            errors.append(err)

    for _ in range(3):  # the race is lost in one round of two or three without the lock
        local.stop_component(cluster.name, component)
        errors: list[Exception] = []
        starters = [threading.Thread(target=start, args=(errors,)) for _ in range(2)]
        for starter in starters:
            starter.start()
        for starter in starters:
            starter.join()
        assert not errors
        time.sleep(3)  # a second process, had one started, has lost the port and exited
        assert managers() == [kc.pid(component)]
        assert local.component_state(cluster.name, component) == "running"
    controllers_back_after_an_outage(cluster, local)


def test_a_component_killed_a_moment_ago_is_started_again_before_it_is_reaped(
    cluster: ClusterState, local: LocalProvider
):
    # Seen in CI: kube-apiserver, OOM-killed at the moment a rollback asked for it, was
    # still a zombie (not yet reaped by init). kwokctl, which probes pids with signal 0,
    # took it for running and started nothing; the rollback failed ("did not start").
    kc = local.kwok_cluster(cluster.name)
    component = "kube-scheduler"
    local.stop_component(cluster.name, component)
    zombie = subprocess.Popen([sys.executable, "-c", "pass"])  # exits; reaped 3 s later
    eventually(lambda: is_unreaped(zombie.pid), 10, "the stand-in to exit", interval=0.02)
    kc.pid_file(component).write_text(str(zombie.pid))  # as kwokctl writes it: no newline
    reaper = threading.Timer(3.0, zombie.wait)
    reaper.start()
    try:
        local.start_component(cluster.name, component)
    finally:
        reaper.join()
    pid = kc.pid(component)
    assert pid != zombie.pid
    assert _program(pid) == component
    assert local.component_state(cluster.name, component) == "running"
    controllers_back_after_an_outage(cluster, local)


def test_status_reports_every_component_healthy(cluster: ClusterState, local: LocalProvider):
    statuses = {s.name: s for s in local.status(cluster.name)}
    assert set(statuses) == {
        "etcd",
        "kube-apiserver",
        "kube-controller-manager",
        "kube-scheduler",
        "kwok-controller",
        "prometheus",
        "coredns",
    }
    unhealthy = {n: s.detail for n, s in statuses.items() if not s.healthy}
    assert not unhealthy


def test_cluster_down_from_the_cli_leaves_no_process(local: LocalProvider, tmp_path: Path):
    """A cluster of its own (a small spec), up and down through the `blackstart` command."""
    spec = tmp_path / "small.yaml"
    spec.write_text(
        yaml.safe_dump(
            {
                "kind": "ClusterSpec",
                "metadata": {"name": "small"},
                "spec": {
                    "pools": [
                        {
                            "name": "gpu",
                            "role": "gpu",
                            "count": 3,
                            "capacity": {"nvidia.com/gpu": "8"},
                        },
                    ]
                },
            }
        )
    )
    name = "e2e-down"
    cli = [sys.executable, "-m", "blackstart.cli", "--cache-dir", str(local.cache)]
    up = subprocess.run(
        [*cli, "cluster", "up", "--spec", str(spec), "--name", name],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert up.returncode == 0, up.stderr
    assert "kube-apiserver" in up.stdout and "FAIL" not in up.stdout
    status = subprocess.run(
        [*cli, "cluster", "status", "--name", name, "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    components = json.loads(status.stdout)["components"]
    pids = [c["pid"] for c in components]
    assert len(pids) == 7 and all(is_alive(p) for p in pids)

    down = subprocess.run(
        [*cli, "cluster", "down", "--name", name],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert down.returncode == 0, down.stderr
    assert [p for p in pids if is_alive(p)] == []
    assert processes_under((local.state_dir(name), local.kwok_cluster(name).cluster_dir)) == []
    assert not local.state_dir(name).exists()
