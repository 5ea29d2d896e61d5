"""The Docker engine blackstart starts: its daemon config, the capability-dropping runtime
and the egress firewall rules, checked without starting anything."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from blackstart.clusters import firewall
from blackstart.clusters.engine import RUNTIME_NAME, daemon_config, engine_paths
from blackstart.clusters.runc_caps import (
    CAPABILITIES,
    bounding_set,
    missing_capabilities,
    spec_file,
    strip_capabilities,
)

# CapBnd of this machine: every capability up to CAP_CHECKPOINT_RESTORE but CAP_SYS_RESOURCE.
THIS_MACHINE = 0x000001FFFEFFFFFF


def test_the_missing_capability_of_this_kind_of_machine_is_cap_sys_resource() -> None:
    assert missing_capabilities(THIS_MACHINE, 40) == ["CAP_SYS_RESOURCE"]
    assert missing_capabilities((1 << 41) - 1, 40) == []
    assert bounding_set("Name:\tx\nCapBnd:\t000001fffeffffff\n") == THIS_MACHINE
    assert CAPABILITIES[24] == "CAP_SYS_RESOURCE"


def test_the_runtime_finds_the_spec_runc_reads_for_create_run_and_exec() -> None:
    global_flags = ["--root", "/run/docker/runtime-runc/moby", "--log", "/x/log.json"]
    assert spec_file([*global_flags, "create", "--bundle", "/b", "id"]) == "/b/config.json"
    assert spec_file(["run", "-b", "/c", "id"]) == "/c/config.json"
    assert spec_file(["--systemd-cgroup", "create", "--bundle=/d", "id"]) == "/d/config.json"
    assert spec_file(["exec", "--process", "/tmp/p.json", "id"]) == "/tmp/p.json"
    assert spec_file(["--version"]) is None
    assert spec_file(["delete", "id"]) is None


def test_the_runtime_removes_missing_capabilities_from_every_set() -> None:
    everything = list(CAPABILITIES)
    process: dict[str, object] = {
        "capabilities": {name: list(everything) for name in ("bounding", "effective", "permitted")}
    }
    assert strip_capabilities(process, {"CAP_SYS_RESOURCE"})
    caps = process["capabilities"]
    assert isinstance(caps, dict)
    for kept in caps.values():
        assert "CAP_SYS_RESOURCE" not in kept
        assert len(kept) == len(everything) - 1
    assert not strip_capabilities(process, {"CAP_SYS_RESOURCE"})


def test_dockerd_gets_the_runtime_only_where_capabilities_are_missing(tmp_path: Path) -> None:
    paths = engine_paths(tmp_path)
    plain = daemon_config(paths, None)
    assert "default-runtime" not in plain
    assert plain["data-root"] == str(tmp_path / "engine" / "docker")
    assert plain["iptables"] is True
    wrapped = daemon_config(paths, paths.runtime)
    assert wrapped["default-runtime"] == RUNTIME_NAME
    assert wrapped["runtimes"] == {RUNTIME_NAME: {"path": str(paths.runtime)}}
    # No registry is reachable and none is configured.
    assert not {"registry-mirrors", "insecure-registries"} & set(json.loads(json.dumps(wrapped)))


GOOD_CHAIN = [
    f"-N {firewall.CHAIN}",
    f"-A {firewall.CHAIN} -o docker0 -j RETURN",
    f"-A {firewall.CHAIN} -o br-+ -j RETURN",
    f"-A {firewall.CHAIN} -i docker0 -j DROP",
    f"-A {firewall.CHAIN} -i br-+ -j DROP",
]
GOOD_PARENT = ["-N DOCKER-USER", f"-A DOCKER-USER -j {firewall.CHAIN}", "-A DOCKER-USER -j RETURN"]


def test_the_egress_rules_let_containers_talk_among_themselves_and_drop_the_rest() -> None:
    rules = [" ".join(rule) for rule in firewall.egress_rules()]
    assert rules == GOOD_CHAIN[1:]
    assert firewall.problems(GOOD_CHAIN, GOOD_PARENT, "DOCKER-USER") == []


@pytest.mark.parametrize(
    ("chain", "parent", "complaint"),
    [
        ([], GOOD_PARENT, "does not exist"),
        (GOOD_CHAIN[:-1], GOOD_PARENT, "expected"),
        (GOOD_CHAIN, ["-N DOCKER-USER", "-A DOCKER-USER -j RETURN"], "not the jump"),
        (
            GOOD_CHAIN,
            ["-N DOCKER-USER", "-A DOCKER-USER -j ACCEPT", f"-A DOCKER-USER -j {firewall.CHAIN}"],
            "not the jump",
        ),
    ],
)
def test_a_missing_or_outranked_egress_rule_is_reported(
    chain: list[str], parent: list[str], complaint: str
) -> None:
    found = firewall.problems(chain, parent, "DOCKER-USER")
    assert found and complaint in " ".join(found)
