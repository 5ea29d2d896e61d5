"""The telemetry pods' storm, as pure logic: their identity, their DaemonSet, their
program's bounds and the figures summed across pods. (On kind: tests/kind.)"""

from __future__ import annotations

import time

import pytest
from chaoslib.exceptions import ActivityFailed
from kubernetes.client import V1Pod, V1PodList, V1PodStatus
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import MaxRetryError

from blackstart import telemetry_agent
from blackstart.actions import _telemetry_pods as pods
from blackstart.actions import rollout
from blackstart.target import Target

SETTINGS = {
    "rate_per_client": 1.0,
    "resources": ["pods", "endpointslices"],
    "agents_per_pod": 2,
    "duration_s": 150.0,
    "request_timeout_s": 15.0,
    "until": 1_800_000_000.0,
}


def test_the_agents_identity_may_list_what_they_list_and_nothing_else() -> None:
    account, role, binding = pods.rbac_bodies("blackstart-telemetry")
    assert account["metadata"] == {"name": "telemetry-agent", "namespace": "blackstart-telemetry"}
    verbs = {verb for rule in role["rules"] for verb in rule["verbs"]}
    assert verbs == {"list"}
    listed = {r for rule in role["rules"] for r in rule["resources"]}
    assert listed == set(telemetry_agent.PATHS)
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "telemetry-agent", "namespace": "blackstart-telemetry"}
    ]
    assert binding["roleRef"]["name"] == role["metadata"]["name"]


def test_the_pods_run_the_agent_program_with_the_storms_bounds_and_a_figures_file() -> None:
    body = pods.pods_daemonset_body(
        rollout.daemonset_body(), "blackstart/rescue-agent:1", "storm-1234", SETTINGS, "Never"
    )
    spec = body["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    command = container["command"]
    assert command[:3] == ["python3", "-m", "blackstart.telemetry_agent"]
    args = dict(zip(command[3::2], command[4::2], strict=True))
    assert args == {
        "--storm-id": "storm-1234",
        "--resources": "pods,endpointslices",
        "--rate": "1",
        "--agents": "2",
        "--duration": "150",
        "--until": "1800000000",
        "--timeout": "15",
        "--figures": "/var/log/blackstart/telemetry/storm-1234.json",
    }
    # what the agent program accepts (it checks its bounds again)
    with pytest.raises(SystemExit):  # no in-cluster credentials here
        telemetry_agent.parse_args(command[3:])
    assert container["imagePullPolicy"] == "Never"
    assert spec["serviceAccountName"] == "telemetry-agent"
    assert spec["tolerations"] == [{"operator": "Exists"}]
    terms = spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert terms["nodeSelectorTerms"] == [
        {
            "matchExpressions": [
                {"key": "node-role.kubernetes.io/control-plane", "operator": "DoesNotExist"}
            ]
        }
    ]
    assert spec["volumes"][0]["hostPath"]["path"] == pods.FIGURES_DIR
    assert body["metadata"]["annotations"]["blackstart.dev/storm-id"] == "storm-1234"
    assert "memory" in container["resources"]["limits"]
    # the local service's DaemonSet is left as it was
    assert rollout.daemonset_body()["spec"]["template"]["spec"]["containers"][0]["name"] == "agent"
    assert "serviceAccountName" not in rollout.daemonset_body()["spec"]["template"]["spec"]


def test_a_staged_roll_outs_pods_go_only_to_the_nodes_labelled_for_its_storm() -> None:
    base = rollout.daemonset_body()
    everywhere = pods.pods_daemonset_body(base, "img:1", "storm-1", SETTINGS)
    assert "nodeSelector" not in everywhere["spec"]["template"]["spec"]
    staged = pods.pods_daemonset_body(base, "img:1", "storm-1", SETTINGS, staged=True)
    spec = staged["spec"]["template"]["spec"]
    assert spec["nodeSelector"] == {pods.STAGE_LABEL: "storm-1"}
    # still never on a control plane's node, whatever its labels
    (term,) = spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"
    ]
    assert term["matchExpressions"] == [
        {"key": pods.CONTROL_PLANE_LABEL, "operator": "DoesNotExist"}
    ]


