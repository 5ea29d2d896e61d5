"""The node agent's durable state: read cursors and the spool of unreported Xids.

One SQLite file in the agent's state directory (``agent.sqlite``) holds, per
node and log source, the :class:`~blackstart.rescue.agent.kmsg.Cursor` after the last
line read, and the Xids read but not yet accepted by the API server. Both
change in one transaction (:meth:`AgentStore.record`), so after a crash or a
node reboot the agent resumes exactly there: a line is either still unread or
already spooled, never both, never neither.

Identical Xid lines (same :attr:`~blackstart.rescue.wire.signal.XidSighting.key`:
boot, Xid, GPU, MIG instance) share one spool row that counts them, so a GPU
logging the same Xid a hundred thousand times costs one row, not a hundred
thousand. A row leaves the spool (or shrinks by what was sent) only when
:meth:`AgentStore.acknowledge` is called after the API server accepted the
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
from blackstart.rescue.wire.signal import XidReport, XidSighting

__all__ = ["STORE_FILE", "AgentStore", "PendingBurst", "PendingReport", "StoreBatch"]

STORE_FILE = "agent.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS cursors (
    node TEXT NOT NULL,
    source TEXT NOT NULL,
    cursor TEXT NOT NULL,
    PRIMARY KEY (node, source)
);
CREATE TABLE IF NOT EXISTS pending (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    node TEXT NOT NULL,
    key TEXT NOT NULL,
    first TEXT NOT NULL,
    first_id TEXT NOT NULL,
    last_id TEXT NOT NULL,
    last_position INTEGER NOT NULL,
    count INTEGER NOT NULL,
    first_read REAL NOT NULL,
    last_read REAL NOT NULL,
    logged_at REAL,
    UNIQUE (node, key)
);
"""
_OLD_SPOOL = "spool"  # one row per line, before identical lines were collapsed


@dataclass(frozen=True)
class StoreBatch:
    """What one read of one node's log produced: its new cursor and the Xids in it."""

    node: str
    source: str
    cursor: Cursor
    sightings: Sequence[XidSighting] = ()


@dataclass(frozen=True)
class PendingBurst:
    """A node's spooled Xids: how many lines, and when the first and last were read."""

    node: str
    count: int
    first_read: float
    last_read: float


@dataclass(frozen=True)
class PendingReport:
    """Identical spooled Xid lines of one node: the first line, how many, when."""

    key: str
    first: XidSighting
    report_id: str
    count: int
    first_read: float
    last_read: float
    logged_at: float | None

    def report(self, written_at: float) -> XidReport:
        """The condition report these lines make (id: :attr:`report_id`)."""
        s = self.first
        return XidReport(
            id=self.report_id,
            xid=s.xid,
            pci=s.pci,
            uuid=s.uuid,
            count=self.count,
            first_seen=self.first_read,
            last_seen=self.last_read,
            written_at=written_at,
            boot_id=s.boot,
            logged_at=self.logged_at,
            gpu_instance=s.gpu_instance,
            compute_instance=s.compute_instance,
        )


