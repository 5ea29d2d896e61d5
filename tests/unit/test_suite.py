"""The game-day suite file: the catalogue suite, and errors that name the entry and field."""

from __future__ import annotations

from pathlib import Path

import pytest
from chaoslib import convert_vars

from blackstart.suite import SuiteError, chaos_var_arguments, load_suite

REPO = Path(__file__).resolve().parents[2]
CATALOGUE = [
    "xid-62-cordon",
    "xid-48-drain-reboot",
    "xid-79-warm-standby",
    "xid-storm-guard",
    "telemetry-storm-apf",
    "telemetry-storm",
    "control-plane-outage-dns",
    "coredns-restart-during-outage",
    "coredns-restart-during-outage-mitigated",
    "coredns-outage",
    "xid-during-apiserver-outage",
    "dns-chain-during-storm",
    "dns-chain-during-storm-mitigated",
    "remedy-remove-telemetry-service",
    "remedy-block-network",
    "remedy-scale-down",
    "remedy-grow-apiserver",
    "staged-rollout-guard",
]
# the entries that run on the default kind fleet (one control plane, two GPU workers)
KIND_RUNS = [
    "xid-62-cordon",
    "xid-48-drain-reboot",
    "xid-79-warm-standby",
    "telemetry-storm-apf",
    "telemetry-storm",
    "control-plane-outage-dns",
    "coredns-restart-during-outage",
    "coredns-outage",
    "xid-during-apiserver-outage",
    "staged-rollout-guard",
]
# what each entry demonstrates: a known weakness deviates, a fix completes
DEVIATES = {"telemetry-storm", "coredns-restart-during-outage", "dns-chain-during-storm"}
EXPERIMENT = '{"title": "t", "method": [{"type": "action", "name": "a"}]}'


def write_suite(tmp_path: Path, text: str, files: tuple[str, ...] = ("a.json",)) -> Path:
    for name in files:
        (tmp_path / name).write_text(EXPERIMENT)
    path = tmp_path / "suite.yaml"
    path.write_text(text)
    return path


def test_the_catalogue_suite_lists_the_experiments_and_the_incident_end_to_end() -> None:
    suite = load_suite(REPO / "experiments" / "gameday.yaml")
    assert suite.name == "catalogue"
    assert [e.name for e in suite.entries] == CATALOGUE
    expects = {e.name: e.expect for e in suite.entries}
    assert {name for name, expect in expects.items() if expect == "deviated"} == DEVIATES
    for entry in suite.entries:
        assert entry.path.exists(), entry.path
        assert 60 <= entry.timeout <= 1800
        if entry.name.endswith("-mitigated"):  # the same file, with the mitigation switched on
            assert entry.variables == {"dns_mitigation": True}
            assert entry.path.stem == entry.name.removesuffix("-mitigated")
        elif entry.path.parent.name != "incident":
            assert entry.path == REPO / "experiments" / f"{entry.name}.json"


def test_defaults_apply_and_entries_override_them(tmp_path: Path) -> None:
    path = write_suite(
        tmp_path,
        """
suite: small
defaults: {timeout: 120, variables: {rate: 5, name: x}}
experiments:
  - name: a
    variables: {rate: 7}
  - name: b
    file: a.json
    expect: deviated
    timeout: 30
""",
    )
    suite = load_suite(path)
    a, b = suite.entries
    assert (a.timeout, dict(a.variables), a.expect) == (
        120.0,
        {"rate": 7, "name": "x"},
        "completed",
    )
    assert (b.path, b.expect, b.timeout) == (tmp_path / "a.json", "deviated", 30.0)


def test_a_provider_section_adds_variables_or_keeps_the_entry_off_that_provider(
    tmp_path: Path,
) -> None:
    path = write_suite(
        tmp_path,
        """
defaults: {variables: {node: gpu-3, rate: 5}}
experiments:
  - name: a
    providers:
      kind: {variables: {node: gpu-0}}
  - name: b
    file: a.json
    providers:
      kind: {not_run: "  needs the local control plane  "}
      context: {not_run: needs blackstart's own cluster}
""",
    )
    local = load_suite(path)
    assert local.provider == "local"
    assert [(dict(e.variables), e.not_run) for e in local.entries] == [
        ({"node": "gpu-3", "rate": 5}, ""),
        ({"node": "gpu-3", "rate": 5}, ""),
    ]
    kind = load_suite(path, provider="kind")
    assert [(dict(e.variables), e.not_run) for e in kind.entries] == [
        ({"node": "gpu-0", "rate": 5}, ""),
        ({"node": "gpu-3", "rate": 5}, "needs the local control plane"),
    ]
    assert load_suite(path, provider="context").entries[1].not_run == (
        "needs blackstart's own cluster"
    )
    with pytest.raises(SuiteError, match="provider must be one of local, kind, context"):
        load_suite(path, provider="eks")


