"""The Chaos Toolkit activities check their arguments and say what is wrong; discovery
lists every activity with the right type; the catalogue experiments are valid.

No cluster: every call here fails on its arguments before reaching for one, or
exercises pure helpers (line formats, Corefiles, the journal's fault windows).
"""

from __future__ import annotations

import importlib
import inspect
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from chaoslib.exceptions import ActivityFailed, InterruptExecution

from blackstart import discover
from blackstart.actions import (
    _storm,
    apf,
    apiserver,
    dns,
    nodes,
    rescue_policy,
    seed,
    workload,
    xid,
)
from blackstart.actions import telemetry_storm as storm
from blackstart.clusters.local.coredns import CorednsConfig, render_corefile
from blackstart.controls import guard, metrics
from blackstart.discovery import ACTION_MODULES, PROBE_MODULES
from blackstart.probes import apiserver as apiserver_probes
from blackstart.probes import dns as dns_probes
from blackstart.probes import fleet, prometheus, rescue
from blackstart.rescue.wire.xid import parse_lines
from blackstart.target import Target, cluster_target

REPO = Path(__file__).resolve().parents[2]
EXPERIMENTS = sorted((REPO / "experiments").glob("*.json"))
INCIDENT = sorted((REPO / "experiments" / "incident").glob("*.json"))


