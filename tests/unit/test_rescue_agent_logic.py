"""The node agent's pure logic: coalescing, reports, the condition and Event, pacing, reading."""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner
from kubernetes import client

from blackstart.clusters.state import ClusterState
from blackstart.rescue.agent.cli import cluster_node_logs
from blackstart.rescue.agent.kmsg import KmsgReader
from blackstart.rescue.agent.node_agent import AgentOptions, NodeLog, XidAgent
from blackstart.rescue.cli import rescue_group
from blackstart.rescue.pacing import (
    TokenBucket,
    backoff_delay,
    backoff_schedule,
    is_retryable_status,
    retry_after_seconds,
)
from blackstart.rescue.wire.signal import (
    CONDITION_TYPE,
    MAX_REPORTS,
    XidReport,
    XidSighting,
    burst_due,
    coalesce,
    condition_message,
    condition_patch,
    fold_reports,
    merge_reports,
    parse_condition_message,
    reports_from_node,
    rfc3339,
)
from blackstart.rescue.wire.xid_event import (
    event_body,
    event_message,
    event_name,
)

T0 = 1_795_000_000.0


def sighting(
    position: int,
    xid: int = 62,
    pci: str = "0000:03:00",
    at: float = T0,
    msg: str = "Channel 00000001",
) -> XidSighting:
    return XidSighting(
        id=f"b1:{position}", node="gpu-7", xid=xid, pci=pci, uuid=None, message=msg, read_at=at
    )


# ----------------------------------------------------------------- coalescing
def test_ten_identical_xids_in_a_burst_are_one_report_counted_ten_times() -> None:
    burst = [sighting(i * 50, at=T0 + i * 0.01) for i in range(10)]
    [report] = coalesce(burst)
    assert (report.id, report.count) == ("b1:0", 10)
    assert report.first_seen == T0
    assert report.last_seen == pytest.approx(T0 + 0.09)
    assert report.to_json()["firstSeen"] == rfc3339(T0)


def test_different_codes_or_gpus_are_separate_reports_in_first_seen_order() -> None:
    burst = [
        sighting(0, 79, "0000:3b:00"),
        sighting(1, 62),
        sighting(2, 79, "0000:3b:00"),
        sighting(3, 62, "0000:b3:00"),
    ]
    assert [(r.xid, r.pci, r.count, r.id) for r in coalesce(burst)] == [
        (79, "0000:3b:00", 2, "b1:0"),
        (62, "0000:03:00", 1, "b1:1"),
        (62, "0000:b3:00", 1, "b1:3"),
    ]


def test_a_report_has_the_fields_of_the_contract() -> None:
    [report] = coalesce([sighting(1184)])
    assert set(report.to_json()) == {
        "id",
        "xid",
        "pci",
        "uuid",
        "count",
        "firstSeen",
        "lastSeen",
        "writtenAt",
        "bootId",
        "loggedAt",
        "gpuInstance",
        "computeInstance",
    }
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", report.to_json()["writtenAt"])


# ----------------------------------------------------------------- merging
def test_new_reports_go_last_and_only_the_last_twenty_stay() -> None:
    existing = [{"id": f"b0:{i}", "xid": 48} for i in range(19)]
    new = [{"id": "b1:1", "xid": 62}, {"id": "b1:2", "xid": 79}]
    merged = merge_reports(existing, new)
    assert len(merged) == MAX_REPORTS
    assert merged[0]["id"] == "b0:1"  # the oldest one was dropped
    assert [r["id"] for r in merged[-2:]] == ["b1:1", "b1:2"]


def test_a_report_sent_again_replaces_its_entry_instead_of_repeating() -> None:
    existing = [{"id": "b1:1", "count": 1}, {"id": "b1:2", "count": 1}]
    merged = merge_reports(existing, [{"id": "b1:1", "count": 3}])
    assert merged == [{"id": "b1:1", "count": 3}, {"id": "b1:2", "count": 1}]


# ----------------------------------------------------------------- the condition
def test_the_condition_message_is_compact_json_that_reads_back() -> None:
    reports = [report.to_json() for report in coalesce([sighting(5)])]
    message = condition_message(reports)
    assert " " not in message
    assert json.loads(message) == {"v": 1, "reports": reports}
    assert parse_condition_message(message) == reports