@pytest.mark.parametrize(
    ("nodes", "stages", "pods_per_stage"),
    [(4, [25, 50, 100], [1, 2, 4]), (4, [1, 10], [1, 1]), (60, [1, 10, 50, 100], [1, 6, 30, 60])],
)
def test_each_stage_takes_its_share_of_the_nodes_at_least_one(
    nodes: int, stages: list[float], pods_per_stage: list[int]
) -> None:
    assert [rollout.stage_clients(nodes, s) for s in stages] == pods_per_stage


@pytest.mark.parametrize(
    ("key", "value", "named"),
    [
        ("rate_per_client", 11, "rate_per_client must be a number from 0.01 to 10"),
        ("agents_per_pod", 0, "agents_per_pod must be a whole number from 1 to 64"),
        ("agents_per_pod", 2.5, "agents_per_pod must be a whole number from 1 to 64"),
        ("duration_s", "long", "duration_s must be a number"),
        ("request_timeout_s", True, "request_timeout_s must be a number"),
        ("resources", ["pods", "secrets"], "unknown: secrets"),
        ("resources", [], "unknown: (none given)"),
    ],
)
def test_a_storm_out_of_bounds_is_refused_naming_what(key: str, value: object, named: str) -> None:
    with pytest.raises(ActivityFailed) as refused:
        pods.check_settings({**SETTINGS, key: value})
    assert named in str(refused.value)


