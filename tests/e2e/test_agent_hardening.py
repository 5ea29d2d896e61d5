"""Given the local fleet, the Xid node agent and the self-heal controller as processes with
their own identities: old Xids are not news, a failing spool or Event loses nothing and holds
nothing back, a steady Xid stream costs at most one write per node per interval, and a flood
of identical lines is one report and one plan (issue 11, scenarios 15, 16, 18, 25)."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from prometheus_client.parser import text_string_to_metric_families

from blackstart.clusters.net import free_port
from blackstart.clusters.state import ClusterState
from blackstart.kube import api_client
from blackstart.names import RESCUE_GROUP, RESCUE_VERSION
from blackstart.rescue.install import apply_documents, deploy_documents, wait_established
from blackstart.rescue.wire.signal import condition_patch, reports_from_node, rfc3339

from .conftest import eventually, repo_root

pytestmark = pytest.mark.e2e

CONTROLLER_USER = "blackstart:rescue-controller"
AGENT_USER = "blackstart:rescue-agent"
ANNOTATIONS = (
    "rescue.blackstart.dev/cordoned-by",
    "rescue.blackstart.dev/reboot-requested",
)
NOT_READY_LABEL = "node-not-ready.stage.kwok.x-k8s.io"
WRITES = ("patch", "create")


# --- processes ---
@dataclass
class Process:
    """A ``blackstart rescue ...`` subprocess with its metrics endpoint and log."""

    popen: subprocess.Popen[bytes]
    log: Path
    port: int

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def metric(self, name: str, **labels: str) -> float:
        """The sum of the samples of ``name`` whose labels include ``labels``."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as r:
            text = r.read().decode()
        return sum(
            s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
            if s.name == name and set(labels.items()) <= set(s.labels.items())
        )

    def writes(self) -> float:
        name = "blackstart_rescue_agent_api_requests_total"
        return sum(self.metric(name, verb=verb) for verb in WRITES)

    def resources(self) -> tuple[float, int]:
        """(CPU seconds used, peak resident memory in KiB) of the process."""
        fields = Path(f"/proc/{self.popen.pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        cpu = (int(fields[11]) + int(fields[12])) / ticks
        status = Path(f"/proc/{self.popen.pid}/status").read_text()
        peak = next(
            int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM")
        )
        return cpu, peak

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=10)


class Processes:
    """Starts agents and controllers for one test; stops them afterwards."""

    def __init__(self, cluster: ClusterState, folder: Path) -> None:
        self.cluster = cluster
        self.folder = folder
        self.started: list[Process] = []

    def _start(self, kind: str, argv: list[str], ready: str) -> Process:
        port = free_port()
        log = self.folder / f"{kind}-{len(self.started)}.log"
        command = [sys.executable, "-m", "blackstart.cli", "rescue", kind, *argv]
        command += ["--metrics-port", str(port)]
        with log.open("ab") as stream:
            popen = subprocess.Popen(
                command, stdout=subprocess.DEVNULL, stderr=stream, cwd=repo_root()
            )
        process = Process(popen, log, port)
        self.started.append(process)
        deadline = time.monotonic() + 90  # a busy machine starts Python slowly
        while time.monotonic() < deadline:
            if popen.poll() is not None:
                pytest.fail(f"the {kind} exited with {popen.returncode}:\n{process.text()}")
            try:
                if ready in process.text() or process.metric(ready) == 1:
                    return process
            except (urllib.error.URLError, ConnectionError, ValueError):
                pass
            time.sleep(0.1)
        pytest.fail(f"the {kind} was not ready within 90 s:\n{process.text()}")

    def agent(self, *args: str) -> Process:
        argv = ["--kubeconfig", self.cluster.identity_kubeconfig(AGENT_USER)]
        argv += ["--state-dir", str(self.folder / f"agent-state-{len(self.started)}"), *args]
        return self._start("agent", argv, "; ready")

    def controller(self, *args: str) -> Process:
        argv = ["--kubeconfig", self.cluster.identity_kubeconfig(CONTROLLER_USER)]
        argv += ["--local-boot-seconds", "1", "--drain-retry-seconds", "0.5", *args]
        return self._start("controller", argv, "blackstart_rescue_controller_ready")

    def stop_all(self) -> None:
        for process in self.started:
            process.stop()


