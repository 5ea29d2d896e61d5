"""Read a node's kernel log incrementally, from where the last read stopped.

Two sources, one interface (:class:`KernelLogReader`):

- :class:`KmsgReader` reads the raw ``/dev/kmsg`` device of a real node. Every
  ``read(2)`` returns one record, ``prio,seq,usec,flags;message``; the sequence
  number is the position. The kernel numbers records from 0 at every boot, so a
  cursor only holds within the boot it was taken in.
- :class:`TextLogReader` reads a plain text log (``dmesg``, syslog, journal
  output, or raw kmsg records one per line): the file each simulated node of the
  local provider has instead of ``/dev/kmsg``. The position is a byte offset. A
  file that shrank or was replaced (another inode) was truncated or rotated;
  reading then starts at its beginning, and the offsets keep counting up, so a
  position never names two different lines.

Each reader starts from a :class:`Cursor` (saved by the agent after every read,
see :mod:`blackstart.rescue.agent.spool`) and hands back the records after it with the
cursor to save next: an agent restart neither reads a line twice nor skips one.
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal, Protocol

__all__ = [
    "BOOT_ID_PATH",
    "DEFAULT_KMSG_PATH",
    "MAX_LINE_BYTES",
    "UNKNOWN_BOOT_ID",
    "Cursor",
    "KernelLogReader",
    "KmsgReader",
    "LogRecord",
    "TextLogReader",
    "host_boot_id",
    "parse_kmsg_record",
    "record_id",
    "resume_file_cursor",
    "resume_kmsg_cursor",
    "split_lines",
]

DEFAULT_KMSG_PATH = "/dev/kmsg"
BOOT_ID_PATH = "/proc/sys/kernel/random/boot_id"
UNKNOWN_BOOT_ID = "unknown"
MAX_LINE_BYTES = 16 * 1024
"""Longer lines are cut to this many bytes; kernel records are at most 1 KiB."""

_KMSG_RECORD_BYTES = 8192  # a kmsg read must fit a whole record, else EINVAL
_READ_CHUNK_BYTES = 1024 * 1024  # at most this much of a text log per read: memory stays flat

SourceKind = Literal["kmsg", "file"]


@dataclass(frozen=True)
class Cursor:
    """Where reading a kernel log continues.

    ``kind`` ``"kmsg"``: ``position`` is the sequence number of the last record
    read (-1: none yet) in boot ``boot_id``.

    ``kind`` ``"file"``: ``position`` is the logical offset of the next unread
    byte; the file being read (``inode``) began at logical offset ``base``, so
    the byte offset in it is ``position - base``. ``boot_id`` is the node's boot
    when the last line was read; a file outlives a reboot, so a new boot does not
    move a file cursor.
    """

    kind: SourceKind
    boot_id: str
    position: int
    inode: int = 0
    base: int = 0

    def to_json(self) -> dict[str, Any]:
        """The cursor as a JSON-ready dict."""
        return {
            "kind": self.kind,
            "bootId": self.boot_id,
            "position": self.position,
            "inode": self.inode,
            "base": self.base,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Cursor:
        """A cursor from :meth:`to_json` output; raises ValueError on a malformed dict."""
        kind = data.get("kind")
        if kind not in ("kmsg", "file"):
            raise ValueError(f"cursor kind must be 'kmsg' or 'file', not {kind!r}")
        try:
            return cls(
                kind=kind,
                boot_id=str(data["bootId"]),
                position=int(data["position"]),
                inode=int(data.get("inode", 0)),
                base=int(data.get("base", 0)),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"malformed cursor {data!r}: {err}") from err


@dataclass(frozen=True)
class LogRecord:
    """One line of a kernel log.

    ``position`` is where the line starts: the kmsg sequence number, or the
    logical byte offset in a text log. ``boot_id`` is the boot it was read in and
    ``read_at`` the wall-clock time it was read (seconds since the epoch).
    """

    text: str
    position: int
    boot_id: str
    read_at: float

    @property
    def id(self) -> str:
        """``<bootID>:<position>``: unique per line, the same when read again."""
        return record_id(self.boot_id, self.position)


def record_id(boot_id: str, position: int) -> str:
    """The id of the kernel log line at ``position`` read in boot ``boot_id``."""
    return f"{boot_id or UNKNOWN_BOOT_ID}:{position}"


class KernelLogReader(Protocol):
    """What the agent needs of a kernel log source."""

    @property
    def cursor(self) -> Cursor:
        """The position after the last record handed out."""

    def read(self) -> list[LogRecord]:
        """The records written since the last read (possibly none); advances :attr:`cursor`."""

    def rewind(self, cursor: Cursor | None) -> None:
        """Read again from ``cursor`` (None: from where this reader started).

        For a read whose records could not be saved: they are read again.
        """

    def close(self) -> None:
        """Release the file or device."""


# --------------------------------------------------------------------------- pure parts
def resume_kmsg_cursor(saved: Cursor | None, boot_id: str) -> Cursor:
    """Where to continue reading ``/dev/kmsg`` in boot ``boot_id``, given the saved cursor.

    A cursor of another boot (or none) starts at the first record still in the
    kernel's buffer: sequence numbers restart at every boot.
    """
    if saved is None or saved.kind != "kmsg" or saved.boot_id != boot_id:
        return Cursor(kind="kmsg", boot_id=boot_id, position=-1)
    return saved


def resume_file_cursor(saved: Cursor | None, inode: int, size: int, boot_id: str) -> Cursor:
    """Where to continue reading a text log whose file now has ``inode`` and ``size``.

    Same file, at least as long as the saved offset: continue there. Another
    inode (rotated) or shorter (truncated): start at the file's beginning, with
    logical offsets continuing from the saved one. A file's offsets stay valid
    across reboots; ``boot_id`` only becomes the cursor's boot.
    """
    if saved is None or saved.kind != "file":
        return Cursor(kind="file", boot_id=boot_id, position=0, inode=inode, base=0)
    physical = saved.position - saved.base
    if inode != saved.inode or size < physical:
        return Cursor(
            kind="file", boot_id=boot_id, position=saved.position, inode=inode, base=saved.position
        )
    # the same cursor when nothing changed: the common case, once per log per poll
    return saved if saved.boot_id == boot_id else replace(saved, boot_id=boot_id)


def split_lines(
    data: bytes, start: int, take_partial: bool = False, max_line: int = MAX_LINE_BYTES
) -> tuple[list[tuple[int, bytes]], int]:
    """Cut ``data`` (read from offset ``start``) into lines.

    Returns ``(offset, line)`` pairs, each line without its newline and cut to
    ``max_line`` bytes, and how many bytes were consumed. A trailing line with no
    newline yet is left for the next read, unless ``take_partial`` (the writer
    has been quiet long enough) or it is already longer than ``max_line``.
    """
    lines: list[tuple[int, bytes]] = []
    pos = 0
    while pos < len(data):
        end = data.find(b"\n", pos)
        if end < 0:
            if not take_partial and len(data) - pos < max_line:
                break
            lines.append((start + pos, data[pos : pos + max_line]))
            pos = len(data)
            break
        lines.append((start + pos, data[pos : min(end, pos + max_line)]))
        pos = end + 1
    return lines, pos


def parse_kmsg_record(record: bytes) -> tuple[int, str] | None:
    """The sequence number and first line of one ``/dev/kmsg`` record, or None if malformed.

    The first line is returned whole (``prio,seq,usec,flags;message``), the form
    :class:`blackstart.rescue.wire.xid.XidParser` reads; continuation lines
    (`` KEY=value``) are dropped.
    """
    text = record.decode("utf-8", errors="replace")
    first = text.split("\n", 1)[0]
    header, sep, _ = first.partition(";")
    if not sep:
        return None
    fields = header.split(",")
    if len(fields) < 3:
        return None
    try:
        seq = int(fields[1])
    except ValueError:
        return None
    return seq, first


def host_boot_id(path: str | os.PathLike[str] = BOOT_ID_PATH) -> str:
    """This host's boot id (``/proc/sys/kernel/random/boot_id``)."""
    try:
        return Path(path).read_text().strip()
    except OSError as err:
        raise RuntimeError(
            f"cannot read the boot id from {path}: {err}; on a node, mount /proc of the host"
        ) from err