@pytest.mark.parametrize(
    "message", [None, "", "not json", "[]", '{"v":1}', '{"reports":[1,{"x":2}]}']
)
def test_a_malformed_condition_message_has_no_reports(message: str | None) -> None:
    assert parse_condition_message(message) == []


def test_the_patch_sets_only_the_gpu_xid_condition() -> None:
    patch = condition_patch([{"id": "b1:1"}], T0)
    [condition] = patch["status"]["conditions"]
    assert condition["type"] == CONDITION_TYPE == "GPUXidError"
    assert (condition["status"], condition["reason"]) == ("True", "XidError")
    assert condition["lastHeartbeatTime"] == condition["lastTransitionTime"]
    assert parse_condition_message(condition["message"]) == [{"id": "b1:1"}]
    assert set(patch) == {"status"}


def test_reports_are_read_back_from_a_node_object_or_dict() -> None:
    message = condition_message([{"id": "b1:1", "xid": 62}])
    as_dict = {
        "status": {"conditions": [{"type": "Ready"}, {"type": CONDITION_TYPE, "message": message}]}
    }
    as_model = client.V1Node(
        status=client.V1NodeStatus(
            conditions=[client.V1NodeCondition(type=CONDITION_TYPE, status="True", message=message)]
        )
    )
    assert reports_from_node(as_dict) == reports_from_node(as_model) == [{"id": "b1:1", "xid": 62}]
    assert reports_from_node({"status": {"conditions": [{"type": "Ready"}]}}) == []


# ----------------------------------------------------------------- the Event
def test_one_xid_gives_the_vendor_style_message_with_the_catalogue_advice() -> None:
    message = event_message([sighting(1)])
    assert message.startswith("GPU Xid error: pci 0000:03:00, xid 62, log: Channel 00000001")
    assert "more in this burst" not in message
    assert "recommended action: reset-gpu" in message


def test_a_burst_names_its_first_xid_and_how_many_more() -> None:
    message = event_message([sighting(i) for i in range(10)])
    assert message.startswith(
        "GPU Xid error: pci 0000:03:00, xid 62, log: Channel 00000001 (+9 more in this burst)"
    )


def test_the_event_is_a_warning_on_the_node_from_the_agent() -> None:
    body = event_body("gpu-7", "uid-7", [sighting(1), sighting(2)], T0)
    assert body["type"] == "Warning"
    assert body["reason"] == "XidError"
    assert body["involvedObject"] == {
        "apiVersion": "v1",
        "kind": "Node",
        "name": "gpu-7",
        "uid": "uid-7",
    }
    assert body["source"]["component"] == "blackstart-rescue-agent"
    assert body["reportingComponent"] == "rescue.blackstart.dev/agent"
    assert body["metadata"] == {"name": event_name("gpu-7", "b1:1"), "namespace": "default"}


def test_the_event_name_is_stable_per_burst_and_a_valid_object_name() -> None:
    name = event_name("gpu-7", "b1:1")
    assert name == event_name("gpu-7", "b1:1")
    assert name != event_name("gpu-7", "b1:2")
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", name) and len(name) <= 253


def test_an_overlong_log_text_keeps_the_event_message_under_the_api_limit() -> None:
    assert len(event_message([sighting(1, msg="x" * 5000)])) <= 1024


# ----------------------------------------------------------------- bursts
def test_a_burst_is_due_after_a_quiet_window_or_when_it_has_lasted_long() -> None:
    assert not burst_due(first_read=T0, last_read=T0 + 0.1, now=T0 + 0.2, window=0.2)
    assert burst_due(first_read=T0, last_read=T0 + 0.1, now=T0 + 0.31, window=0.2)
    # a steady stream: never quiet, still reported after five windows (at least 1 s)
    assert burst_due(first_read=T0, last_read=T0 + 1.0, now=T0 + 1.01, window=0.2)


# ----------------------------------------------------------------- pacing
def test_full_jitter_backoff_stays_between_zero_and_the_doubling_ceiling() -> None:
    assert backoff_delay(0, base=0.5, cap=10, rng=lambda: 0.0) == 0.0
    assert backoff_delay(0, base=0.5, cap=10, rng=lambda: 1.0) == 0.5
    assert backoff_delay(3, base=0.5, cap=10, rng=lambda: 1.0) == 4.0
    assert backoff_delay(30, base=0.5, cap=10, rng=lambda: 1.0) == 10.0
    assert backoff_schedule(6, base=0.5, cap=10) == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0]


