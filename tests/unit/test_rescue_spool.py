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
        [StoreBatch("gpu-1", "file:/a", cursor(30), [sighting("gpu-1", 0), sighting("gpu-1", 10)])]
    )
    assert [s.id for s in added] == ["boot:0", "boot:10"]
    assert [s.id for s in store.pending("gpu-1")] == ["boot:0", "boot:10"]
    assert store.pending("gpu-1")[0] == sighting("gpu-1", 0)
    assert store.depth() == 2

    assert store.acknowledge("gpu-1", ["boot:0"]) == 1
    assert [s.id for s in store.pending("gpu-1")] == ["boot:10"]
    assert store.depth() == 1


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
    store.acknowledge("gpu-1", ["boot:0"])
    assert [s.node for s in store.pending("gpu-2")] == ["gpu-2"]


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
        assert [s.id for s in again.pending("gpu-1")] == ["boot:0"]
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


def test_an_unwritable_state_dir_names_the_folder(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(RuntimeError, match=r"state directory .*file.*--state-dir"):
        AgentStore(blocker / "state")
