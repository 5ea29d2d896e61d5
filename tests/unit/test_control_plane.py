"""The control plane is sized like a real one, limited by cgroups, and supervised like a
static pod: sizes from the spec or the sizing advice, cgroup files written as the kernel
reads them, kubelet's back-off, OOM kills told apart from other exits."""

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from blackstart.clusters.local import liveness
from blackstart.clusters.local.cgroups import ControlPlaneCgroup, cgroup_version
from blackstart.clusters.local.liveness import LivenessProbe
from blackstart.clusters.local.supervisor import (
    Backoff,
    Supervisor,
    exit_reason,
    hold_file,
    metrics_lines,
    request_backoff_reset,
    reset_file,
)
from blackstart.clusters.processes import is_alive, read_pid
from blackstart.clusters.spec import (
    SpecError,
    default_control_plane,
    format_memory,
    memory_bytes,
    parse_spec,
)

GiB = 1024**3
MiB = 1024**2


def spec_with(control_plane: object = None, count: int = 60) -> dict[str, object]:
    body: dict[str, object] = {"pools": [{"name": "gpu", "role": "gpu", "count": count,
                                          "capacity": {"nvidia.com/gpu": "8"}}]}  # fmt: skip
    if control_plane is not None:
        body["controlPlane"] = control_plane
    return {"kind": "ClusterSpec", "metadata": {"name": "fleet"}, "spec": body}


def test_the_default_fleet_on_this_kind_of_machine_gets_one_core_and_one_gib() -> None:
    # advice for 60 nodes: 2.4 cores, 4.8 GiB; a KWOK node weighs a quarter; half of 2 cores
    size = default_control_plane(60, host_cpus=2, host_memory=24 * GiB)
    assert (size.cpus, size.memory, size.from_advice) == (1.0, 1 * GiB, True)


def test_a_big_fleet_is_capped_by_what_the_machine_can_spare() -> None:
    size = default_control_plane(1000, host_cpus=2, host_memory=24 * GiB)
    assert size.cpus == 1.0
    assert size.memory == 6 * GiB  # a quarter of 24 GiB, not the advice's 20 GiB
    roomy = default_control_plane(1000, host_cpus=64, host_memory=512 * GiB)
    assert (roomy.cpus, roomy.memory) == (32.0, 20 * GiB)


def test_a_tiny_fleet_still_gets_what_a_control_plane_needs_to_start() -> None:
    size = default_control_plane(2, host_cpus=2, host_memory=24 * GiB)
    assert size.cpus == 0.5
    assert size.memory == 768 * MiB


def test_the_spec_size_wins_and_a_missing_half_comes_from_the_advice() -> None:
    spec = parse_spec(spec_with({"cpus": 2, "memory": "1536Mi"}))
    assert (spec.control_plane.cpus, spec.control_plane.memory) == (2.0, 1536 * MiB)
    assert not spec.control_plane.from_advice
    half = parse_spec(spec_with({"memory": "2Gi"}))
    assert half.control_plane.memory == 2 * GiB
    assert half.control_plane.cpus == default_control_plane(60).cpus
    assert parse_spec(spec_with()).control_plane.from_advice


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ({"cpus": 0}, ("spec.controlPlane.cpus", "0.1 to 256")),
        ({"cpus": "two"}, ("spec.controlPlane.cpus",)),
        ({"memory": "lots"}, ("spec.controlPlane.memory", "1536Mi")),
        ({"memory": "64Mi"}, ("spec.controlPlane.memory", "256Mi")),
        ({"cpu": 2}, ("spec.controlPlane", "unknown field", "cpu")),
        ("2 cores", ("spec.controlPlane", "mapping")),
    ],
)
def test_a_bad_control_plane_size_is_refused_naming_the_field(
    value: object, words: tuple[str, ...]
) -> None:
    with pytest.raises(SpecError) as caught:
        parse_spec(spec_with(value), source="fleet.yaml")
    for word in ("fleet.yaml", *words):
        assert word in str(caught.value)