@pytest.fixture(autouse=True)
def empty_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No blackstart cluster exists: an activity that got past its checks would fail loudly."""
    monkeypatch.setenv("BLACKSTART_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("BLACKSTART_CLUSTER", "no-such-cluster")
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing-kubeconfig"))
    monkeypatch.delenv("BLACKSTART_ALLOWED_CONTEXTS", raising=False)


def fails_naming(call: Any, *words: str) -> str:
    with pytest.raises(ActivityFailed) as caught:
        call()
    message = str(caught.value)
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"
    return message


# ------------------------------------------------------------- argument checks
@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"clients": 0}, ("clients", "1 to 5000")),
        ({"clients": 6000}, ("clients",)),
        ({"clients": True}, ("clients",)),
        ({"rate_per_client": 50}, ("rate_per_client",)),
        ({"duration_s": 3600}, ("duration_s", "600")),
        ({"threads": 0}, ("threads",)),
        ({"threads": 65}, ("threads", "64")),
        ({"clients": 5000, "rate_per_client": 1.0}, ("requests/s", "bound")),
        ({"resources": ["secrets"]}, ("secrets", "pods")),
        ({"limit": 0}, ("limit",)),
        ({"synchronized": "yes"}, ("synchronized",)),
    ],
)
def test_telemetry_storm_refuses_out_of_bound_arguments(
    kwargs: dict[str, Any], words: tuple[str, ...]
) -> None:
    fails_naming(lambda: storm.start_telemetry_storm(**kwargs), *words)


def test_storm_settings_cap_threads_at_clients_and_keep_the_resources() -> None:
    settings = storm.storm_settings(5, 1.0, 10, ["pods", "nodes"], None, 16, True, 10)
    assert settings.threads == 5
    assert settings.resources == ("pods", "nodes")
    assert settings.limit is None


def test_stopping_a_storm_that_never_started_is_a_safe_rollback() -> None:
    assert storm.stop_telemetry_storm()["state"] == "none"
    fails_naming(lambda: storm.wait_for_telemetry_storm(), "no telemetry storm")


def test_percentile_by_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert _storm.percentile(values, 0.5) == 50.0
    assert _storm.percentile(values, 0.99) == 99.0
    assert _storm.percentile([], 0.99) is None


def test_storm_refuses_an_api_server_off_loopback() -> None:
    fails_naming(lambda: storm._check_loopback("https://10.0.0.1:6443"), "loopback")
    storm._check_loopback("https://127.0.0.1:6443")
    storm._check_loopback("https://localhost:6443")


@pytest.mark.parametrize(
    ("call", "words"),
    [
        (lambda: seed.seed_objects(pods=-1), ("pods", "0 to 20000")),
        (lambda: seed.seed_objects(payload_kib=500), ("payload_kib", "200")),
        (lambda: seed.seed_objects(workers=0), ("workers",)),
        (lambda: seed.seed_objects(namespace=""), ("namespace",)),
        (lambda: apf.apply_apf_mitigation(subject_kind="Robot"), ("subject_kind", "Robot")),
        (lambda: apf.apply_apf_mitigation(subject=""), ("subject",)),
        (
            lambda: apf.apply_apf_mitigation(subject="sa", subject_kind="ServiceAccount"),
            ("namespace/name",),
        ),
        (lambda: apf.apply_apf_mitigation(precedence=1), ("precedence", "2 to 9999")),
        (lambda: apf.apply_apf_mitigation(concurrency_shares=0), ("concurrency_shares",)),
        (lambda: apiserver.stop_apiserver(grace_s=-1), ("grace_s",)),
        (lambda: apiserver.start_apiserver(timeout_s=0), ("timeout_s",)),
        (lambda: apiserver.start_etcd(timeout_s=10000), ("timeout_s",)),
        (lambda: nodes.stop_kwok_controller(wait_not_ready_s=-1), ("wait_not_ready_s",)),
        (lambda: nodes.start_kwok_controller(timeout_s=0), ("timeout_s",)),
        (lambda: dns.drop_dns_answers(share=2), ("share",)),
        (lambda: dns.add_dns_latency(pause_ms=500, period_ms=400), ("pause_ms", "shorter")),
        (lambda: dns.add_dns_latency(pause_ms=0), ("pause_ms",)),
        (lambda: dns.add_dns_latency(duration_s=3600), ("duration_s",)),
        (lambda: dns.kill_coredns(restart_after_s=-1), ("restart_after_s",)),
        (lambda: dns.restart_coredns(wait_ready="yes"), ("wait_ready",)),
        (lambda: dns.break_coredns_config(restart=1), ("restart",)),
        (lambda: xid.inject_xid(node="gpu-0", xid=0), ("xid", "1 to 999")),
        (lambda: xid.inject_xid(node="gpu-0", pci="not-a-pci"), ("pci", "0000:03:00")),
        (lambda: xid.inject_xid(node="gpu-0", count=0), ("count",)),
        (lambda: xid.inject_xid(node="gpu-0", line_format="json"), ("line_format", "kmsg")),
        (lambda: xid.inject_xid(), ("node", "node_with_pods")),
        (lambda: xid.xid_storm(fraction=0), ("fraction",)),
        (lambda: xid.xid_storm(fraction=1.5), ("fraction",)),
        (lambda: xid.restore_xid_nodes(timeout_s=-1), ("timeout_s",)),
        (lambda: xid.restore_xid_nodes(plans_within_s="soon"), ("plans_within_s",)),
        (lambda: workload.deploy_gpu_workload(replicas=0), ("replicas",)),
        (lambda: workload.deploy_gpu_workload(gpus_per_pod=0), ("gpus_per_pod",)),
        (lambda: rescue_policy.apply_rescue_policy("p", rules=[]), ("rules", "non-empty")),
        (lambda: rescue_policy.apply_warm_standby_policy("p", matches=[]), ("matches",)),
        (lambda: rescue_policy.apply_rescue_policy("", rules=[{}]), ("name",)),
    ],
)
def test_actions_name_the_argument_that_is_wrong(call: Any, words: tuple[str, ...]) -> None:
    fails_naming(call, *words)


@pytest.mark.parametrize(
    ("call", "words"),
    [
        (lambda: dns_probes.dns_resolution(attempts=0), ("attempts",)),
        (lambda: dns_probes.dns_resolution(timeout_s=0), ("timeout_s",)),
        (lambda: dns_probes.dns_resolution(names=[""], server="127.0.0.1:53"), ("names",)),
        (lambda: dns_probes.dns_resolution(server="localhost"), ("host:port",)),
        (lambda: apiserver_probes.apiserver_p99_seconds(window="1 minute"), ("window", "30s")),
        (lambda: apiserver_probes.apiserver_429_per_second(window="5x"), ("window",)),
        (lambda: apiserver_probes.apiserver_ready(timeout_s=0), ("timeout_s",)),
        (lambda: apiserver_probes.apiserver_request_latency(requests=0), ("requests",)),
        (
            lambda: apiserver_probes.apiserver_request_latency(spacing_s=-1),
            ("spacing_s", "0 to 60"),
        ),
        (lambda: prometheus.prometheus_value(query=""), ("query", "PromQL")),
        (lambda: prometheus.prometheus_query(query="  "), ("query",)),
        (lambda: fleet.gpu_workload_running_ratio(expected=0), ("expected",)),
        (lambda: fleet.lowest_schedulable_share(duration_s=-1), ("duration_s",)),
        (lambda: rescue.xid_nodes_cordoned_within(within_s=-1), ("within_s",)),
        (lambda: rescue.rescue_plans_succeeded(timeout_s="soon"), ("timeout_s",)),
        (lambda: rescue.storm_guard_refusals(min_count=-1), ("min_count",)),
    ],
)
def test_probes_name_the_argument_that_is_wrong(call: Any, words: tuple[str, ...]) -> None:
    fails_naming(call, *words)


def test_a_missing_cluster_says_how_to_create_it() -> None:
    message = fails_naming(lambda: cluster_target("nowhere"), "nowhere")
    assert "blackstart cluster up --name nowhere" in message


def test_an_action_on_a_missing_default_cluster_fails_naming_it() -> None:
    fails_naming(lambda: apiserver.stop_apiserver(), "no-such-cluster")


def test_local_only_actions_refuse_a_plain_context() -> None:
    target = Target(provider="context", kubeconfig="/tmp/kc", context="prod")
    message = fails_naming(lambda: target.require_state("stop_apiserver"), "stop_apiserver")
    assert "prod" in message and "blackstart_cluster" in message


# ------------------------------------------------------------- pure helpers
@pytest.mark.parametrize("line_format", xid.LINE_FORMATS)
def test_injected_lines_parse_back_in_every_format(line_format: str, tmp_path: Path) -> None:
    log = tmp_path / "gpu-3.log"
    log.write_text("3,41,1000,-;NVRM: some earlier message\n")
    bodies = [
        "NVRM: GPU at PCI:0000:03:00: GPU-6a9b3c1e-0f2d-4e7a-9c55-1b2d3e4f5a6b",
        xid.xid_body(62, "0000:03:00", "", 4242),
        xid.xid_body(79, "0000:03:00", "", 4242),
    ]
    lines = xid.format_lines(bodies, line_format, "gpu-3", log, boot_time=0.0)
    events = list(parse_lines(lines))
    assert [(e.xid, e.pci) for e in events] == [(62, "0000:03:00"), (79, "0000:03:00")]
    assert events[0].uuid == "GPU-6a9b3c1e-0f2d-4e7a-9c55-1b2d3e4f5a6b"
    if line_format == "kmsg":  # the sequence continues the file's
        assert [e.seq for e in events] == [43, 44]


@pytest.mark.parametrize("line_format", xid.LINE_FORMATS)
def test_injected_mig_and_bare_records_parse_back_in_every_format(
    line_format: str, tmp_path: Path
) -> None:
    log = tmp_path / "gpu-3.log"
    log.write_text("")
    bodies = [
        xid.xid_body(43, "0000:c1:00", "", 4242, gpu_instance="07"),
        xid.xid_body(43, "0000:c1:00", "", 4242, gpu_instance="07", compute_instance="00"),
        xid.xid_body(45, "0000:c1:00", "", 4242, bare=True),
    ]
    assert bodies[1].startswith("NVRM: Xid (PCI:0000:c1:00 GPU-I:07 GPU-CI:00): 43, ")
    assert bodies[2] == "NVRM: Xid (PCI:0000:c1:00): 45"
    lines = xid.format_lines(bodies, line_format, "gpu-3", log, boot_time=0.0)
    events = list(parse_lines(lines))
    assert [(e.xid, e.gpu_instance, e.compute_instance, e.message) for e in events] == [
        (43, "07", None, "Ch 00000010"),
        (43, "07", "00", "Ch 00000010"),
        (45, None, None, ""),
    ]


@pytest.mark.parametrize(
    ("gpu_instance", "compute_instance"), [("7a", ""), ("", "00"), (7, ""), ("12345", "")]
)
def test_a_malformed_mig_instance_is_refused_naming_the_field(
    gpu_instance: object, compute_instance: object
) -> None:
    fails_naming(
        lambda: xid.inject_xid(
            node="gpu-1",
            gpu_instance=gpu_instance,  # type: ignore[arg-type]
            compute_instance=compute_instance,  # type: ignore[arg-type]
        ),
        "instance",
    )


def test_every_default_xid_message_parses_with_its_code() -> None:
    for code in [*xid.MESSAGES, 999]:
        body = xid.xid_body(code, "0000:b3:00", "", 1)
        (event,) = parse_lines([f"[ 12.000001] {body}"])
        assert (event.xid, event.pci) == (code, "0000:b3:00")


def test_the_drop_corefile_routes_a_share_to_erratic_and_keeps_the_normal_block() -> None:
    cfg = CorednsConfig(Path("/kc"), 5353, 1, 2, 3)
    text = dns.drop_corefile(cfg, 0.25)
    assert "expr id() % 1000 < 250" in text
    assert "drop 1" in text
    assert text.endswith(render_corefile(cfg))


def test_apf_bodies_confine_the_subject_to_its_own_level() -> None:
    plc = apf.priority_level("confined", 1, 4, 16, reject=False)
    fs = apf.flow_schema("confined", "Group", "blackstart:telemetry-agents", 500)
    assert plc["spec"]["limited"]["nominalConcurrencyShares"] == 1
    assert plc["spec"]["limited"]["limitResponse"]["type"] == "Queue"
    assert fs["spec"]["priorityLevelConfiguration"] == {"name": "confined"}
    assert fs["spec"]["rules"][0]["subjects"] == [
        {"kind": "Group", "group": {"name": "blackstart:telemetry-agents"}}
    ]
    assert apf.priority_level("r", 1, 4, 16, reject=True)["spec"]["limited"]["limitResponse"] == {
        "type": "Reject"
    }


# ------------------------------------------------------------------- controls
def test_guard_refuses_a_context_it_was_not_told_about(monkeypatch: pytest.MonkeyPatch) -> None:
    prod = Target(provider="context", kubeconfig="/kc", context="prod-eu")
    ok, why = guard.target_allowed(prod, guard.allow_list({}, None))
    assert not ok and "BLACKSTART_ALLOWED_CONTEXTS" in why and "prod-eu" in why
    monkeypatch.setenv("BLACKSTART_ALLOWED_CONTEXTS", "staging, prod-eu")
    assert guard.target_allowed(prod, guard.allow_list({}, None))[0]
    assert guard.target_allowed(prod, guard.allow_list({}, ["prod-eu"]))[0]
    local = Target(provider="local", kubeconfig="/kc", context="kwok-x", cluster="x")
    assert guard.target_allowed(local, [])[0]


def test_guard_rejects_malformed_limits() -> None:
    with pytest.raises(InterruptExecution, match="max_cordoned_nodes"):
        guard.before_experiment_control({}, configuration={}, max_cordoned_nodes=-1)
    with pytest.raises(InterruptExecution, match="p99_window"):
        guard.before_experiment_control({}, configuration={}, p99_window="forever")


def test_a_failed_action_of_the_method_interrupts_and_fails_the_run() -> None:
    guard.configure_control()
    guard.before_method_control({})
    action = {"type": "action", "name": "inject-xid"}
    run = {"status": "failed", "exception": ["chaoslib.exceptions.ActivityFailed: no log\n"]}
    with pytest.raises(InterruptExecution, match="inject-xid"):
        guard.after_activity_control(action, state=run)
    journal: dict[str, Any] = {"status": "interrupted"}
    guard.after_experiment_control({}, state=journal)
    assert journal["status"] == "failed"
    (entry,) = journal["extensions"]
    assert entry["guard"]["failed_injection"].startswith("action 'inject-xid' failed: no log")


def test_a_failed_probe_or_rollback_does_not_interrupt() -> None:
    """Only a failed injection fails the run: a failed probe of the method is a measurement,
    a failed rollback is reported by chaoslib itself; neither interrupts nor fails the run."""
    guard.configure_control()
    guard.before_method_control({})
    guard.after_activity_control({"type": "probe"}, state={"status": "failed"})  # no raise
    guard.before_rollback_control({})
    guard.after_activity_control({"type": "action"}, state={"status": "failed"})  # no raise
    journal: dict[str, Any] = {"status": "completed"}
    guard.after_experiment_control({}, state=journal)
    assert journal["status"] == "completed"
    (entry,) = journal["extensions"]
    assert entry["guard"]["failed_injection"] is None and entry["guard"]["reason"] is None


def _activity(func: str, kind: str = "action") -> dict[str, Any]:
    return {"type": kind, "name": func.replace("_", "-"), "provider": {"func": func}}


def test_fault_windows_open_on_injection_and_close_on_their_undo() -> None:
    sampler = metrics._Sampler()
    sampler.phase = "method"
    run = {
        "status": "succeeded",
        "start": "2026-11-24T08:00:00+00:00",
        "end": "2026-11-24T08:00:01+00:00",
    }
    sampler.activity_done(_activity("stop_apiserver"), run)
    sampler.activity_done(_activity("inject_xid"), run)
    sampler.activity_done(_activity("inject_xid"), run)
    sampler.activity_done(_activity("apply_rescue_policy"), run)  # not a fault
    sampler.phase = "rollback"
    done = {"status": "succeeded", "start": "x", "end": "2026-11-24T08:01:00+00:00"}
    sampler.activity_done(_activity("start_apiserver"), done)
    sampler.activity_done(_activity("restore_xid_nodes"), done)
    assert [f["activity"] for f in sampler.faults] == ["stop_apiserver", "inject_xid", "inject_xid"]
    assert all(f["end"] == "2026-11-24T08:01:00Z" for f in sampler.faults)
    assert sampler.faults[0]["start"] == "2026-11-24T08:00:00Z"


def test_every_fault_action_is_undone_by_an_action_that_exists() -> None:
    names = {name for module in ACTION_MODULES for name in importlib.import_module(module).__all__}
    chaosk8s = {"cordon_node", "uncordon_node", "drain_nodes"}
    for fault, undos in metrics.FAULT_UNDONE_BY.items():
        assert fault in names | chaosk8s, fault
        assert set(undos) <= names | chaosk8s, undos


def test_xid_to_cordon_is_computed_from_the_plans() -> None:
    sampler = metrics._Sampler()
    sampler.plans["p"] = {
        "metadata": {"name": "p"},
        "spec": {"firstSeenAt": "2026-11-24T08:00:00Z"},
        "status": {"transitions": [{"phase": "Cordoned", "time": "2026-11-24T08:00:00.500Z"}]},
    }
    sampler.xid_to_cordon()
    assert sampler.series["xid_to_cordon_seconds"]["points"] == [
        ["2026-11-24T08:00:00.500000Z", 0.5]
    ]


# ------------------------------------------------------------------- discovery
def _exported(module: str) -> list[tuple[str, Any]]:
    mod = importlib.import_module(module)
    return [(name, getattr(mod, name)) for name in mod.__all__]


@pytest.mark.parametrize("module", ACTION_MODULES + PROBE_MODULES)
def test_activities_take_configuration_and_secrets_last_and_are_documented(module: str) -> None:
    for name, func in _exported(module):
        params = list(inspect.signature(func).parameters)
        assert params[-2:] == ["configuration", "secrets"], f"{module}.{name}"
        assert inspect.getdoc(func), f"{module}.{name} has no docstring for chaos discover"


def test_discover_lists_every_activity_with_its_type() -> None:
    found = {
        (a["mod"], a["name"]): a["type"] for a in discover(discover_system=False)["activities"]
    }
    expected = {(m, n): "action" for m in ACTION_MODULES for n, _ in _exported(m)}
    expected |= {(m, n): "probe" for m in PROBE_MODULES for n, _ in _exported(m)}
    assert found == expected
    assert found[("blackstart.probes.dns", "dns_resolution")] == "probe"
    assert found[("blackstart.actions.xid", "inject_xid")] == "action"


def test_every_module_of_the_packages_is_discovered() -> None:
    for package, listed in (("actions", ACTION_MODULES), ("probes", PROBE_MODULES)):
        on_disk = {
            f"blackstart.{package}.{p.stem}"
            for p in (REPO / package).glob("*.py")
            if not p.stem.startswith("_")
        }
        assert on_disk == set(listed), package


def test_chaos_discover_blackstart_lists_the_activities(tmp_path: Path) -> None:
    out = tmp_path / "discovery.json"
    chaos = Path(sys.executable).with_name("chaos")
    done = subprocess.run(
        [str(chaos), "--no-log-file", "discover", "blackstart", "--no-install",
         "--no-system-info", "--discovery-path", str(out)],
        capture_output=True, text=True, timeout=120, check=False, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    activities = json.loads(out.read_text())["activities"]
    types = {a["type"] for a in activities if a["mod"].startswith("blackstart.probes.")}
    assert types == {"probe"}
    types = {a["type"] for a in activities if a["mod"].startswith("blackstart.actions.")}
    assert types == {"action"}
    assert len(activities) == sum(len(_exported(m)) for m in ACTION_MODULES + PROBE_MODULES)


# ----------------------------------------------------------------- experiments
@pytest.mark.parametrize("path", EXPERIMENTS + INCIDENT, ids=lambda p: p.stem)
def test_catalogue_experiment_is_valid_and_always_rolls_back(path: Path) -> None:
    from chaoslib.experiment import ensure_experiment_is_valid

    experiment = json.loads(path.read_text())
    ensure_experiment_is_valid(experiment)  # imports every activity and binds its arguments
    assert experiment["runtime"]["rollbacks"]["strategy"] == "always"
    assert [c["name"] for c in experiment["controls"]] == [
        "blackstart-cluster",
        "blackstart-guard",
        "blackstart-metrics",
    ]
    # how it should end is written once, in the suite
    assert not [t for t in experiment.get("tags", []) if t.startswith("expected:")]
    assert "expected_status" not in json.dumps(experiment.get("extensions", []))
    assert experiment["steady-state-hypothesis"]["probes"]
    rollbacks = {r["provider"]["func"] for r in experiment["rollbacks"]}
    for activity in experiment["method"]:
        func = activity["provider"]["func"]
        if activity["type"] == "action" and func in metrics.FAULT_UNDONE_BY:
            assert rollbacks & set(metrics.FAULT_UNDONE_BY[func]), f"{func} has no rollback"


def test_the_catalogue_has_the_ten_experiments_of_the_issue() -> None:
    assert {p.stem for p in EXPERIMENTS} == {
        "xid-62-cordon",
        "xid-48-drain-reboot",
        "xid-79-warm-standby",
        "xid-storm-guard",
        "telemetry-storm",
        "telemetry-storm-apf",
        "control-plane-outage-dns",
        "coredns-restart-during-outage",
        "coredns-outage",
        "xid-during-apiserver-outage",
    }