def test_the_program_refuses_a_resource_it_may_not_list_and_runs_nowhere_without_credentials(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        telemetry_agent.parse_args(["--resources", "pods,secrets"])
    assert "unknown resource(s) secrets" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        telemetry_agent.parse_args(["--rate", "50"])
    assert "50 is not within 0.01..10" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        telemetry_agent.parse_args([])
    assert "no in-cluster credentials" in capsys.readouterr().err


def test_a_pod_started_again_after_the_storms_end_makes_no_calls() -> None:
    # started at monotonic 100 s, wall clock 1,000 s: the storm ends at wall 1,060 s
    assert telemetry_agent.call_deadline(100.0, 90.0, 0.0, 1000.0) == 190.0
    assert telemetry_agent.call_deadline(100.0, 90.0, 1060.0, 1000.0) == 160.0
    assert telemetry_agent.call_deadline(100.0, 90.0, 990.0, 1000.0) <= 100.0


def test_the_pods_figures_are_summed_and_their_latencies_pooled() -> None:
    storm = pods.PodStorm("storm-1", Target("kind", None, None, "bs"), 2, SETTINGS)
    figures = {
        "bs-worker": {"requests": 10, "ok": 8, "throttled_429": 1, "errors": 1,
                      "error_kinds": {"timed out": 1}, "bytes_read": 100, "elapsed_s": 5.0,
                      "latencies": [0.1] * 9 + [3.0], "client_cpu_s": 0.5, "state": "running"},
        "bs-worker2": {"requests": 10, "ok": 10, "throttled_429": 0, "errors": 0,
                       "error_kinds": {}, "bytes_read": 50, "elapsed_s": 4.0,
                       "latencies": [0.2] * 10, "client_cpu_s": 0.25, "state": "finished"},
    }  # fmt: skip
    report = pods.report(storm, figures)
    assert report["where"] == "pods" and report["state"] == "running"
    assert (report["requests"], report["ok"], report["throttled_429"], report["errors"]) == (
        20,
        18,
        1,
        1,
    )
    assert report["error_kinds"] == {"timed out": 1}
    assert report["clients"] == 4 and report["pods_reporting"] == 2
    assert report["target_rps"] == 8.0  # 4 agents x 1/s x 2 resources
    assert report["latency_s"]["max"] == 3.0 and report["latency_s"]["p50"] in (0.1, 0.2)
    assert report["achieved_rps"] == 4.0 and report["client_cpu_s"] == 0.75
    storm.ended_wall = "2026-12-01T00:00:00Z"
    assert pods.report(storm, figures)["state"] == "stopped"


class _RecordingNodes:
    """Answers each node PATCH with the next status of ``answers`` (None: it passes)."""

    def __init__(self, answers: list[int | None]) -> None:
        self.answers = answers
        self.calls: list[str] = []

    def patch_node(self, name: str, body: object, _request_timeout: float) -> None:
        self.calls.append(name)
        status = self.answers.pop(0) if self.answers else None
        if status is not None:
            raise ApiException(status=status, reason="refused")


def test_labelling_a_stage_does_not_retry_a_refusal_that_will_not_change() -> None:
    # a 403 stays a 403: before, each node was tried every 0.5 s until the deadline
    nodes = _RecordingNodes([403, 403])
    started = time.monotonic()
    failed = pods.label_stage(nodes, ["gpu-1", "gpu-2"], "storm-1", timeout_s=30.0)  # type: ignore[arg-type]
    assert failed == ["gpu-1", "gpu-2"]
    assert nodes.calls == ["gpu-1", "gpu-2"]
    assert time.monotonic() - started < 5.0


def test_labelling_a_stage_retries_a_throttled_or_failing_api_server() -> None:
    nodes = _RecordingNodes([429, 503, None, 404])
    failed = pods.label_stage(nodes, ["gpu-1", "gpu-2"], "storm-1", timeout_s=30.0)  # type: ignore[arg-type]
    assert failed == []  # gpu-1 after two retries; gpu-2 is gone: nothing to label
    assert nodes.calls == ["gpu-1", "gpu-1", "gpu-1", "gpu-2"]


class _CollapsingApiServer:
    """Lists the storm's pods as an API server its own storm takes down: the first answer
    has one of two pods Running, then no answer at all (the TLS session cut mid-read)."""

    def __init__(self) -> None:
        self.lists = 0

    def list_namespaced_pod(self, namespace: str, label_selector: str, _request_timeout: float):  # type: ignore[no-untyped-def]
        self.lists += 1
        if self.lists == 1:
            running = V1Pod(status=V1PodStatus(phase="Running"))
            pending = V1Pod(status=V1PodStatus(phase="Pending"))
            return V1PodList(items=[running, pending])
        raise MaxRetryError(None, "/api/v1/pods", "EOF occurred in violation of protocol")  # type: ignore[arg-type]


def test_pods_calling_while_their_storm_keeps_the_api_server_down_count_by_their_figures(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # on kind a limited control plane collapsed before the second pod's status reached it:
    # the roll-out failed on the API error, though both pods were calling
    made = Target("kind", None, None, "bs", state=object())  # type: ignore[arg-type]  # blackstart's
    storm = pods.PodStorm("storm-1", made, 2, SETTINGS)
    on_nodes = {"bs-worker": {"requests": 3}, "bs-worker2": {"requests": 1}}
    monkeypatch.setattr(pods, "read_figures", lambda s: on_nodes if s is storm else {})
    api = _CollapsingApiServer()
    assert pods.wait_until_calling(api, "ns", "app=x", storm, timeout_s=30.0) == 2  # type: ignore[arg-type]
    assert api.lists == 2


def test_a_storm_whose_pods_never_call_while_the_api_server_is_down_times_out_saying_so(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    made = Target("kind", None, None, "bs", state=object())  # type: ignore[arg-type]
    storm = pods.PodStorm("storm-1", made, 2, SETTINGS)
    monkeypatch.setattr(pods, "read_figures", lambda s: {"bs-worker": {}})
    monkeypatch.setattr(pods.time, "sleep", lambda s: None)
    with pytest.raises(ActivityFailed, match=r"1 of 2 .*last answer: MaxRetryError\)"):
        pods.wait_until_calling(_CollapsingApiServer(), "ns", "app=x", storm, timeout_s=0.05)  # type: ignore[arg-type]


def test_a_refusal_while_waiting_for_the_pods_is_waited_out_and_named_if_it_lasts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # a kube-apiserver restarted by the storm answers the admin 403 until its authorizer's
    # caches sync: the roll-out failed on it at once, with four pods calling
    class Refusing:
        def list_namespaced_pod(self, *args: object, **kwargs: object) -> None:
            raise ApiException(status=403, reason="Forbidden")

    storm = pods.PodStorm("storm-1", Target("kind", None, None, "bs"), 2, SETTINGS)
    monkeypatch.setattr(pods.time, "sleep", lambda s: None)
    with pytest.raises(ActivityFailed, match=r"0 of 2 .*last answer: HTTP 403 Forbidden\)"):
        pods.wait_until_calling(Refusing(), "ns", "app=x", storm, timeout_s=0.05)  # type: ignore[arg-type]
