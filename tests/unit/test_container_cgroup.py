"""A kind control-plane node's usage is read from its container's cgroup on the host."""

from __future__ import annotations

from pathlib import Path

from blackstart.clusters.local.cgroups import ControlPlaneCgroup, cgroup_of, container_cgroup

DOCKER = "docker/4f2c0e9a"


def proc_with(tmp_path: Path, pid: int, text: str) -> Path:
    proc = tmp_path / "proc"
    (proc / str(pid)).mkdir(parents=True)
    (proc / str(pid) / "cgroup").write_text(text)
    return proc


def test_a_v1_containers_cgroup_is_its_memory_controllers_path(tmp_path: Path) -> None:
    proc = proc_with(
        tmp_path,
        42,
        "12:pids:/docker/4f2c0e9a\n"
        "5:cpu,cpuacct:/docker/4f2c0e9a\n"
        f"4:memory:/{DOCKER}\n"
        "0::/system.slice/docker.service\n",
    )
    assert cgroup_of(42, proc) == Path(DOCKER)


def test_a_v2_containers_cgroup_is_its_unified_path(tmp_path: Path) -> None:
    proc = proc_with(tmp_path, 7, "0::/system.slice/docker-4f2c0e9a.scope\n")
    assert cgroup_of(7, proc) == Path("system.slice/docker-4f2c0e9a.scope")


def test_a_kind_nodes_cgroup_is_its_containers_not_the_init_scope_it_made_inside(
    tmp_path: Path,
) -> None:
    # what a kind node's init shows on this machine (cgroup v1, cgroupfs driver)
    proc = proc_with(
        tmp_path,
        8,
        f"4:memory:/{DOCKER}0123/init.scope\n2:cpuacct:/{DOCKER}0123\n0::/{DOCKER}0123/init.scope\n",
    )
    assert cgroup_of(8, proc) == Path(f"{DOCKER}0123/init.scope")
    assert container_cgroup(8, "4f2c0e9a0123" + "f" * 52, proc) == Path(f"{DOCKER}0123")
    systemd = proc_with(tmp_path / "s", 9, "0::/system.slice/docker-4f2c0e9a0123.scope\n")
    assert container_cgroup(9, "4f2c0e9a0123", systemd) == Path(
        "system.slice/docker-4f2c0e9a0123.scope"
    )


def test_a_process_that_is_gone_has_no_cgroup(tmp_path: Path) -> None:
    assert cgroup_of(99, tmp_path / "proc") is None


def test_the_usage_of_a_containers_v1_cgroup_is_read_where_it_is(tmp_path: Path) -> None:
    root = tmp_path / "cgroup"
    files = {
        "memory": {
            "memory.usage_in_bytes": "734003200",
            "memory.max_usage_in_bytes": "1073741824",
            "memory.limit_in_bytes": "1073741824",
            "memory.oom_control": "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n",
        },
        "cpu": {
            "cpu.cfs_quota_us": "200000",
            "cpu.cfs_period_us": "100000",
            "cpu.stat": "nr_periods 10\nnr_throttled 3\nthrottled_time 5\n",
        },
        "cpuacct": {"cpuacct.usage": "12500000000"},
    }
    for controller, contents in files.items():
        (root / controller / DOCKER).mkdir(parents=True)
        for name, text in contents.items():
            (root / controller / DOCKER / name).write_text(text)
    usage = ControlPlaneCgroup("kind-fleet", root, relative=Path(DOCKER)).usage()
    assert usage.memory_bytes == 734003200
    assert usage.memory_limit_bytes == 1 << 30
    assert usage.cpu_seconds == 12.5
    assert usage.cpu_quota == 2.0
    assert usage.oom_kills == 1
    assert usage.throttled_periods == 3
