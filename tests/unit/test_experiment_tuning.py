"""Users tune the catalogue's targets and limits with `chaos run --var` and suite variables."""

import json
from pathlib import Path
from typing import Any

import pytest
from chaoslib import convert_vars, substitute
from chaoslib.configuration import load_configuration
from chaoslib.secret import load_secrets

from blackstart.suite import chaos_var_arguments, load_suite

REPO = Path(__file__).resolve().parents[2]
EXPERIMENTS = sorted((REPO / "experiments").glob("*.json"))


def placeholders(node: Any) -> set[str]:
    if isinstance(node, dict):
        return set().union(*(placeholders(v) for v in node.values())) if node else set()
    if isinstance(node, list):
        return set().union(*(placeholders(v) for v in node)) if node else set()
    if isinstance(node, str) and node.startswith("${") and node.endswith("}"):
        return {node[2:-1]}
    return set()


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.stem)
def test_every_placeholder_has_a_default_in_the_configuration(path: Path) -> None:
    experiment = json.loads(path.read_text())
    used = placeholders({k: v for k, v in experiment.items() if k != "configuration"})
    assert used <= set(experiment["configuration"]), used - set(experiment["configuration"])


def test_the_catalogue_takes_its_targets_from_configuration() -> None:
    tuned = [p.stem for p in EXPERIMENTS if len(json.loads(p.read_text())["configuration"]) > 1]
    assert len(tuned) == len(EXPERIMENTS)


def test_a_var_on_the_command_line_changes_the_node_and_keeps_the_type() -> None:
    experiment = json.loads((REPO / "experiments/xid-62-cordon.json").read_text())
    extra = convert_vars(["xid_node=gpu-7", "cordon_within_s:int=9"])
    config = load_configuration(experiment["configuration"], extra)
    inject = next(a for a in experiment["method"] if a["name"] == "inject-xid-62-on-gpu-3")
    args = substitute(inject["provider"]["arguments"], config, {})
    assert args["node"] == "gpu-7"
    probe = experiment["steady-state-hypothesis"]["probes"][1]
    assert substitute(probe["provider"]["arguments"], config, {})["within_s"] == 9
    defaults = load_configuration(experiment["configuration"], {})
    assert substitute(inject["provider"]["arguments"], defaults, {})["node"] == "gpu-3"


@pytest.mark.parametrize("stem", ["xid-48-drain-reboot", "xid-79-warm-standby"])
def test_the_gpu_capacity_tolerance_follows_the_fleets_floor(stem: str) -> None:
    from chaoslib.hypothesis import within_tolerance

    experiment = json.loads((REPO / f"experiments/{stem}.json").read_text())
    [probe] = [
        p
        for p in experiment["steady-state-hypothesis"]["probes"]
        if p["provider"]["func"] == "schedulable_gpu_capacity"
    ]
    defaults = load_configuration(experiment["configuration"], {})
    on_kind = load_configuration(experiment["configuration"], convert_vars(["gpu_floor:int=8"]))
    assert substitute(probe["provider"]["arguments"], on_kind, {})["at_least"] == 8

    def holds(value: object, config: dict[str, Any]) -> bool:
        return within_tolerance(json.loads(json.dumps(probe["tolerance"])), value, config, {})

    assert holds(384, defaults) and not holds(383, defaults)
    assert holds(8, on_kind) and holds(12, on_kind) and not holds(7, on_kind)
    assert not holds(None, on_kind)  # the probe failed: no number, not met


def test_suite_variables_reach_chaos_typed() -> None:
    args = chaos_var_arguments({"xid_node": "gpu-9", "cordon_within_s": 8, "xid_fraction": 0.25})
    config = convert_vars([a for a in args if a != "--var"])
    assert config == {"xid_node": "gpu-9", "cordon_within_s": 8, "xid_fraction": 0.25}


def test_the_expected_outcome_is_written_once_in_the_suite() -> None:
    suite = load_suite(REPO / "experiments/gameday.yaml")
    expected = {entry.name: entry.expect for entry in suite.entries}
    assert expected["coredns-restart-during-outage"] == "deviated"
    assert expected["xid-62-cordon"] == "completed"


def test_a_secrets_block_targets_a_kubeconfig_and_context() -> None:
    """`chaos run --var-file staging.yaml` with a `secrets: {kubernetes: ...}` section."""
    experiment = json.loads((REPO / "experiments/xid-62-cordon.json").read_text())
    unset = load_secrets(experiment["secrets"], {})
    assert unset["kubernetes"] == {"KUBECONFIG": "", "KUBERNETES_CONTEXT": ""}
    staging = {"KUBECONFIG": "/home/me/.kube/staging", "KUBERNETES_CONTEXT": "staging-gpu"}
    secrets = load_secrets(experiment["secrets"], {}, {"kubernetes": staging})
    assert secrets["kubernetes"] == staging
    assert all(a["provider"]["secrets"] == ["kubernetes"] for a in experiment["method"])
