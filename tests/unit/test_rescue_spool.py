"""The agent's durable state: cursors and the spool survive restarts, change together."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from blackstart.rescue.agent.kmsg import Cursor
from blackstart.rescue.agent.spool import AgentStore, StoreBatch
from blackstart.rescue.wire.signal import XidSighting


def sighting(node: str, position: int, xid: int = 62, read_at: float = 100.0) -> XidSighting:
    return XidSighting(
        id=f"boot:{position}",
        node=node,
        xid=xid,
        pci="0000:03:00",
        uuid=None,
        message="Channel 00000001",
        read_at=read_at,
        log_time="1843.308145",
    )


def cursor(position: int) -> Cursor:
    return Cursor(kind="file", boot_id="boot", position=position, inode=1)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[AgentStore]:
    s = AgentStore(tmp_path / "state")
    yield s
    s.close()


def test_spooled_xids_wait_in_order_until_acknowledged(store: AgentStore) -> None:
    added = store.record(
        [
            StoreBatch(
                "gpu-1", "file:/a", cursor(30), [sighting("gpu-1", 0), sighting("gpu-1", 10, 79)]
            )
        ]
    )
    assert [s.id for s in added] == ["boot:0", "boot:10"]
    pending = store.pending("gpu-1")
    assert [p.report_id for p in pending] == ["boot:0", "boot:10"]
    assert pending[0].first == sighting("gpu-1", 0)
    assert store.depth() == 2

    assert store.acknowledge("gpu-1", pending[:1]) == 1
    assert [p.report_id for p in store.pending("gpu-1")] == ["boot:10"]
    assert store.depth() == 1


def test_identical_xid_lines_share_one_row_that_counts_them(store: AgentStore) -> None:
    lines = [sighting("gpu-1", i * 10, read_at=100.0 + i) for i in range(10_000)]
    store.record([StoreBatch("gpu-1", "file:/a", cursor(100_000), lines)])

    [row] = store.pending("gpu-1")
    assert (row.report_id, row.count, row.first_read, row.last_read) == (
        "boot:0",
        10_000,
        100.0,
        10_099.0,
    )
    assert store.depth() == 10_000


def test_lines_spooled_while_a_report_was_sent_stay_under_an_id_of_their_own(
    store: AgentStore,
) -> None:
    store.record([StoreBatch("gpu-1", "file:/a", cursor(20), [sighting("gpu-1", 0)])])
    sent = store.pending("gpu-1")
    store.record([StoreBatch("gpu-1", "file:/a", cursor(40), [sighting("gpu-1", 20)])])

    assert store.acknowledge("gpu-1", sent) == 1
    [left] = store.pending("gpu-1")
    assert (left.report_id, left.count) == ("boot:20", 1)


def test_the_spool_of_an_older_agent_is_folded_into_rows(tmp_path: Path) -> None:
    import json
    import sqlite3
    from dataclasses import asdict

    (tmp_path / "state").mkdir()
    db = sqlite3.connect(tmp_path / "state" / "agent.sqlite")
    db.executescript(
        "CREATE TABLE spool (seq INTEGER PRIMARY KEY AUTOINCREMENT, node TEXT NOT NULL, "
        "id TEXT NOT NULL, read_at REAL NOT NULL, sighting TEXT NOT NULL, UNIQUE (node, id));"
    )
    fields = ("id", "node", "xid", "pci", "uuid", "message", "read_at", "log_time")
    for position in (0, 10, 20):
        old = {k: v for k, v in asdict(sighting("gpu-1", position)).items() if k in fields}
        db.execute(
            "INSERT INTO spool (node, id, read_at, sighting) VALUES (?, ?, ?, ?)",
            ("gpu-1", old["id"], 100.0, json.dumps(old)),
        )
    db.commit()
    db.close()

    store = AgentStore(tmp_path / "state")
    try:
        [row] = store.pending("gpu-1")
        assert (row.report_id, row.count) == ("boot:0", 3)
    finally:
        store.close()


def test_an_xid_spooled_twice_is_kept_once(store: AgentStore) -> None:
    store.record([StoreBatch("gpu-1", "file:/a", cursor(10), [sighting("gpu-1", 0)])])
    again = store.record([StoreBatch("gpu-1", "file:/a", cursor(10), [sighting("gpu-1", 0)])])
    assert again == []
    assert store.depth() == 1


def test_the_same_id_on_two_nodes_is_two_xids(store: AgentStore) -> None:
    store.record(
        [
            StoreBatch("gpu-1", "file:/a", cursor(10), [sighting("gpu-1", 0)]),
            StoreBatch("gpu-2", "file:/b", cursor(10), [sighting("gpu-2", 0)]),
        ]
    )
    assert store.depth() == 2
    store.acknowledge("gpu-1", store.pending("gpu-1"))
    assert [p.first.node for p in store.pending("gpu-2")] == ["gpu-2"]


def test_bursts_list_each_node_once_the_longest_waiting_first(store: AgentStore) -> None:
    store.record(
        [
            StoreBatch("gpu-2", "file:/b", cursor(9), [sighting("gpu-2", 0, read_at=50.0)]),
            StoreBatch(
                "gpu-1",
                "file:/a",
                cursor(9),
                [sighting("gpu-1", 0, read_at=60.0), sighting("gpu-1", 5, read_at=70.0)],
            ),
        ]
    )
    bursts = store.bursts()
    assert [(b.node, b.count, b.first_read, b.last_read) for b in bursts] == [
        ("gpu-2", 1, 50.0, 50.0),
        ("gpu-1", 2, 60.0, 70.0),
    ]


def test_cursor_and_spool_survive_a_restart(tmp_path: Path) -> None:
    first = AgentStore(tmp_path)
    first.record([StoreBatch("gpu-1", "file:/a", cursor(42), [sighting("gpu-1", 0)])])
    first.close()

    again = AgentStore(tmp_path)
    try:
        assert again.cursor("gpu-1", "file:/a") == cursor(42)
        assert again.cursor("gpu-1", "file:/other") is None
        assert [p.report_id for p in again.pending("gpu-1")] == ["boot:0"]
    finally:
        again.close()


def test_a_failure_midway_saves_neither_cursor_nor_xids(store: AgentStore) -> None:
    def batches() -> Iterator[StoreBatch]:
        yield StoreBatch("gpu-1", "file:/a", cursor(10), [sighting("gpu-1", 0)])
        raise OSError("disk went away")

    with pytest.raises(OSError):
        store.record(batches())
    assert store.cursor("gpu-1", "file:/a") is None
    assert store.depth() == 0


def test_a_corrupt_cursor_reads_as_none_and_says_why(store: AgentStore) -> None:
    store.record([StoreBatch("gpu-1", "file:/a", cursor(10))])
    store._db.execute('UPDATE cursors SET cursor = \'{"kind": "tape"}\'')

    saved, problem = store.saved_cursor("gpu-1", "file:/a")
    assert saved is None
    assert problem is not None and problem.startswith("corrupt")
    assert store.saved_cursor("gpu-1", "file:/b") == (None, "missing")


def test_an_unwritable_state_dir_names_the_folder(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(RuntimeError, match=r"state directory .*file.*--state-dir"):
        AgentStore(blocker / "state")