def _position(sighting_id: str) -> int:
    try:
        return int(sighting_id.rpartition(":")[2])
    except ValueError:
        return -1


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
            self._migrate()
        except sqlite3.Error as err:
            raise RuntimeError(
                f"cannot open the agent state {self.path}: {err}; "
                "move the damaged file away to start with an empty spool"
            ) from err

    def _migrate(self) -> None:
        """Fold the one-row-per-line spool of an older agent into collapsed rows."""
        found = self._db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name = ?", (_OLD_SPOOL,)
        ).fetchone()
        if found is None:
            return
        rows = self._db.execute(f"SELECT sighting FROM {_OLD_SPOOL} ORDER BY seq").fetchall()
        sightings = [_sighting(row[0]) for row in rows]
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._spool(sightings)
            self._db.execute(f"DROP TABLE {_OLD_SPOOL}")
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()

    # ------------------------------------------------------------------ cursors
    def cursor(self, node: str, source: str) -> Cursor | None:
        """The saved cursor of ``node``'s log ``source``; None if never read or unreadable."""
        return self.saved_cursor(node, source)[0]

    def saved_cursor(self, node: str, source: str) -> tuple[Cursor | None, str | None]:
        """The saved cursor and, when there is none, why: ``"missing"`` or what is corrupt."""
        with self._lock:
            row = self._db.execute(
                "SELECT cursor FROM cursors WHERE node = ? AND source = ?", (node, source)
            ).fetchone()
        if row is None:
            return None, "missing"
        try:
            data = json.loads(row[0])
            if not isinstance(data, dict):
                raise ValueError(f"not an object: {row[0]!r}")
            return Cursor.from_json(data), None
        except ValueError as err:
            return None, f"corrupt ({err})"

    # -------------------------------------------------------------------- spool
    def record(self, batches: Iterable[StoreBatch]) -> list[XidSighting]:
        """Save every batch's cursor and spool its Xids, all in one transaction.

        Returns the Xids that were new; a line already spooled (same node, key
        and a position not after the last one spooled) is not counted twice.
        """
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                added: list[XidSighting] = []
                for batch in batches:
                    self._db.execute(
                        "INSERT INTO cursors (node, source, cursor) VALUES (?, ?, ?) "
                        "ON CONFLICT (node, source) DO UPDATE SET cursor = excluded.cursor",
                        (batch.node, batch.source, json.dumps(batch.cursor.to_json())),
                    )
                    added += self._spool(batch.sightings)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return added

    def _spool(self, sightings: Iterable[XidSighting]) -> list[XidSighting]:
        """Add ``sightings`` to their rows, one statement per row, not per line."""
        groups: dict[tuple[str, str], list[XidSighting]] = {}
        for sighting in sightings:
            groups.setdefault((sighting.node, sighting.key), []).append(sighting)
        added: list[XidSighting] = []
        for (node, key), lines in groups.items():
            row = self._db.execute(
                "SELECT last_position FROM pending WHERE node = ? AND key = ?", (node, key)
            ).fetchone()
            if row is not None:
                lines = [s for s in lines if _position(s.id) > row[0]]
            if not lines:
                continue
            first, last = lines[0], lines[-1]
            logged = [s.logged_at for s in lines if s.logged_at is not None]
            self._db.execute(
                "INSERT INTO pending (node, key, first, first_id, last_id, last_position, count, "
                "first_read, last_read, logged_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (node, key) DO UPDATE SET count = count + excluded.count, "
                "last_id = excluded.last_id, last_position = excluded.last_position, "
                "last_read = max(last_read, excluded.last_read), "
                "logged_at = max(coalesce(logged_at, excluded.logged_at), "
                "coalesce(excluded.logged_at, logged_at))",
                (
                    node,
                    key,
                    json.dumps(asdict(first)),
                    first.id,
                    last.id,
                    _position(last.id),
                    len(lines),
                    min(s.read_at for s in lines),
                    max(s.read_at for s in lines),
                    max(logged) if logged else None,
                ),
            )
            added += lines
        return added

    def pending(self, node: str, limit: int = 1000) -> list[PendingReport]:
        """``node``'s spooled reports, oldest first, at most ``limit``."""
        with self._lock:
            rows = self._db.execute(
                "SELECT key, first, first_id, count, first_read, last_read, logged_at "
                "FROM pending WHERE node = ? ORDER BY seq LIMIT ?",
                (node, limit),
            ).fetchall()
        return [
            PendingReport(
                key=r[0],
                first=_sighting(r[1]),
                report_id=r[2],
                count=r[3],
                first_read=r[4],
                last_read=r[5],
                logged_at=r[6],
            )
            for r in rows
        ]

    def bursts(self) -> list[PendingBurst]:
        """One entry per node with spooled Xids, the node waiting longest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT node, SUM(count), MIN(first_read), MAX(last_read) FROM pending "
                "GROUP BY node ORDER BY MIN(first_read)"
            ).fetchall()
        return [PendingBurst(node=r[0], count=r[1], first_read=r[2], last_read=r[3]) for r in rows]

    def acknowledge(self, node: str, sent: Iterable[PendingReport]) -> int:
        """Take what was ``sent`` of ``node`` out of the spool (the API server has it).

        Lines spooled into a row after it was read for sending stay, as a row of
        their own (its id is the id of its last line, never the one sent).
        Returns how many lines left the spool.
        """
        removed = 0
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for report in sent:
                    row = self._db.execute(
                        "SELECT count FROM pending WHERE node = ? AND key = ?", (node, report.key)
                    ).fetchone()
                    if row is None:
                        continue
                    if row[0] <= report.count:
                        self._db.execute(
                            "DELETE FROM pending WHERE node = ? AND key = ?", (node, report.key)
                        )
                        removed += row[0]
                        continue
                    self._db.execute(
                        "UPDATE pending SET count = count - ?, first_id = last_id, "
                        "first_read = last_read WHERE node = ? AND key = ?",
                        (report.count, node, report.key),
                    )
                    removed += report.count
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return removed

    def depth(self) -> int:
        """How many Xid lines wait in the spool, all nodes together."""
        with self._lock:
            row = self._db.execute("SELECT COALESCE(SUM(count), 0) FROM pending").fetchone()
        return int(row[0])


def _sighting(text: str) -> XidSighting:
    data: dict[str, Any] = json.loads(text)
    return XidSighting(**data)