# --- the cluster side ---
@pytest.fixture(scope="module")
def custom(cluster: ClusterState) -> client.CustomObjectsApi:
    api = api_client(cluster.kubeconfig)
    documents = deploy_documents(["crds.yaml", "controller-rbac.yaml"])
    apply_documents(api, documents, progress=lambda _: None)
    wait_established(
        api, [d["metadata"]["name"] for d in documents if d["kind"] == "CustomResourceDefinition"]
    )
    return client.CustomObjectsApi(api)


@pytest.fixture
def processes(
    cluster: ClusterState, custom: client.CustomObjectsApi, core: client.CoreV1Api, tmp_path: Path
) -> Iterator[Processes]:
    started = Processes(cluster, tmp_path)
    yield started
    started.stop_all()
    for plural in ("rescueplans", "rescuepolicies"):
        custom.delete_collection_cluster_custom_object(RESCUE_GROUP, RESCUE_VERSION, plural)
    for node in core.list_node().items:
        if (
            node.spec.unschedulable
            and (node.metadata.labels or {}).get("blackstart.dev/role") == "gpu"
        ):
            core.patch_node(
                node.metadata.name,
                {
                    "metadata": {
                        "annotations": dict.fromkeys(ANNOTATIONS),
                        "labels": {NOT_READY_LABEL: None},
                    },
                    "spec": {"unschedulable": None},
                },
            )
        if reports_from_node(node):
            core.patch_node_status(
                node.metadata.name,
                {"status": {"conditions": [{"type": "GPUXidError", "$patch": "delete"}]}},
            )


def policy(custom: client.CustomObjectsApi, name: str, *rules: dict[str, Any]) -> None:
    custom.create_cluster_custom_object(
        RESCUE_GROUP,
        RESCUE_VERSION,
        "rescuepolicies",
        {
            "apiVersion": f"{RESCUE_GROUP}/{RESCUE_VERSION}",
            "kind": "RescuePolicy",
            "metadata": {"name": name},
            "spec": {"rules": list(rules)},
        },
    )


