"""The agent writes the head of a burst on a quiet node at once; its tail follows once.

The sender runs against a real spool and a recording stand-in for the Kubernetes
client (no cluster: this is the sender's scheduling, a pure decision on a clock).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from blackstart.rescue.agent.kmsg import Cursor
from blackstart.rescue.agent.metrics import AgentMetrics
from blackstart.rescue.agent.paced_api import PacedApi
from blackstart.rescue.agent.sender import SenderOptions, XidSender
from blackstart.rescue.agent.spool import AgentStore, StoreBatch
from blackstart.rescue.wire.signal import XidSighting

NODE = "gpu-1"


class RecordingCore:
    """The three calls the sender makes, answered as the API server would, and recorded."""

    def __init__(self) -> None:
        self.calls: list[tuple[float, str, Any]] = []
        self.clock = lambda: 0.0

    def _answer(self, body: dict[str, Any], status: int = 200) -> SimpleNamespace:
        return SimpleNamespace(data=json.dumps(body).encode(), status=status, headers={})

    def read_node_with_http_info(self, name: str, **_: Any) -> SimpleNamespace:
        self.calls.append((self.clock(), "get", None))
        status = {"nodeInfo": {"bootID": "boot-1"}}
        return self._answer({"metadata": {"name": name, "uid": "u-1"}, "status": status})

    def patch_node_status_with_http_info(self, name: str, body: Any, **_: Any) -> SimpleNamespace:
        self.calls.append((self.clock(), "condition", body))
        return self._answer({"metadata": {"name": name, "uid": "u-1"}, "status": {}})

    def create_namespaced_event_with_http_info(
        self, namespace: str, body: Any, **_: Any
    ) -> SimpleNamespace:
        self.calls.append((self.clock(), "event", body))
        return self._answer({}, 201)

    def writes(self, kind: str) -> list[float]:
        return [at for at, what, _ in self.calls if what == kind]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[AgentStore]:
    s = AgentStore(tmp_path / "state")
    yield s
    s.close()


def spool(store: AgentStore, position: int, xid: int, read_at: float) -> None:
    sighting = XidSighting(
        id=f"boot-1:{position}",
        node=NODE,
        xid=xid,
        pci="0000:03:00",
        uuid=None,
        message="Channel 00000001",
        read_at=read_at,
        log_time="1843.308145",
        boot_id="boot-1",
    )
    cursor = Cursor(kind="file", boot_id="boot-1", position=position + 80, inode=1)
    store.record([StoreBatch(NODE, "file:/log", cursor, [sighting])])


def sender_at(
    store: AgentStore,
    now: list[float],
    boot_id: str | None = "boot-1",
    on_boot_id: Callable[[], None] | None = None,
) -> tuple[XidSender, RecordingCore]:
    core = RecordingCore()
    core.clock = lambda: now[0]
    api = PacedApi(1000.0, threading.Event(), AgentMetrics())
    options = SenderOptions(burst_window=0.05, min_write_interval=10.0)
    sender = XidSender(
        store,
        core,  # type: ignore[arg-type]
        api,
        options,
        AgentMetrics(),
        {NODE: boot_id},
        lambda: now[0],
        on_boot_id=on_boot_id,
    )
    return sender, core


def run_until(sender: XidSender, now: list[float], until: float, step: float = 0.01) -> None:
    """Let the sender make every write due up to ``until`` on the fake clock."""
    while now[0] <= until:
        while sender.deliver_due_once() == 0.0:
            pass
        now[0] = round(now[0] + step, 6)


def test_the_head_of_a_burst_on_a_quiet_node_is_written_at_once(store: AgentStore) -> None:
    now = [100.0]
    sender, core = sender_at(store, now)
    spool(store, 0, 62, read_at=100.0)
    assert sender.deliver_due_once() == 0.0  # no burst window first
    assert core.writes("condition") == [100.0]
    assert store.depth() == 0


def test_the_tail_read_within_a_window_follows_once_then_the_interval_holds(
    store: AgentStore,
) -> None:
    now = [100.0]
    sender, core = sender_at(store, now)
    spool(store, 0, 62, read_at=100.0)
    run_until(sender, now, 100.02)
    assert core.writes("condition") == [100.0]

    spool(store, 80, 79, read_at=100.03)  # the same burst, split by a read: its tail
    run_until(sender, now, 100.2)
    # written when the tail was quiet for a window (100.03 + 0.05), not 10 s later
    assert core.writes("condition") == [100.0, 100.08]
    assert store.depth() == 0

    spool(store, 160, 48, read_at=100.3)  # after the tail: the write interval holds
    run_until(sender, now, 105.0, step=0.1)
    assert core.writes("condition") == [100.0, 100.08]
    run_until(sender, now, 111.0, step=0.1)
    assert len(core.writes("condition")) == 3
    assert core.writes("condition")[2] >= 110.08


def test_a_node_written_recently_waits_for_its_interval_as_before(store: AgentStore) -> None:
    now = [100.0]
    sender, core = sender_at(store, now)
    spool(store, 0, 62, read_at=100.0)
    run_until(sender, now, 100.1)
    spool(store, 80, 79, read_at=101.0)  # a new burst a second later: not a tail
    run_until(sender, now, 109.0, step=0.1)
    assert core.writes("condition") == [100.0]
    run_until(sender, now, 110.5, step=0.1)
    assert len(core.writes("condition")) == 2


def test_a_boot_id_learned_wakes_the_reader_that_waits_for_it(store: AgentStore) -> None:
    """The reader put a node's first Xid lines back until the sender knows its boot id:
    learning it wakes the reader, which reads them again at once, not a poll later."""
    woken: list[float] = []
    now = [100.0]
    sender, core = sender_at(store, now, boot_id=None, on_boot_id=lambda: woken.append(now[0]))
    sender.want_boot_id(NODE)
    assert sender.deliver_due_once() == 0.0
    assert [what for _, what, _ in core.calls] == ["get"]
    assert sender.known_boot_id(NODE) == "boot-1"
    assert woken == [100.0]


def test_a_read_for_the_nodes_that_waited_reads_only_their_logs(tmp_path: Path) -> None:
    """When a boot id comes the reader reads again only the logs that waited for one, not
    every simulated node's (a burst on many nodes would read them all once per boot id)."""
    from kubernetes import client

    from blackstart.rescue.agent.node_agent import AgentOptions, NodeLog, XidAgent

    logs = {name: tmp_path / f"{name}.log" for name in ("gpu-1", "gpu-2")}
    for path in logs.values():
        path.write_text("")
    agent = XidAgent(
        [NodeLog(node=n, path=str(p), boot_id="boot-1") for n, p in logs.items()],
        client.ApiClient(),  # never called: nothing is sent here
        AgentOptions(state_dir=tmp_path / "state"),
    )
    try:
        agent.read_logs_once()  # the first positions (the logs' ends)
        line = "[ 1843.308145] NVRM: Xid (PCI:0000:03:00): 62, Channel 00000001\n"
        for path in logs.values():
            with path.open("a") as stream:
                stream.write(line)
        assert [s.node for s in agent.read_logs_once(only={"gpu-2"})] == ["gpu-2"]
        assert [s.node for s in agent.read_logs_once()] == ["gpu-1"]
    finally:
        agent.stop()