def test_memory_quantities_read_and_print_as_kubernetes_writes_them() -> None:
    assert memory_bytes("1536Mi") == 1536 * MiB
    assert memory_bytes("2Gi") == 2 * GiB
    assert memory_bytes("500M") == 500_000_000
    assert memory_bytes("1073741824") == GiB
    assert format_memory(1536 * MiB) == "1536Mi"
    assert format_memory(2 * GiB) == "2Gi"


def test_backoff_doubles_from_ten_seconds_to_five_minutes_like_kubelets() -> None:
    backoff = Backoff()
    delays = [backoff.next_delay(ran_for_s=3.0) for _ in range(8)]
    assert delays == [10, 20, 40, 80, 160, 300, 300, 300]


def test_backoff_starts_over_after_a_long_healthy_run() -> None:
    backoff = Backoff()
    assert [backoff.next_delay(1.0) for _ in range(3)] == [10, 20, 40]
    assert backoff.next_delay(ran_for_s=600.0) == 10


def test_an_exit_is_an_oom_kill_only_when_the_cgroup_counted_one() -> None:
    assert exit_reason(oom_kills_before=2, oom_kills_now=3) == "OOMKilled"
    assert exit_reason(oom_kills_before=3, oom_kills_now=3) == "Error"


def fake_v1(root: Path) -> Path:
    for controller, files in {
        "memory": ("memory.limit_in_bytes",),
        "cpu": ("cpu.cfs_quota_us",),
        "cpuacct": ("cpuacct.usage",),
    }.items():
        (root / controller).mkdir(parents=True)
        for name in files:
            (root / controller / name).write_text("0\n")
    return root


def test_the_cgroup_gets_the_limits_as_the_v1_kernel_reads_them(tmp_path: Path) -> None:
    root = fake_v1(tmp_path / "cgroup")
    assert cgroup_version(root) == 1
    cgroup = ControlPlaneCgroup("incident", root)
    cgroup.create(cpus=1.5, memory=GiB)
    memory = root / "memory/blackstart/incident/control-plane"
    cpu = root / "cpu/blackstart/incident/control-plane"
    assert (memory / "memory.limit_in_bytes").read_text() == str(GiB)
    assert (memory / "memory.memsw.limit_in_bytes").read_text() == str(GiB)
    assert (cpu / "cpu.cfs_quota_us").read_text() == "150000"
    assert (cpu / "cpu.cfs_period_us").read_text() == "100000"
    cgroup.set_limits(cpus=2, memory=2 * GiB)
    assert (cpu / "cpu.cfs_quota_us").read_text() == "200000"
    assert (memory / "memory.limit_in_bytes").read_text() == str(2 * GiB)


def test_usage_reads_memory_cpu_and_oom_kills(tmp_path: Path) -> None:
    root = fake_v1(tmp_path / "cgroup")
    cgroup = ControlPlaneCgroup("incident", root)
    cgroup.create(cpus=1, memory=GiB)
    memory = root / "memory/blackstart/incident/control-plane"
    (memory / "memory.usage_in_bytes").write_text("734003200\n")
    (memory / "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n")
    (root / "cpuacct/blackstart/incident/control-plane/cpuacct.usage").write_text("2500000000\n")
    usage = cgroup.usage()
    assert usage.memory_bytes == 734003200
    assert usage.memory_limit_bytes == GiB
    assert usage.oom_kills == 2
    assert usage.cpu_seconds == 2.5
    assert usage.cpu_quota == 1.0


def test_the_cgroup_v2_limits_go_in_memory_max_and_cpu_max(tmp_path: Path) -> None:
    root = tmp_path / "cgroup"
    root.mkdir()
    (root / "cgroup.controllers").write_text("cpu memory\n")
    cgroup = ControlPlaneCgroup("incident", root)
    cgroup.create(cpus=0.5, memory=768 * MiB)
    folder = root / "blackstart/incident/control-plane"
    assert (folder / "memory.max").read_text() == str(768 * MiB)
    assert (folder / "cpu.max").read_text() == "50000 100000"