def test_retry_after_is_honoured_but_capped() -> None:
    assert backoff_delay(0, base=0.5, cap=10, retry_after=3, rng=lambda: 0.0) == 3.0
    assert backoff_delay(0, base=0.5, cap=10, retry_after=3600, rng=lambda: 0.0) == 10.0


def test_retry_after_headers_are_read_case_insensitively() -> None:
    assert retry_after_seconds({"Retry-After": "2"}) == 2.0
    assert retry_after_seconds({"retry-after": " 1 "}) == 1.0
    assert retry_after_seconds({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}) is None
    assert retry_after_seconds(None) is None


def test_429_5xx_and_no_response_are_retryable_others_are_not() -> None:
    assert [is_retryable_status(s) for s in (None, 429, 500, 503, 403, 404, 422)] == [
        True,
        True,
        True,
        True,
        False,
        False,
        False,
    ]


def test_the_token_bucket_allows_a_burst_then_the_rate() -> None:
    now = [0.0]
    bucket = TokenBucket(rate=5, clock=lambda: now[0])
    assert [bucket.try_take() for _ in range(5)] == [0.0] * 5
    assert bucket.try_take() == pytest.approx(0.2)
    now[0] += 0.2
    assert bucket.try_take() == 0.0
    now[0] += 10.0  # idle: tokens refill up to the burst, not beyond
    assert sum(1 for _ in range(10) if bucket.try_take() == 0.0) == 5


def test_a_bucket_needs_a_positive_rate() -> None:
    with pytest.raises(ValueError, match="positive"):
        TokenBucket(0)


# ----------------------------------------------------------------- reading side of the agent
def agent(tmp_path: Path, log: Path, from_end: bool = False) -> XidAgent:
    """An agent reading ``log`` (from its start when no cursor is saved, unless ``from_end``)."""
    # The reading side makes no API request when the boot id is given: the client
    # points nowhere and is never used.
    api = client.ApiClient(client.Configuration(host="http://127.0.0.1:9"))
    return XidAgent(
        [NodeLog(node="gpu-7", path=str(log), boot_id="b1")],
        api,
        AgentOptions(state_dir=tmp_path / "state", from_start=not from_end),
    )


def test_xid_lines_are_spooled_once_and_a_restarted_agent_goes_on_after_them(
    tmp_path: Path,
) -> None:
    log = tmp_path / "gpu-7.log"
    gpu_at = "[ 1.0] NVRM: GPU at PCI:0000:03:00: GPU-6a9b3c1e-0f2d-4e7a-9c55-1b2d3e4f5a6b\n"
    log.write_text(
        gpu_at + "[ 2.0] NVRM: Xid (PCI:0000:03:00): 62, Channel 00000001\n"
        "[ 3.0] usb 1-1: new device\n"
    )
    first = agent(tmp_path, log)
    found = first.read_logs_once()
    assert [(s.id, s.xid, s.uuid) for s in found] == [
        (f"b1:{len(gpu_at)}", 62, "GPU-6a9b3c1e-0f2d-4e7a-9c55-1b2d3e4f5a6b")
    ]
    assert first.read_logs_once() == []
    first.stop()

    with log.open("a") as f:
        f.write(
            "[ 4.0] NVRM: Xid (PCI:0000:03:00): 79, pid='<unknown>', name=<unknown>, "
            "GPU has fallen off the bus.\n"
        )
    second = agent(tmp_path, log)
    try:
        new = second.read_logs_once()
        assert [(s.xid, s.message) for s in new] == [(79, "GPU has fallen off the bus.")]
        assert [p.report_id for p in second.store.pending("gpu-7")] == [
            f"b1:{len(gpu_at)}",
            new[0].id,
        ]
        assert second.metrics.xids_seen.labels(xid="79")._value.get() == 1
    finally:
        second.stop()


def test_from_end_skips_old_lines_once_and_never_what_came_while_the_agent_was_down(
    tmp_path: Path,
) -> None:
    log = tmp_path / "gpu-7.log"
    log.write_text("[ 2.0] NVRM: Xid (PCI:0000:03:00): 62, Channel 00000001\n")
    first = agent(tmp_path, log, from_end=True)
    assert first.read_logs_once() == []  # what the log held before the first start
    first.stop()

    with log.open("a") as f:
        f.write("[ 3.0] NVRM: Xid (PCI:0000:03:00): 48, DBE\n")  # while the agent was down
    second = agent(tmp_path, log, from_end=True)
    try:
        assert [s.xid for s in second.read_logs_once()] == [48]
    finally:
        second.stop()