def plans(custom: client.CustomObjectsApi, node: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = custom.list_cluster_custom_object(
        RESCUE_GROUP,
        RESCUE_VERSION,
        "rescueplans",
        label_selector=f"rescue.blackstart.dev/node={node}",
    )["items"]
    return sorted(items, key=lambda p: p["metadata"]["creationTimestamp"])


def ended(custom: client.CustomObjectsApi, node: str) -> dict[str, Any] | None:
    found = plans(custom, node)
    if found and found[-1].get("status", {}).get("phase") in ("Succeeded", "Failed"):
        return found[-1]
    return None


def reports(core: client.CoreV1Api, node: str) -> list[dict[str, Any]]:
    return reports_from_node(core.read_node(node))


def xid_events(core: client.CoreV1Api, node: str) -> list[client.CoreV1Event]:
    selector = f"involvedObject.kind=Node,involvedObject.name={node},reason=XidError"
    return list(core.list_namespaced_event("default", field_selector=selector).items)


def iso(moment: float) -> str:
    return dt.datetime.fromtimestamp(moment, dt.UTC).isoformat()


def xid_line(code: int, at: float, node: str = "gpu-x", pci: str = "0000:3b:00") -> str:
    """A journal line (``short-iso-precise``): it carries the time the kernel logged it."""
    return f"{iso(at)} {node} kernel: NVRM: Xid (PCI:{pci}): {code}, pid=1, name=x, Ch 00000002"


def append(path: Path, *lines: str) -> None:
    with path.open("a") as f:
        f.write("".join(line + "\n" for line in lines))


CORDON_ON_79 = {"priority": 10, "errorCode": ["79"], "actions": [{"name": "cordon"}]}
CORDON_ON_62 = {"priority": 10, "errorCode": ["62"], "actions": [{"name": "cordon"}]}


# --- a Xid again after its report was cleared ---
def test_a_xid_again_after_its_report_was_cleared_is_a_new_report_and_a_new_plan(
    core: client.CoreV1Api, custom: client.CustomObjectsApi, processes: Processes, tmp_path: Path
) -> None:
    """A person (or blackstart's own rollback) uncordons the node and clears its GPUXidError
    condition; the same Xid on the same GPU minutes later is acted on again. It used to be
    folded into the cleared report, whose id the controller had handled: the node stayed
    schedulable (found on kind, a second Xid 62 on one worker)."""
    node = "gpu-45"
    log = tmp_path / f"{node}.log"
    log.write_text("")
    policy(custom, "cordon-62", CORDON_ON_62)
    processes.controller()
    processes.agent("--node", f"{node}={log}", "--min-write-interval", "0")

    append(log, xid_line(62, time.time(), node))
    eventually(lambda: ended(custom, node), 30, f"the first plan on {node} to end")
    [first] = reports(core, node)
    assert core.read_node(node).spec.unschedulable
    core.patch_node(node, {"spec": {"unschedulable": None}})
    core.patch_node_status(
        node, {"status": {"conditions": [{"type": "GPUXidError", "$patch": "delete"}]}}
    )
    eventually(lambda: not reports(core, node), 10, f"the condition on {node} cleared")

    # the same Xid on the same GPU, well within the agent's 10-minute collapse window
    append(log, xid_line(62, time.time(), node))
    eventually(lambda: core.read_node(node).spec.unschedulable, 30, f"{node} cordoned again")
    [again] = reports(core, node)
    assert again["id"] != first["id"]
    assert again["count"] == 1
    # the cordon goes first, the plan that records it follows
    eventually(lambda: len(plans(custom, node)) == 2, 30, f"the second plan on {node}")
    # (both may carry the same creation second: compare without their order)
    assert sorted(p["spec"]["reportIds"] for p in plans(custom, node)) == sorted(
        [[first["id"]], [again["id"]]]
    )


# --- 15: old Xids replayed as new ---
def test_a_replayed_week_old_xid_is_not_acted_on_and_a_fresh_one_is(
    core: client.CoreV1Api, custom: client.CustomObjectsApi, processes: Processes, tmp_path: Path
) -> None:
    node = "gpu-44"
    log = tmp_path / f"{node}.log"
    week_ago = time.time() - 7 * 86400
    log.write_text(xid_line(79, week_ago, node) + "\n")
    policy(custom, "cordon-79", CORDON_ON_79)
    controller = processes.controller()
    # --from-start: what a wiped or corrupt cursor used to do, read the whole log as new
    processes.agent("--node", f"{node}={log}", "--from-start", "--min-write-interval", "0")

    [old] = eventually(lambda: reports(core, node), 30, f"the replayed report on {node}")  # type: ignore[misc]
    assert old["loggedAt"] == rfc3339(dt.datetime.fromisoformat(iso(week_ago)).timestamp())
    eventually(
        lambda: "older than the maximum report age" in controller.text(),
        30,
        "the controller to weigh the replayed report",
    )
    assert plans(custom, node) == []
    assert not core.read_node(node).spec.unschedulable

    append(log, xid_line(79, time.time(), node))
    eventually(lambda: core.read_node(node).spec.unschedulable, 30, f"{node} cordoned")
    [plan] = plans(custom, node)
    assert plan["spec"]["xids"] == [79]


def test_a_report_from_a_boot_that_a_finished_reboot_ended_is_not_acted_on(
    core: client.CoreV1Api,
    custom: client.CustomObjectsApi,
    processes: Processes,
    cluster: ClusterState,
) -> None:
    node = "gpu-45"
    policy(
        custom,
        "reboot-62",
        {
            "priority": 10,
            "errorCode": ["62"],
            "actions": [
                {"name": "cordon"},
                {"name": "reboot", "attribute": {"waittime": "60s", "unCordon": "true"}},
            ],
        },
    )
    controller = processes.controller("--reboot-driver", "local")
    agent_core = client.CoreV1Api(api_client(cluster.identity_kubeconfig(AGENT_USER)))
    old_boot = core.read_node(node).status.node_info.boot_id

    def report(position: int, now: float) -> dict[str, Any]:
        return {
            "id": f"{old_boot}:{position}",
            "xid": 62,
            "pci": "0000:03:00",
            "uuid": None,
            "count": 1,
            "firstSeen": rfc3339(now),
            "lastSeen": rfc3339(now),
            "writtenAt": rfc3339(now),
            "bootId": old_boot,
            "loggedAt": rfc3339(now),
        }

    before_reboot = time.time()
    first = report(100, before_reboot)
    agent_core.patch_node_status(node, condition_patch([first], time.time()))
    plan = eventually(lambda: ended(custom, node), 60, f"the reboot plan of {node} to end")
    assert plan["status"]["phase"] == "Succeeded", plan["status"]  # type: ignore[index]
    assert core.read_node(node).status.node_info.boot_id != old_boot

    # a line of the old boot, read and spooled before the reboot, sent only now
    spooled = report(200, before_reboot + 0.1)
    agent_core.patch_node_status(node, condition_patch([first, spooled], time.time()))
    eventually(
        lambda: "which a finished reboot ended" in controller.text(),
        30,
        "the controller to weigh the report of the old boot",
    )
    assert len(plans(custom, node)) == 1
    assert not core.read_node(node).spec.unschedulable

    # a line read after the node was back, under the old boot id because its agent (one that
    # outlived the reboot, as the simulated fleet's does) had not learned the new one: news
    late = report(300, time.time())
    agent_core.patch_node_status(node, condition_patch([first, spooled, late], time.time()))
    eventually(lambda: core.read_node(node).spec.unschedulable, 30, f"{node} cordoned again")
    eventually(lambda: len(plans(custom, node)) == 2, 30, f"the second plan on {node}")
    assert [late["id"]] in [p["spec"]["reportIds"] for p in plans(custom, node)]


# --- 16: a steady Xid stream ---
def test_a_steady_xid_stream_costs_at_most_one_write_per_node_per_interval(
    core: client.CoreV1Api, processes: Processes, tmp_path: Path
) -> None:
    nodes = ["gpu-46", "gpu-47", "gpu-12"]
    logs = {node: tmp_path / f"{node}.log" for node in nodes}
    for path in logs.values():
        path.write_text("")
    interval, rate, seconds = 2.0, 10, 8.0
    args = [arg for node in nodes for arg in ("--node", f"{node}={logs[node]}")]
    agent = processes.agent(*args, "--min-write-interval", str(interval))

    written = {node: 0 for node in nodes}
    stop = threading.Event()

    def stream() -> None:  # bounded: `seconds` long, `rate` lines per node per second
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not stop.is_set():
            for node in nodes:
                append(logs[node], xid_line(31, time.time(), node))
                written[node] += 1
            stop.wait(1 / rate)

    writer = threading.Thread(target=stream)
    started = time.monotonic()
    writer.start()
    writer.join()
    during = agent.writes()
    elapsed = time.monotonic() - started

    # each node: a first write at once, then at most one per interval
    assert during <= len(nodes) * (elapsed / interval + 2), (during, elapsed)

    def all_counted() -> bool:
        return all(sum(r["count"] for r in reports(core, n)) == written[n] for n in nodes)

    eventually(all_counted, 30, "every streamed line counted in the condition")
    for node in nodes:
        assert len(reports(core, node)) == 1  # one Xid on one GPU: one report

    def events_aggregated() -> bool:
        return all(
            len(found := xid_events(core, n)) == 1 and found[0].count == written[n] for n in nodes
        )

    eventually(events_aggregated, 30, "one XidError Event per node, counting every line")
    print(
        f"\nFIGURE steady stream: {sum(written.values())} lines on {len(nodes)} nodes in "
        f"{elapsed:.1f} s -> {during:.0f} writes ({during / elapsed / len(nodes):.2f}/node/s)"
    )


# --- 18: a failing Event ---
def test_a_failing_event_never_holds_back_the_condition(
    core: client.CoreV1Api, processes: Processes, tmp_path: Path
) -> None:
    node = "gpu-13"
    log = tmp_path / f"{node}.log"
    log.write_text("")
    # the agent may not post Events in kube-system: every Event is refused (403)
    agent = processes.agent(
        "--node", f"{node}={log}", "--event-namespace", "kube-system", "--min-write-interval", "0"
    )
    now = time.time()
    append(log, *(xid_line(62, now + i / 1000, node, "0000:03:00") for i in range(600)))
    eventually(
        lambda: agent.metric("blackstart_rescue_agent_events_failed_total") >= 1,
        30,
        "the refused Event",
    )
    append(log, xid_line(79, time.time(), node, "0000:3b:00"))

    def both() -> list[tuple[int, int]]:
        found = sorted((r["xid"], r["count"]) for r in reports(core, node))
        return found if found == [(62, 600), (79, 1)] else []

    eventually(both, 30, "the Xid 79 that came after the refused Event, in the condition")
    eventually(
        lambda: agent.metric("blackstart_rescue_agent_spool_depth") == 0, 30, "an empty spool"
    )


# --- a new Xid right after the Event of the one before ---
def test_a_new_xid_is_not_held_back_by_the_event_of_the_one_before(
    core: client.CoreV1Api, processes: Processes, tmp_path: Path
) -> None:
    node, interval = "gpu-18", 20.0
    log = tmp_path / f"{node}.log"
    log.write_text("")
    processes.agent("--node", f"{node}={log}", "--min-write-interval", str(interval))
    append(log, xid_line(62, time.time(), node, "0000:03:00"))
    eventually(lambda: [r["xid"] for r in reports(core, node)] == [62], 15, "the Xid 62 report")
    first = time.monotonic()
    # the next write slot, an interval later, is the Event's: the condition has nothing new
    eventually(lambda: xid_events(core, node), interval + 20, "the XidError Event of the Xid 62")
    written = time.monotonic()
    append(log, xid_line(79, time.time(), node, "0000:3b:00"))

    def both() -> bool:
        return sorted(r["xid"] for r in reports(core, node)) == [62, 79]

    # a GPU fallen off the bus waits for no Event: the condition's own interval has passed,
    # so it goes now, not when the slot the Event took ends (an interval after the Event)
    eventually(both, interval / 2, "the Xid 79 in the condition before the Event's slot ended")
    print(
        f"\nFIGURE new Xid after an Event: in the condition {time.monotonic() - written:.2f} s "
        f"after its line ({written - first:.1f} s after the first condition write)"
    )


# --- 25: identical lines ---
def test_a_hundred_thousand_identical_xid_lines_are_one_report_and_one_plan(
    core: client.CoreV1Api, custom: client.CustomObjectsApi, processes: Processes, tmp_path: Path
) -> None:
    node = "gpu-14"
    log = tmp_path / f"{node}.log"
    log.write_text("")
    policy(custom, "cordon-62", CORDON_ON_62)
    processes.controller()
    agent = processes.agent("--node", f"{node}={log}")
    cpu_before, _ = agent.resources()
    line = xid_line(62, time.time(), node, "0000:03:00")
    for _ in range(10):  # a GPU logging one record over and over: 10 writes of 10,000 lines
        append(log, *([line] * 10_000))

    def counted() -> list[dict[str, Any]]:
        found = reports(core, node)
        return found if sum(r["count"] for r in found) == 100_000 else []

    [report] = eventually(counted, 120, "100,000 lines counted in the condition")  # type: ignore[misc]
    assert report["xid"] == 62
    eventually(lambda: ended(custom, node), 30, f"the plan of {node} to end")
    assert len(plans(custom, node)) == 1
    cpu_after, peak_kib = agent.resources()
    assert peak_kib < 200 * 1024, f"agent peak memory {peak_kib} KiB"
    assert cpu_after - cpu_before < 60, f"agent used {cpu_after - cpu_before:.1f} s of CPU"
    print(
        f"\nFIGURE 100,000 identical lines: 1 report, 1 plan; agent CPU "
        f"{cpu_after - cpu_before:.1f} s, peak RSS {peak_kib / 1024:.0f} MiB, "
        f"writes {agent.writes():.0f}"
    )