# --------------------------------------------------------------------------- readers
class TextLogReader:
    """Reads new lines of a text kernel log file, from a saved cursor on.

    Each :meth:`read` costs one ``stat`` when nothing was written. The boot id of
    new lines comes from ``boot_id`` (a callable, so it can follow a node that
    rebooted). A last line without a newline is read once the file has not grown
    for ``partial_grace`` seconds. A missing file reads as empty until it exists.
    With no saved cursor, reading starts at the beginning of the file, or at its
    end with ``from_end`` (what the file holds when the reader is made is skipped;
    a file that does not exist yet is read from its beginning once it does).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        cursor: Cursor | None,
        boot_id: Callable[[], str],
        partial_grace: float = 1.0,
        clock: Callable[[], float] = time.time,
        from_end: bool = False,
    ) -> None:
        self.path = Path(path)
        self._saved = cursor
        if from_end and cursor is None:
            # the end is where the log stands now, not at the first read: a line logged
            # once the agent said it is ready is new (a log not there yet is all new)
            try:
                stat = os.stat(self.path)
            except FileNotFoundError:
                pass
            else:
                self._saved = Cursor(
                    kind="file", boot_id=boot_id(), position=stat.st_size, inode=stat.st_ino
                )
        self._cursor: Cursor | None = None
        self._boot_id = boot_id
        self._partial_grace = partial_grace
        self._clock = clock
        self._partial_since: float | None = None
        self._partial_size = -1

    @property
    def cursor(self) -> Cursor:
        if self._cursor is not None:
            return self._cursor
        return self._saved or Cursor(kind="file", boot_id="", position=0)

    def read(self) -> list[LogRecord]:
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            return []
        boot = self._boot_id()
        cursor = resume_file_cursor(
            self._cursor or self._saved, stat.st_ino, stat.st_size, boot or self.cursor.boot_id
        )
        self._cursor = cursor
        physical = cursor.position - cursor.base
        if stat.st_size <= physical:
            return []
        with open(self.path, "rb") as stream:
            stream.seek(physical)
            data = stream.read(_READ_CHUNK_BYTES)
        now = self._clock()
        at_end = physical + len(data) >= stat.st_size
        lines, consumed = split_lines(
            data, physical, take_partial=at_end and self._partial_due(data, stat.st_size, now)
        )
        if consumed == len(data):
            self._partial_since = None
        self._cursor = replace(cursor, position=cursor.position + consumed)
        return [
            LogRecord(
                text=line.decode("utf-8", errors="replace"),
                position=cursor.base + offset,
                boot_id=cursor.boot_id,
                read_at=now,
            )
            for offset, line in lines
        ]

    def _partial_due(self, data: bytes, size: int, now: float) -> bool:
        """Whether a last line without newline is old enough to read as it is."""
        if data.endswith(b"\n"):
            return False
        if self._partial_since is None or self._partial_size != size:
            # the writer may still be writing this line: wait until the file stops growing
            self._partial_since, self._partial_size = now, size
            return False
        return now - self._partial_since >= self._partial_grace

    def rewind(self, cursor: Cursor | None) -> None:
        if cursor is not None:
            self._saved = cursor
        self._cursor = None
        self._partial_since = None

    def close(self) -> None:
        """Nothing stays open between reads."""


class KmsgReader:
    """Reads new records of ``/dev/kmsg`` (or a device that behaves like it).

    The device is opened non-blocking once; each read drains the records the
    kernel has, skipping those at or before the cursor. Records the kernel
    overwrote before they were read (``EPIPE``) are counted in :attr:`lost`.
    With a cursor of an earlier boot, reading starts at the oldest record the
    kernel still holds (all of this boot); with no cursor at all, there too, or
    after the newest one with ``from_end``.
    """

    def __init__(
        self,
        cursor: Cursor | None,
        boot_id: str,
        path: str | os.PathLike[str] = DEFAULT_KMSG_PATH,
        max_records: int = 10_000,
        clock: Callable[[], float] = time.time,
        from_end: bool = False,
    ) -> None:
        self.path = Path(path)
        self._cursor = resume_kmsg_cursor(cursor, boot_id)
        fresh = cursor is None  # a cursor of an earlier boot: this boot's records are all new
        self._max_records = max_records
        self._clock = clock
        self.lost = 0
        try:
            self._fd: int | None = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)
        except OSError as err:
            raise RuntimeError(
                f"cannot open {self.path}: {err.strerror}; the agent needs read access to the "
                "kernel log (root with CAP_SYSLOG, and the device mounted into the container)"
            ) from err
        if from_end and fresh:
            # continue after the newest record: drain what the kernel holds, keep its number
            while self.read():
                pass
        self._start = self._cursor

    @property
    def cursor(self) -> Cursor:
        return self._cursor

    def read(self) -> list[LogRecord]:
        if self._fd is None:
            return []
        raw: list[bytes] = []
        while len(raw) < self._max_records:
            try:
                record = os.read(self._fd, _KMSG_RECORD_BYTES)
            except BlockingIOError:
                break
            except OSError as err:
                if err.errno == errno.EPIPE:
                    self.lost += 1
                    continue
                raise
            if not record:
                break
            raw.append(record)
        return self.accept(raw)

    def accept(self, records: Sequence[bytes]) -> list[LogRecord]:
        """The records after the cursor among raw ``records``; advances the cursor."""
        now = self._clock()
        out: list[LogRecord] = []
        for record in records:
            parsed = parse_kmsg_record(record)
            if parsed is None:
                continue
            seq, text = parsed
            if seq <= self._cursor.position:
                continue
            self._cursor = replace(self._cursor, position=seq)
            out.append(
                LogRecord(text=text, position=seq, boot_id=self._cursor.boot_id, read_at=now)
            )
        return out

    def rewind(self, cursor: Cursor | None) -> None:
        if cursor is None:
            self._cursor = self._start
        else:
            self._cursor = resume_kmsg_cursor(cursor, self._start.boot_id)
        if self._fd is not None:
            os.lseek(self._fd, 0, os.SEEK_SET)  # kmsg: back to the oldest record still held

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