def test_an_agent_refuses_a_node_given_twice(tmp_path: Path) -> None:
    api = client.ApiClient(client.Configuration(host="http://127.0.0.1:9"))
    logs = [NodeLog("gpu-1", str(tmp_path / "a")), NodeLog("gpu-1", str(tmp_path / "b"))]
    with pytest.raises(ValueError, match="twice"):
        XidAgent(logs, api, AgentOptions(state_dir=tmp_path))


# ----------------------------------------------------------------- the command line
def test_the_agent_needs_exactly_one_kind_of_log_source() -> None:
    result = CliRunner().invoke(rescue_group, ["agent", "--kmsg", "--cluster", "x"])
    assert result.exit_code == 2
    assert "exactly one of --node NAME=LOGFILE, --cluster NAME, --kmsg" in result.output


def test_a_node_option_must_be_name_equals_file() -> None:
    result = CliRunner().invoke(rescue_group, ["agent", "--node", "gpu-0"])
    assert result.exit_code == 2
    assert "'gpu-0' is not NAME=VALUE" in result.output


def test_kmsg_needs_the_node_name() -> None:
    result = CliRunner().invoke(rescue_group, ["agent", "--kmsg"], env={"NODE_NAME": ""})
    assert result.exit_code == 2
    assert "--node-name or $NODE_NAME" in result.output