def test_the_catalogue_says_why_each_entry_it_keeps_off_kind_does_not_run_there() -> None:
    kind = load_suite(REPO / "experiments" / "gameday.yaml", provider="kind")
    runs = [e.name for e in kind.entries if not e.not_run]
    assert runs == KIND_RUNS
    for entry in kind.entries:
        assert entry.not_run == "" or len(entry.not_run) > 30, entry.name
    # the local game day runs every entry
    assert not [e for e in load_suite(REPO / "experiments" / "gameday.yaml").entries if e.not_run]


def test_only_keeps_the_named_entries_and_skips_checking_the_others(tmp_path: Path) -> None:
    path = write_suite(tmp_path, "experiments: [a, not-written-yet]")
    assert [e.name for e in load_suite(path, only=["a"]).entries] == ["a"]
    with pytest.raises(SuiteError, match=r"experiments\[1\] \(not-written-yet\): experiment file"):
        load_suite(path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("experiments: [a]\nexpect: x", "unknown field(s) 'expect'; allowed: suite, description"),
        (
            "experiments:\n  - {name: a, expect: pass}",
            "experiments[0] (a): 'expect' must be one of completed, deviated",
        ),
        (
            "experiments:\n  - {name: a, timeout: -1}",
            "experiments[0] (a): 'timeout' must be more than 0 seconds",
        ),
        (
            "experiments:\n  - {name: a, timeout: soon}",
            "'timeout' must be a number of seconds, found 'soon'",
        ),
        ("experiments:\n  - {name: a, timout: 5}", "experiments[0] (a): unknown field(s) 'timout'"),
        (
            "experiments:\n  - {name: a}\n  - {name: a}",
            "experiments[1] (a): the name is already used by experiments[0]",
        ),
        ("experiments:\n  - {name: ../x}", "experiments[0]: 'name' must be letters, digits"),
        ("experiments:\n  - {name: a, variables: [1]}", "'variables' must be a mapping"),
        ("experiments:\n  - {name: a, variables: {'k:int': 1}}", "variable name 'k:int'"),
        ("experiments:\n  - {name: a, variables: {k: null}}", "variable 'k' has no value"),
        ("experiments: []", "'experiments' must be a non-empty list"),
        (
            "experiments:\n  - {name: a, providers: {eks: {not_run: x}}}",
            "experiments[0] (a): providers.eks: unknown provider; use one of local, kind",
        ),
        (
            "experiments:\n  - {name: a, providers: {kind: {not_run: ''}}}",
            "providers.kind: 'not_run' must say why the experiment does not run there",
        ),
        (
            "experiments:\n  - {name: a, providers: {kind: {skip: yes}}}",
            "providers.kind: unknown field(s) 'skip'; allowed: variables, not_run",
        ),
        ("experiments:\n  - {name: a, providers: [kind]}", "'providers' must map a provider"),
        ("- a\n- b", "a suite is a mapping with an 'experiments' list, found a list"),
        ("experiments: [a\n", "not valid YAML (line 2, column 1)"),
        ("defaults: {expect: maybe}\nexperiments: [a]", "defaults: 'expect' must be one of"),
        ("experiments:\n  - {name: a, file: missing.json}", "experiment file "),
    ],
)
def test_wrong_suites_are_refused_naming_entry_and_field(
    tmp_path: Path, text: str, message: str
) -> None:
    path = write_suite(tmp_path, text)
    with pytest.raises(SuiteError) as err:
        load_suite(path)
    assert str(err.value).startswith(f"{path}: ")
    assert message in str(err.value)


def test_an_experiment_file_that_is_not_an_experiment_is_refused(tmp_path: Path) -> None:
    path = write_suite(tmp_path, "experiments: [a]")
    (tmp_path / "a.json").write_text('{"status": "completed"}')
    with pytest.raises(SuiteError, match=r"a.json is not a Chaos Toolkit experiment"):
        load_suite(path)
    (tmp_path / "a.json").write_text("{")
    with pytest.raises(SuiteError, match="is not valid JSON/YAML"):
        load_suite(path)


def test_unknown_only_names_list_what_the_suite_has(tmp_path: Path) -> None:
    path = write_suite(tmp_path, "experiments: [a]")
    with pytest.raises(
        SuiteError, match="--only names no entry of this suite: b; the suite has: a"
    ):
        load_suite(path, only=["b"])


def test_a_missing_suite_file_says_how_to_pass_one(tmp_path: Path) -> None:
    with pytest.raises(SuiteError, match="no such suite file; pass --suite FILE"):
        load_suite(tmp_path / "none.yaml")


def test_variables_reach_chaos_toolkit_with_their_types() -> None:
    variables = {
        "name": "gpu-3",
        "count": 4,
        "ratio": 0.5,
        "dry": True,
        "codes": [48, 79],
        "labels": {"pool": "gpu"},
    }
    args = chaos_var_arguments(variables)
    assert args[0::2] == ["--var"] * len(variables)
    # chaoslib's own parser of --var values gives the same values back
    assert convert_vars(args[1::2]) == variables