def test_no_cgroups_means_no_limit_and_a_clear_error(tmp_path: Path) -> None:
    cgroup = ControlPlaneCgroup("incident", tmp_path)
    assert not cgroup.available
    with pytest.raises(Exception, match="no writable cgroup"):
        cgroup.create(cpus=1, memory=GiB)


def test_the_supervisor_exports_restarts_oom_kills_and_usage_for_prometheus() -> None:
    lines = metrics_lines(
        {
            "components": {"kube-apiserver": {"restarts": 3, "oom_kills": 2, "pid": 41}},
            "usage": {"memory_bytes": 5, "memory_limit_bytes": 9, "cpu_quota": 1.0,
                      "cpu_seconds": 7.5, "throttled_periods": 4},
        }
    )  # fmt: skip
    assert 'blackstart_control_plane_restarts_total{component="kube-apiserver"} 3' in lines
    assert 'blackstart_control_plane_oom_kills_total{component="kube-apiserver"} 2' in lines
    assert 'blackstart_control_plane_up{component="kube-apiserver"} 1' in lines
    assert "blackstart_control_plane_memory_bytes 5" in lines
    assert "blackstart_control_plane_cpu_seconds_total 7.5" in lines


@pytest.fixture
def apiserver_process(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    """A stand-in kube-apiserver process with kwokctl's pid file."""
    pids = tmp_path / "kwok" / "clusters" / "incident" / "pids"
    pids.mkdir(parents=True)
    proc = subprocess.Popen(["sleep", "60"])
    (pids / "kube-apiserver.pid").write_text(f"{proc.pid}\n")
    yield proc, tmp_path
    proc.kill()
    proc.wait()


def _supervisor(root: Path) -> tuple[Supervisor, Path]:
    cgroup_root = fake_v1(root / "cgroup")
    cgroup = ControlPlaneCgroup("incident", cgroup_root)
    cgroup.create(cpus=1, memory=GiB)
    state = root / "state"
    state.mkdir()
    supervisor = Supervisor("incident", state, root / "kwok", Path("/bin/true"), cgroup)
    return supervisor, cgroup_root / "memory/blackstart/incident/control-plane/memory.oom_control"


def test_an_oom_kill_counted_while_the_process_still_dies_is_an_oom_kill(
    apiserver_process: tuple[subprocess.Popen[bytes], Path],
) -> None:
    proc, root = apiserver_process
    supervisor, oom_control = _supervisor(root)
    assert supervisor.tick(time.time()) == []
    # the kernel counts the kill a moment before the process is gone
    oom_control.write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 1\n")
    supervisor.tick(time.time())
    proc.kill()
    proc.wait()
    now = time.time()
    assert supervisor.tick(now) == []  # not yet: the back-off runs first
    record = supervisor.records["kube-apiserver"]
    assert record.last_exit == "OOMKilled"
    assert record.oom_kills == 1
    assert record.next_start_at == pytest.approx(now + 10)
    assert supervisor.tick(now + 11) == ["kube-apiserver"]  # due after kubelet's 10 s


def test_a_component_stopped_on_purpose_is_not_restarted(
    apiserver_process: tuple[subprocess.Popen[bytes], Path],
) -> None:
    proc, root = apiserver_process
    supervisor, _ = _supervisor(root)
    supervisor.tick(time.time())
    hold = hold_file(supervisor.state_dir, "kube-apiserver")
    hold.parent.mkdir(parents=True)
    hold.touch()
    proc.kill()
    proc.wait()
    now = time.time()
    supervisor.tick(now)
    record = supervisor.records["kube-apiserver"]
    assert record.last_exit == "Stopped"
    assert supervisor.tick(now + 600) == []


def _rescue_cluster(root: Path) -> tuple[Supervisor, Path, subprocess.Popen[bytes]]:
    """A supervisor whose cluster recorded a rescue controller's command line, and that
    controller running (a sleeping Python, its pid in the pid file)."""
    supervisor, _ = _supervisor(root)
    argv = [sys.executable, "-c", "import time; time.sleep(60)"]
    record = {"extra": {"rescue": {"argv": {"rescue-controller": argv}}}}
    (supervisor.state_dir / "cluster.json").write_text(json.dumps(record))
    running = subprocess.Popen(argv)
    pid_file = supervisor.state_dir / "pids" / "rescue-controller.pid"
    pid_file.parent.mkdir()
    pid_file.write_text(f"{running.pid}\n")
    supervisor.tick(time.time())
    return supervisor, pid_file, running


def test_a_rescue_controller_that_exits_is_started_again_after_the_backoff(
    tmp_path: Path,
) -> None:
    # the controller exits when it loses its Lease in an API-server outage; on a real
    # cluster its Deployment's kubelet starts it again, on a local one the supervisor does
    supervisor, pid_file, running = _rescue_cluster(tmp_path)
    running.kill()
    running.wait()
    now = time.time()
    assert supervisor.tick(now) == []  # the back-off first
    record = supervisor.records["rescue-controller"]
    assert record.last_exit == "Error"
    assert supervisor.tick(now + 11) == ["rescue-controller"]
    supervisor.restart("rescue-controller")
    pid = read_pid(pid_file)
    try:
        assert pid is not None and pid != running.pid and is_alive(pid)
        assert record.restarts == 1
        restarts = 'blackstart_control_plane_restarts_total{component="rescue-controller"} 1'
        assert restarts in metrics_lines(supervisor.snapshot())
    finally:
        supervisor.children["rescue-controller"].kill()
        supervisor.children["rescue-controller"].wait()


def test_a_rescue_controller_stopped_on_purpose_stays_stopped(tmp_path: Path) -> None:
    supervisor, pid_file, running = _rescue_cluster(tmp_path)
    hold = hold_file(supervisor.state_dir, "rescue-controller")
    hold.parent.mkdir(parents=True)
    hold.touch()  # what stop_rescue does before it stops the process
    running.kill()
    running.wait()
    now = time.time()
    supervisor.tick(now)
    assert supervisor.records["rescue-controller"].last_exit == "Stopped"
    assert supervisor.tick(now + 600) == []
    assert not supervisor._start_rescue("rescue-controller")  # even when asked directly
    assert read_pid(pid_file) == running.pid


def _kwokctl_component(root: Path, component: str) -> subprocess.Popen[bytes]:
    """A stand-in for a component kwokctl started: a sleeping process and its pid file."""
    pids = root / "kwok" / "clusters" / "incident" / "pids"
    proc = subprocess.Popen(["sleep", "60"])
    (pids / f"{component}.pid").write_text(f"{proc.pid}\n")
    return proc


def test_a_scheduler_that_lost_its_lease_is_started_again_after_the_backoff(
    apiserver_process: tuple[subprocess.Popen[bytes], Path],
) -> None:
    # kube-scheduler and kube-controller-manager exit when an API server frozen for more
    # than their 10 s renew deadline cost them the Lease; nothing else starts them again
    _, root = apiserver_process
    supervisor, oom_control = _supervisor(root)
    scheduler = _kwokctl_component(root, "kube-scheduler")
    supervisor.tick(time.time())
    # the storm gets kube-apiserver OOM-killed in its cgroup as the scheduler, outside
    # it, exits on its lost Lease: not an OOM kill of the scheduler
    oom_control.write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 1\n")
    scheduler.kill()
    scheduler.wait()
    now = time.time()
    assert supervisor.tick(now) == []
    assert supervisor.records["kube-scheduler"].last_exit == "Error"
    assert supervisor.records["kube-scheduler"].oom_kills == 0
    assert supervisor.tick(now + 11) == ["kube-scheduler"]


def test_a_controller_waits_while_a_fault_holds_the_api_server_or_etcd_down(
    apiserver_process: tuple[subprocess.Popen[bytes], Path],
) -> None:
    # kwokctl start cluster starts every stopped component: restarting the scheduler
    # that way would end the fault's outage early
    apiserver, root = apiserver_process
    supervisor, _ = _supervisor(root)
    scheduler = _kwokctl_component(root, "kube-scheduler")
    etcd = _kwokctl_component(root, "etcd")
    supervisor.tick(time.time())
    holds = supervisor.state_dir / "holds"
    holds.mkdir()
    (holds / "etcd").touch()
    (holds / "coredns").touch()  # not kwokctl's: never in the way
    for proc in (etcd, scheduler):
        proc.kill()
        proc.wait()
    now = time.time()
    supervisor.tick(now)
    assert supervisor.tick(now + 11) == []
    assert supervisor.blocked_by("kube-scheduler") == "etcd"
    (holds / "etcd").unlink()  # the fault is over (start_component releases and starts it)
    assert supervisor.tick(now + 12) == ["kube-scheduler"]
    (holds / "kube-apiserver").touch()
    apiserver.kill()
    apiserver.wait()
    assert supervisor.tick(now + 13) == []
    assert supervisor.blocked_by("kube-scheduler") == "kube-apiserver"
    # the fault's rollback starts kube-apiserver, and kwokctl the scheduler with it
    (holds / "kube-apiserver").unlink()
    brought = _kwokctl_component(root, "kube-scheduler")
    try:
        supervisor.tick(now + 14)
        assert supervisor.records["kube-scheduler"].restarts == 1
    finally:
        brought.kill()
        brought.wait()


def test_only_kube_apiserver_is_started_inside_the_control_planes_cgroup(
    apiserver_process: tuple[subprocess.Popen[bytes], Path],
) -> None:
    proc, root = apiserver_process
    proc.kill()  # a stopped kube-apiserver, as the supervisor starts one
    proc.wait()
    supervisor, _ = _supervisor(root)
    procs = root / "cgroup/memory/blackstart/incident/control-plane/cgroup.procs"
    kwokctl = root / "kwokctl"
    kwokctl.write_text("#!/bin/sh\nexit 0\n")
    kwokctl.chmod(0o755)
    supervisor.kwokctl_bin = kwokctl
    procs.write_text("")
    supervisor._start("kube-scheduler")
    assert procs.read_text() == ""
    supervisor._start("kube-apiserver")
    assert procs.read_text().strip().isdigit()


def test_a_component_another_start_brought_back_is_not_started_twice(
    apiserver_process: tuple[subprocess.Popen[bytes], Path],
) -> None:
    # the supervisor waits for the cluster's start lock; a rollback that held it has
    # started kube-apiserver meanwhile: a second kwokctl start would start another one
    _, root = apiserver_process
    supervisor, _ = _supervisor(root)
    ran = root / "kwokctl-ran"
    kwokctl = root / "kwokctl"
    kwokctl.write_text(f"#!/bin/sh\ntouch {ran}\n")
    kwokctl.chmod(0o755)
    supervisor.kwokctl_bin = kwokctl
    assert supervisor._start("kube-apiserver") is True
    assert not ran.exists()
    supervisor._start("kube-scheduler")  # stopped: kwokctl runs
    assert ran.exists()


def test_the_liveness_probe_kills_after_eight_failures_in_a_row_once_it_answered() -> None:
    probe = LivenessProbe()
    assert not any(probe.observe(100, ok=False) for _ in range(20))  # still starting up
    assert not probe.observe(100, ok=True)
    assert [probe.observe(100, ok=False) for _ in range(8)] == [False] * 7 + [True]
    probe.observe(100, ok=True)
    assert probe.failures == 0
    assert not any(probe.observe(101, ok=False) for _ in range(8))  # a new process starts over


def test_an_api_server_killed_by_its_liveness_probe_exits_unhealthy_and_is_restarted(
    apiserver_process: tuple[subprocess.Popen[bytes], Path],
) -> None:
    # a storm can leave kube-apiserver alive under its memory limit, answering nothing for
    # minutes (seen here: 9 min); kubelet's liveness probe would restart it
    proc, root = apiserver_process
    supervisor, _ = _supervisor(root)
    supervisor.tick(time.time())
    assert not supervisor.observe_liveness(proc.pid, ok=True)
    killed = [supervisor.observe_liveness(proc.pid, ok=False) for _ in range(8)]
    assert killed == [False] * 7 + [True]
    liveness.kill(proc.pid, grace=5)
    proc.wait()
    now = time.time()
    assert supervisor.tick(now) == []
    record = supervisor.records["kube-apiserver"]
    assert record.last_exit == "Unhealthy"
    assert record.liveness_kills == 1
    kills = 'blackstart_control_plane_liveness_kills_total{component="kube-apiserver"} 1'
    assert kills in metrics_lines(supervisor.snapshot())
    assert supervisor.tick(now + 11) == ["kube-apiserver"]


def test_a_process_frozen_on_purpose_is_not_probed() -> None:
    proc = subprocess.Popen(["sleep", "60"])
    try:
        assert liveness.probed(proc.pid)
        proc.send_signal(signal.SIGSTOP)
        deadline = time.monotonic() + 5
        while liveness.probed(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not liveness.probed(proc.pid)
    finally:
        proc.kill()
        proc.wait()
    assert not liveness.probed(proc.pid)


def test_the_control_plane_starts_with_its_memory_limit_and_gets_its_cpu_limit_once_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """kwokctl starts every component inside the cgroup: they must not start on one API
    server's CPU share; the spec's CPU limit comes with limit_control_plane."""
    from blackstart.clusters.local import control_plane
    from blackstart.clusters.local.provider import LocalProvider
    from blackstart.clusters.spec import ControlPlaneSize

    root = fake_v1(tmp_path / "cgroup")
    monkeypatch.setattr(
        control_plane, "ControlPlaneCgroup", lambda name: ControlPlaneCgroup(name, root)
    )
    monkeypatch.setattr(control_plane, "host_resources", lambda: (2, 8 * GiB))
    provider = LocalProvider(tmp_path / "cache", progress=lambda m: None)
    join = provider.prepare_control_plane_cgroup("incident", ControlPlaneSize(1.0, GiB))
    assert join is not None
    cpu = root / "cpu/blackstart/incident/control-plane/cpu.cfs_quota_us"
    memory = root / "memory/blackstart/incident/control-plane/memory.limit_in_bytes"
    assert cpu.read_text() == "200000"  # both cores of this machine: no limit yet
    assert memory.read_text() == str(GiB)


def test_bring_up_goes_on_while_the_supervisor_starts_and_a_dead_one_is_an_error(
    tmp_path: Path,
) -> None:
    from blackstart.clusters.local.control_plane import SUPERVISOR
    from blackstart.clusters.local.provider import LocalProvider
    from blackstart.clusters.provider import ClusterError

    provider = LocalProvider(tmp_path / "cache", progress=lambda m: None)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    pid_file = provider.pid_file("incident", SUPERVISOR)
    pid_file.parent.mkdir(parents=True)
    pid_file.write_text(str(gone.pid))
    with pytest.raises(ClusterError, match="supervisor of incident exited"):
        provider.wait_supervisor("incident", timeout=5.0)


def test_a_reset_request_starts_the_crash_loop_backoff_over_and_ends_a_wait(
    apiserver_process: tuple[subprocess.Popen[bytes], Path],
) -> None:
    # five OOM kills in a row left kube-apiserver waiting 160 s; a rollback's reset makes the
    # next experiment's first kill wait kubelet's first 10 s again
    proc, root = apiserver_process
    supervisor, _ = _supervisor(root)
    supervisor.tick(time.time())
    record = supervisor.records["kube-apiserver"]
    record.backoff.failures = 4
    proc.kill()
    proc.wait()
    now = time.time()
    assert supervisor.tick(now) == []
    assert record.next_start_at == pytest.approx(now + 160)
    request_backoff_reset(supervisor.state_dir, "kube-apiserver")
    assert supervisor.tick(now + 1) == ["kube-apiserver"]  # its wait ends at once
    assert not reset_file(supervisor.state_dir, "kube-apiserver").exists()
    assert record.backoff.next_delay(0.0) == 10.0