def test_a_local_cluster_gives_every_node_with_a_kernel_log_and_the_agent_identity(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BLACKSTART_CACHE_DIR", str(tmp_path))
    state_dir = tmp_path / "clusters" / "fleet"
    (state_dir / "kmsg").mkdir(parents=True)
    for node in ("gpu-0", "gpu-1", "standby-0"):
        (state_dir / "kmsg" / f"{node}.log").touch()
    ClusterState(
        name="fleet",
        provider="local",
        state_dir=str(state_dir),
        spec_path="spec.yaml",
        kubeconfig="admin.kubeconfig",
        context="kwok-fleet",
        identities={"blackstart:rescue-agent": "/x/rescue-agent.kubeconfig"},
        kernel_log_dir=str(state_dir / "kmsg"),
    ).save()

    logs, kubeconfig, default_state = cluster_node_logs("fleet")

    assert [(n.node, Path(n.path).name, n.kind) for n in logs] == [
        ("gpu-0", "gpu-0.log", "file"),
        ("gpu-1", "gpu-1.log", "file"),
        ("standby-0", "standby-0.log", "file"),
    ]
    assert kubeconfig == "/x/rescue-agent.kubeconfig"
    assert default_state == state_dir / "rescue-agent"


# ----------------------------------------------------------------- issue 11: old Xids, the spool
def test_a_first_start_reads_a_log_from_its_end_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    log = tmp_path / "gpu-7.log"
    log.write_text("[ 2.0] NVRM: Xid (PCI:0000:03:00): 79, GPU has fallen off the bus.\n")
    api = client.ApiClient(client.Configuration(host="http://127.0.0.1:9"))
    with caplog.at_level("WARNING"):
        first = XidAgent(
            [NodeLog(node="gpu-7", path=str(log), boot_id="b1")],
            api,
            AgentOptions(state_dir=tmp_path / "state"),  # the default: no --from-start
        )
    try:
        assert first.read_logs_once() == []  # weeks-old Xids are not news
        assert "gpu-7" in caplog.text and "missing" in caplog.text and "its end" in caplog.text
        with log.open("a") as f:
            f.write("[ 3.0] NVRM: Xid (PCI:0000:03:00): 48, DBE\n")
        assert [s.xid for s in first.read_logs_once()] == [48]
    finally:
        first.stop()


def test_a_corrupt_cursor_reads_the_log_from_its_end_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    log = tmp_path / "gpu-7.log"
    log.write_text("[ 2.0] NVRM: Xid (PCI:0000:03:00): 62, Channel 00000001\n")
    first = agent(tmp_path, log)
    first.read_logs_once()
    first.stop()
    db = sqlite3.connect(tmp_path / "state" / "agent.sqlite")
    db.execute("UPDATE cursors SET cursor = 'not json at all'")
    db.commit()
    db.close()
    with log.open("a") as f:
        f.write("[ 3.0] NVRM: Xid (PCI:0000:03:00): 62, Channel 00000001\n")

    with caplog.at_level("WARNING"):
        second = XidAgent(
            [NodeLog(node="gpu-7", path=str(log), boot_id="b1")],
            client.ApiClient(client.Configuration(host="http://127.0.0.1:9")),
            AgentOptions(state_dir=tmp_path / "state"),
        )
    try:
        assert second.read_logs_once() == []  # nothing replayed from the start of the log
        assert "corrupt" in caplog.text
    finally:
        second.stop()


@pytest.mark.parametrize(
    ("line", "logged_at"),
    [
        ("[ 1843.308145] NVRM: Xid (PCI:0000:03:00): 62, Channel 00000001", T0 + 1843.308145),
        ("4,7,1843308145,-;NVRM: Xid (PCI:0000:03:00): 62, Channel 00000001", T0 + 1843.308145),
        (
            "2026-11-24T08:30:00.500000+00:00 gpu-7 kernel: NVRM: Xid (PCI:0000:03:00): 62, Ch 1",
            1795509000.5,
        ),
    ],
)
def test_every_xid_carries_the_kernels_own_time_and_its_boot(
    tmp_path: Path, line: str, logged_at: float
) -> None:
    log = tmp_path / "gpu-7.log"
    log.write_text(line + "\n")
    reader = XidAgent(
        [NodeLog(node="gpu-7", path=str(log), boot_id="b1", boot_time=T0)],
        client.ApiClient(client.Configuration(host="http://127.0.0.1:9")),
        AgentOptions(state_dir=tmp_path / "state", from_start=True),
    )
    try:
        [found] = reader.read_logs_once()
        assert found.logged_at == pytest.approx(logged_at)
        assert found.boot_id == "b1"
        [report] = coalesce([found])
        assert report.to_json()["loggedAt"] == rfc3339(logged_at)
        assert report.to_json()["bootId"] == "b1"
    finally:
        reader.stop()


def test_a_spool_write_that_fails_loses_no_xid_the_lines_are_read_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "gpu-7.log"
    log.write_text("")
    reader = agent(tmp_path, log)
    try:
        with log.open("a") as f:
            f.write("[ 2.0] NVRM: Xid (PCI:0000:03:00): 79, GPU has fallen off the bus.\n")
        record = reader.store.record

        def disk_full(batches: object) -> object:
            raise sqlite3.OperationalError("database or disk is full")

        monkeypatch.setattr(reader.store, "record", disk_full)
        with pytest.raises(sqlite3.OperationalError):
            reader.read_logs_once()
        monkeypatch.setattr(reader.store, "record", record)

        assert [s.xid for s in reader.read_logs_once()] == [79]
        assert reader.store.depth() == 1
        assert reader.metrics.spool_failures._value.get() == 1
    finally:
        reader.stop()


def test_a_kmsg_read_that_could_not_be_spooled_is_read_again_after_a_rewind(
    tmp_path: Path,
) -> None:
    device = tmp_path / "kmsg"
    device.write_bytes(b"6,1,100,-;first\n")
    kmsg = KmsgReader(None, "a", path=device)
    try:
        assert [r.position for r in kmsg.read()] == [1]
        kmsg.rewind(None)
        assert [r.position for r in kmsg.read()] == [1]
        kmsg.rewind(kmsg.cursor)
        assert kmsg.read() == []
    finally:
        kmsg.close()


# ----------------------------------------------------------------- issue 11: identical lines
def report_of(position: int, count: int, read: float, logged: float | None = None) -> XidReport:
    return XidReport(
        id=f"b1:{position}",
        xid=62,
        pci="0000:03:00",
        uuid=None,
        count=count,
        first_seen=read,
        last_seen=read,
        written_at=read,
        boot_id="b1",
        logged_at=logged,
    )


def test_more_of_the_same_xid_adds_to_its_report_under_the_same_id() -> None:
    first = fold_reports([], [report_of(0, 10, T0)], collapse_window=600)
    later = fold_reports(first, [report_of(900, 90, T0 + 30)], collapse_window=600)

    [report] = later
    assert (report["id"], report["count"]) == ("b1:0", 100)
    assert report["lastSeen"] == rfc3339(T0 + 30)


def test_the_same_xid_long_after_is_a_new_report() -> None:
    first = fold_reports([], [report_of(0, 1, T0)], collapse_window=600)
    later = fold_reports(first, [report_of(900, 1, T0 + 3600)], collapse_window=600)

    assert [r["id"] for r in later] == ["b1:0", "b1:900"]


def test_a_replayed_old_xid_never_swallows_a_new_one_by_kernel_time() -> None:
    weeks_ago = T0 - 30 * 86400
    replayed = fold_reports([], [report_of(0, 1, T0, logged=weeks_ago)], collapse_window=600)
    fresh = fold_reports(replayed, [report_of(900, 1, T0 + 5, logged=T0 + 5)], collapse_window=600)

    assert [r["id"] for r in fresh] == ["b1:0", "b1:900"]


def test_a_report_that_grows_moves_last_and_is_not_pushed_out() -> None:
    reports = fold_reports([], [report_of(0, 1, T0)], collapse_window=600)
    others = [
        XidReport(f"b1:{i}", 13, f"0000:{i:02x}:00", None, 1, T0, T0, T0, "b1")
        for i in range(1, 20)
    ]
    reports = fold_reports(reports, others, collapse_window=600)
    reports = fold_reports(reports, [report_of(5000, 1, T0 + 1)], collapse_window=600)
    reports = fold_reports(
        reports, [XidReport("b1:6000", 31, "0000:99:00", None, 1, T0, T0, T0, "b1")], 600
    )

    assert len(reports) == MAX_REPORTS
    assert "b1:0" in [r["id"] for r in reports]


def test_an_agent_of_many_nodes_shares_them_out_to_its_senders_each_node_to_one(
    tmp_path: Path,
) -> None:
    api = client.ApiClient(client.Configuration(host="http://127.0.0.1:9"))
    logs = [NodeLog(f"gpu-{i}", str(tmp_path / f"{i}.log"), boot_id="b") for i in range(10)]
    many = XidAgent(logs, api, AgentOptions(state_dir=tmp_path / "a", senders=3))
    try:
        shares = [sender.nodes for sender in many.senders]
        assert [len(share) for share in shares] == [4, 3, 3]
        assert frozenset().union(*shares) == {log.node for log in logs}
        assert sum(len(share) for share in shares) == len(logs)  # no node in two
    finally:
        many.stop()
    # more senders than nodes: one per node, none idle
    few = XidAgent(logs[:2], api, AgentOptions(state_dir=tmp_path / "b", senders=8))
    try:
        assert len(few.senders) == 2
    finally:
        few.stop()
    with pytest.raises(ValueError, match="at least one sender"):
        XidAgent(logs, api, AgentOptions(state_dir=tmp_path / "c", senders=0))


def test_the_default_is_one_sender_per_16_nodes_to_8_then_one_per_128_to_64() -> None:
    from blackstart.rescue.agent.cli import default_senders

    assert [
        default_senders(n) for n in (1, 16, 17, 52, 128, 129, 1024, 1025, 2000, 8192, 10_000)
    ] == [1, 1, 2, 4, 8, 8, 8, 9, 16, 64, 64]


def test_a_raw_answer_is_decoded_as_plain_json_not_the_clients_models() -> None:
    """The sender asks for raw answers (_preload_content=False): decoding a Node into
    the client's model classes cost milliseconds of the one reader's and senders' time."""
    import threading
    from types import SimpleNamespace

    from blackstart.rescue.agent.metrics import AgentMetrics
    from blackstart.rescue.agent.paced_api import PacedApi

    seen: list[tuple[str, str, str]] = []
    api = PacedApi(100.0, threading.Event(), AgentMetrics(), lambda *a: seen.append(a))
    raw = SimpleNamespace(data=b'{"metadata": {"uid": "u-1"}}', status=200)
    assert api.request("get", "nodes", lambda: raw) == {"metadata": {"uid": "u-1"}}
    assert api.request("patch", "events", lambda: SimpleNamespace(data=b"", status=201)) == {}
    assert seen == [("get", "nodes", "200"), ("patch", "events", "201")]


def test_a_burst_spans_at_least_one_read_of_the_logs(tmp_path: Path) -> None:
    """Lines the kernel wrote together but a read split must stay one report: a burst
    window shorter than the poll interval would send the second part a write later."""
    assert AgentOptions(state_dir=tmp_path).sender_options().burst_window == 0.05
    slow = AgentOptions(state_dir=tmp_path, poll_interval=0.5, burst_window=0.05)
    assert slow.sender_options().burst_window == 0.5
    assert AgentOptions(state_dir=tmp_path, burst_window=2.0).sender_options().burst_window == 2.0
