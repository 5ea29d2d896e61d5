"""The node agent's durable state: read cursors and the spool of unreported Xids.

One SQLite file in the agent's state directory (``agent.sqlite``) holds, per
node and log source, the :class:`~blackstart.rescue.agent.kmsg.Cursor` after the last
line read, and every Xid read but not yet accepted by the API server. Both
change in one transaction (:meth:`AgentStore.record`), so after a crash or a
node reboot the agent resumes exactly there: a line is either still unread or
already spooled, never both, never neither. A spooled Xid leaves the spool only
when :meth:`AgentStore.acknowledge` is called after the API server accepted its
report; Xids seen while the API server is unreachable wait here.

Writes are synchronous (``synchronous=FULL``): an Xid often comes just before
the node is rebooted.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from blackstart.rescue.agent.kmsg import Cursor
from blackstart.rescue.wire.signal import XidSighting

__all__ = ["STORE_FILE", "AgentStore", "PendingBurst", "StoreBatch"]

STORE_FILE = "agent.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS cursors (
    node TEXT NOT NULL,
    source TEXT NOT NULL,
    cursor TEXT NOT NULL,
    PRIMARY KEY (node, source)
);
CREATE TABLE IF NOT EXISTS spool (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    node TEXT NOT NULL,
    id TEXT NOT NULL,
    read_at REAL NOT NULL,
    sighting TEXT NOT NULL,
    UNIQUE (node, id)
);
CREATE INDEX IF NOT EXISTS spool_node ON spool (node, seq);
"""


@dataclass(frozen=True)
class StoreBatch:
    """What one read of one node's log produced: its new cursor and the Xids in it."""

    node: str
    source: str
    cursor: Cursor
    sightings: Sequence[XidSighting] = ()


@dataclass(frozen=True)
class PendingBurst:
    """A node's spooled Xids: how many, and when the first and last were read."""

    node: str
    count: int
    first_read: float
    last_read: float


class AgentStore:
    """Cursors and spool in ``<state_dir>/agent.sqlite``; safe to share between threads."""

    def __init__(self, state_dir: str | os.PathLike[str]) -> None:
        self.state_dir = Path(state_dir)
        try:
            self.state_dir.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise RuntimeError(
                f"cannot create the agent state directory {self.state_dir}: {err.strerror}; "
                "pass a writable --state-dir"
            ) from err
        self.path = self.state_dir / STORE_FILE
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
        except sqlite3.Error as err:
            raise RuntimeError(
                f"cannot open the agent state {self.path}: {err}; "
                "move the damaged file away to start with an empty spool"
            ) from err

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()

    # ------------------------------------------------------------------ cursors
    def cursor(self, node: str, source: str) -> Cursor | None:
        """The saved cursor of ``node``'s log ``source``, or None if never read."""
        with self._lock:
            row = self._db.execute(
                "SELECT cursor FROM cursors WHERE node = ? AND source = ?", (node, source)
            ).fetchone()
        if row is None:
            return None
        try:
            return Cursor.from_json(json.loads(row[0]))
        except ValueError:
            return None

    # -------------------------------------------------------------------- spool
    def record(self, batches: Iterable[StoreBatch]) -> list[XidSighting]:
        """Save every batch's cursor and spool its Xids, all in one transaction.

        Returns the Xids that were new; one already spooled (same node and id) is
        not spooled twice.
        """
        added: list[XidSighting] = []
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for batch in batches:
                    self._db.execute(
                        "INSERT INTO cursors (node, source, cursor) VALUES (?, ?, ?) "
                        "ON CONFLICT (node, source) DO UPDATE SET cursor = excluded.cursor",
                        (batch.node, batch.source, json.dumps(batch.cursor.to_json())),
                    )
                    for sighting in batch.sightings:
                        inserted = self._db.execute(
                            "INSERT OR IGNORE INTO spool (node, id, read_at, sighting) "
                            "VALUES (?, ?, ?, ?)",
                            (
                                sighting.node,
                                sighting.id,
                                sighting.read_at,
                                json.dumps(asdict(sighting)),
                            ),
                        )
                        if inserted.rowcount:
                            added.append(sighting)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return added

    def pending(self, node: str, limit: int = 1000) -> list[XidSighting]:
        """``node``'s spooled Xids, oldest first, at most ``limit``."""
        with self._lock:
            rows = self._db.execute(
                "SELECT sighting FROM spool WHERE node = ? ORDER BY seq LIMIT ?", (node, limit)
            ).fetchall()
        return [_sighting(row[0]) for row in rows]

    def bursts(self) -> list[PendingBurst]:
        """One entry per node with spooled Xids, the node waiting longest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT node, COUNT(*), MIN(read_at), MAX(read_at) FROM spool "
                "GROUP BY node ORDER BY MIN(read_at)"
            ).fetchall()
        return [PendingBurst(node=r[0], count=r[1], first_read=r[2], last_read=r[3]) for r in rows]

    def acknowledge(self, node: str, ids: Iterable[str]) -> int:
        """Remove ``node``'s Xids ``ids`` from the spool (the API server has them)."""
        keys = [(node, i) for i in ids]
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                removed = 0
                for key in keys:
                    removed += self._db.execute(
                        "DELETE FROM spool WHERE node = ? AND id = ?", key
                    ).rowcount
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return removed

    def depth(self) -> int:
        """How many Xids wait in the spool, all nodes together."""
        with self._lock:
            row = self._db.execute("SELECT COUNT(*) FROM spool").fetchone()
        return int(row[0])


def _sighting(text: str) -> XidSighting:
    data: dict[str, Any] = json.loads(text)
    return XidSighting(**data)
