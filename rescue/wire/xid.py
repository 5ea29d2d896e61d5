"""Find NVIDIA Xid errors in kernel log lines: pure parsing, no cluster, no I/O.

The NVIDIA driver reports GPU faults as ``NVRM: Xid`` kernel messages::

    NVRM: Xid (PCI:0000:3b:00): 79, pid='<unknown>', name=<unknown>, GPU has fallen off the bus.

and, once per GPU, which PCI address holds which GPU::

    NVRM: GPU at PCI:0000:3b:00: GPU-6a9b3c1e-0f2d-4e7a-9c55-1b2d3e4f5a6b

:class:`XidParser` reads such lines one at a time, in any of the forms a node
keeps its kernel log in:

- raw ``/dev/kmsg`` records, ``prio,seq,usec,flags;message`` (continuation lines
  that start with a space and hold ``KEY=value`` pairs are skipped);
- ``dmesg`` lines, ``[ 1843.308145] NVRM: ...``, also ``dmesg -T``
  (``[Mon Nov 23 12:00:01 2026] NVRM: ...``) and ``dmesg -x`` (``kern  :warn  : ...``);
- syslog and journal lines, ``Nov 23 12:00:01 host kernel: NVRM: ...`` (with or
  without a ``[ 1843.3]`` stamp after the tag) and the ISO 8601 forms
  (``2026-11-23T12:00:01.123456+00:00 host kernel: ...``).

It remembers the PCI address of every ``GPU at`` line, so an Xid that comes later
in the same stream carries the GPU's UUID. Every other line, including garbage,
binary junk and truncated Xid lines, is skipped: :meth:`XidParser.feed` never
raises on input.
"""

from __future__ import annotations

import datetime as dt
import re
import time
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from blackstart.rescue.wire.catalogue import action_for, describe

__all__ = [
    "MAX_LINE_CHARS",
    "XidEvent",
    "XidParser",
    "log_epoch",
    "normalise_pci",
    "parse_lines",
]

MAX_LINE_CHARS = 8192
"""Only the first this many characters of a line are searched; kmsg records are shorter."""

_DEFAULT_MAX_GPUS = 256  # far more than one node holds; bounds memory on hostile input

# The flags keep every pattern to ASCII digits and letters, so a Unicode digit in
# junk input can never reach int().
_F = re.ASCII

_KMSG_CONTINUATION = re.compile(r"^\s+[A-Za-z0-9_.-]+=", _F)
_KMSG = re.compile(
    r"^(?P<prio>[0-9]{1,4}),(?P<seq>[0-9]{1,20}),(?P<usec>[0-9]{1,20}),[^;]{0,32};(?P<body>.*)$",
    _F,
)
_DMESG_FACILITY = re.compile(r"^[a-z]{2,8} *:[a-z]{2,7} *: ", _F)
_DMESG_MONOTONIC = re.compile(r"^\[\s*(?P<ts>[0-9]{1,12}\.[0-9]{1,9})\]\s?(?P<body>.*)$", _F)
_DMESG_CTIME = re.compile(
    r"^\[(?P<ts>[A-Z][a-z]{2} [A-Z][a-z]{2} +[0-9]{1,2} [0-9]{2}:[0-9]{2}:[0-9]{2} [0-9]{4})\]"
    r"\s?(?P<body>.*)$",
    _F,
)
_ISO = re.compile(
    r"^(?P<ts>[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}:[0-9]{2}(?:[.,][0-9]{1,9})?"
    r"(?:Z|[+-][0-9]{2}:?[0-9]{2})?)\s+(?P<body>.*)$",
    _F,
)
_SYSLOG = re.compile(
    r"^(?P<ts>[A-Z][a-z]{2} +[0-9]{1,2} [0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,9})?)"
    r"\s+(?P<body>.*)$",
    _F,
)

# A PCI address as the driver prints it: optional domain, bus, device, optional function.
_PCI = r"(?:[0-9A-Fa-f]{1,8}:)?[0-9A-Fa-f]{1,2}:[0-9A-Fa-f]{1,2}(?:\.[0-7])?"
_PCI_PARTS = re.compile(
    r"^(?:PCI:)?(?:(?P<domain>[0-9A-Fa-f]{1,8}):)?(?P<bus>[0-9A-Fa-f]{1,2}):"
    r"(?P<device>[0-9A-Fa-f]{1,2})(?:\.[0-7])?$",
    _F,
)
# MIG instances add ``GPU-I:07`` (and ``GPU-CI:00``) after the address; some
# records end right after the code (``NVRM: Xid (PCI:0000:c1:00): 45``).
_XID = re.compile(
    r"NVRM: Xid \((?:PCI:)?(?P<pci>" + _PCI + r")"
    r"(?:\s+GPU-I:(?P<gi>[0-9]{1,4}))?(?:\s+GPU-CI:(?P<ci>[0-9]{1,4}))?\): "
    r"(?P<code>[0-9]{1,5})\s*(?:,(?P<rest>.*))?$",
    _F,
)
_GPU_AT = re.compile(
    r"NVRM: GPU at (?:PCI:)?(?P<pci>" + _PCI + r"): "
    r"(?P<uuid>GPU-[0-9A-Fa-f]{8}(?:-[0-9A-Fa-f]{4}){3}-[0-9A-Fa-f]{12})(?![0-9A-Za-z-])",
    _F,
)
_PID = re.compile(r"pid=(?P<pid>'[^',]*'|[^,\s]*)\s*,\s*", _F)
_PID_NUMBER = re.compile(r"[0-9]{1,10}", _F)
_NAME = re.compile(r"name=(?P<name>[^,]*),\s*", _F)
_UNKNOWN_VALUES = frozenset({"", "<unknown>", "unknown", "n/a", "none"})


@dataclass(frozen=True)
class XidEvent:
    """One Xid error as the kernel logged it.

    ``pci`` is normalised to ``dddd:bb:dd`` (lowercase, no function). ``uuid`` is
    known when a ``GPU at`` line for the same address came earlier in the stream.
    ``message`` is the text after the code, without the ``pid=``/``name=`` fields.
    ``timestamp`` is as found in the line: seconds since boot for kmsg (converted
    from microseconds) and dmesg, the wall-clock string for ``dmesg -T``, syslog
    and ISO lines (:func:`log_epoch` makes any of them seconds since the epoch).
    ``seq`` is the kmsg sequence number, for kmsg records only. ``gpu_instance``
    and ``compute_instance`` are the MIG instance numbers as printed (``GPU-I:07
    GPU-CI:00`` gives ``"07"`` and ``"00"``), None on a GPU without MIG.
    """

    pci: str
    xid: int
    uuid: str | None
    pid: int | None
    process_name: str | None
    message: str
    timestamp: str | None
    seq: int | None
    raw: str
    gpu_instance: str | None = None
    compute_instance: str | None = None

    def to_json(self) -> dict[str, str | int | None]:
        """The event as a JSON-ready dict, with the catalogue's meaning and action."""
        return {
            "pci": self.pci,
            "xid": self.xid,
            "uuid": self.uuid,
            "pid": self.pid,
            "process_name": self.process_name,
            "message": self.message,
            "timestamp": self.timestamp,
            "seq": self.seq,
            "gpu_instance": self.gpu_instance,
            "compute_instance": self.compute_instance,
            "meaning": describe(self.xid).meaning,
            "action": action_for(self.xid, self.message),
        }


def normalise_pci(address: str) -> str | None:
    """``address`` as ``dddd:bb:dd`` in lowercase, or None if it is not a PCI address.

    Accepts ``0000:03:00``, ``PCI:0000:03:00``, ``03:00``, ``0000:03:00.0`` and
    nvidia-smi's ``00000000:03:00.0``; a missing domain is ``0000``.
    """
    match = _PCI_PARTS.match(address.strip())
    if match is None:
        return None
    domain = int(match.group("domain") or "0", 16)
    bus = int(match.group("bus"), 16)
    device = int(match.group("device"), 16)
    return f"{domain:04x}:{bus:02x}:{device:02x}"


class XidParser:
    """Turns kernel log lines into :class:`XidEvent` objects, one line at a time.

    The parser is stateful: it keeps the PCI address to GPU UUID map of the
    ``GPU at`` lines it has seen, so feed it one node's stream in order. The map
    holds at most ``max_gpus`` addresses, dropping the oldest.
    """

    def __init__(self, max_gpus: int = _DEFAULT_MAX_GPUS) -> None:
        self._max_gpus = max(1, max_gpus)
        self._uuids: OrderedDict[str, str] = OrderedDict()

    @property
    def gpus(self) -> Mapping[str, str]:
        """A read-only copy of the PCI address (``dddd:bb:dd``) to GPU UUID map."""
        return MappingProxyType(dict(self._uuids))

    def uuid_for(self, pci: str) -> str | None:
        """The UUID of the GPU at ``pci`` (any accepted address form), if seen."""
        address = normalise_pci(pci)
        return None if address is None else self._uuids.get(address)

    def remember_gpu(self, pci: str, uuid: str) -> None:
        """Record that ``uuid`` is at ``pci``, as a ``GPU at`` line would (e.g. from nvidia-smi)."""
        address = normalise_pci(pci)
        if address is None:
            return
        self._uuids.pop(address, None)
        self._uuids[address] = uuid
        while len(self._uuids) > self._max_gpus:
            self._uuids.popitem(last=False)

    def feed(self, line: str | bytes) -> XidEvent | None:
        """Read one log line; return the Xid it reports, or None for any other line.

        Bytes are decoded as UTF-8 with replacement characters. A ``GPU at`` line
        updates the UUID map and returns None.
        """
        text = line.decode("utf-8", errors="replace") if isinstance(line, bytes) else line
        text = text.rstrip("\r\n")
        if not text or _KMSG_CONTINUATION.match(text):
            return None
        head = text[:MAX_LINE_CHARS]
        timestamp, seq, body = _split_prefix(head)
        if "NVRM:" not in body:
            return None

        gpu_at = _GPU_AT.search(body)
        if gpu_at is not None:
            self.remember_gpu(gpu_at.group("pci"), gpu_at.group("uuid"))
            return None

        xid = _XID.search(body)
        if xid is None:
            return None
        pci = normalise_pci(xid.group("pci"))
        if pci is None:
            return None
        pid, process_name, message = _split_process(xid.group("rest") or "")
        return XidEvent(
            pci=pci,
            xid=int(xid.group("code")),
            uuid=self._uuids.get(pci),
            pid=pid,
            process_name=process_name,
            message=message,
            timestamp=timestamp,
            seq=seq,
            raw=text,
            gpu_instance=xid.group("gi"),
            compute_instance=xid.group("ci"),
        )


def parse_lines(lines: Iterable[str | bytes]) -> Iterator[XidEvent]:
    """The Xid errors in ``lines``, in order, read with one :class:`XidParser`."""
    parser = XidParser()
    for line in lines:
        event = parser.feed(line)
        if event is not None:
            yield event


def _split_prefix(text: str) -> tuple[str | None, int | None, str]:
    """The timestamp, kmsg sequence number and message body of one log line."""
    kmsg = _KMSG.match(text)
    if kmsg is not None:
        usec = int(kmsg.group("usec"))
        seconds = f"{usec // 1_000_000}.{usec % 1_000_000:06d}"
        return seconds, int(kmsg.group("seq")), kmsg.group("body")

    facility = _DMESG_FACILITY.match(text)
    if facility is not None:
        text = text[facility.end() :]
    for pattern in (_DMESG_MONOTONIC, _DMESG_CTIME, _ISO, _SYSLOG):
        match = pattern.match(text)
        if match is not None:
            return match.group("ts"), None, match.group("body")
    return None, None, text


def _split_process(rest: str) -> tuple[int | None, str | None, str]:
    """The pid, process name and message of the text after an Xid code."""
    rest = rest.strip()
    pid: int | None = None
    process_name: str | None = None

    pid_field = _PID.match(rest)
    if pid_field is not None:
        value = pid_field.group("pid").strip("'")
        pid = int(value) if _PID_NUMBER.fullmatch(value) else None
        rest = rest[pid_field.end() :]

    name_field = _NAME.match(rest)
    if name_field is not None:
        value = name_field.group("name").strip().strip("'")
        process_name = None if value.lower() in _UNKNOWN_VALUES else value
        rest = rest[name_field.end() :]

    return pid, process_name, rest.strip()


_UPTIME = re.compile(r"^[0-9]{1,12}\.[0-9]{1,9}$", _F)
_CTIME_FORMAT = "%a %b %d %H:%M:%S %Y"
_SYSLOG_FORMAT = "%Y %b %d %H:%M:%S"


def log_epoch(
    timestamp: str | None, boot_time: float | None, now: float | None = None
) -> float | None:
    """When the kernel logged a line, in seconds since the epoch; None when the line cannot tell.

    ``timestamp`` is :attr:`XidEvent.timestamp`. Seconds since boot (kmsg,
    dmesg) need the node's ``boot_time`` (epoch seconds). Wall-clock forms
    without a zone (``dmesg -T``, syslog) are the node's local time; syslog has
    no year, so it is the year that puts the line at most a day after ``now``.
    """
    if not timestamp:
        return None
    try:
        if _UPTIME.match(timestamp):
            return None if boot_time is None else boot_time + float(timestamp)
        if timestamp[:4].isdigit():  # ISO 8601
            text = timestamp.replace(",", ".").replace(" ", "T", 1)
            if text.endswith("Z"):
                text = text[:-1] + "+00:00"
            elif len(text) > 5 and text[-5] in "+-" and text[-4:].isdigit():
                text = text[:-2] + ":" + text[-2:]  # +0000 -> +00:00
            moment = dt.datetime.fromisoformat(text)
            return moment.timestamp()  # naive: local time
        words = " ".join(timestamp.split())
        if len(words.split(" ")) == 5:  # dmesg -T: "Mon Nov 23 12:00:01 2026"
            return time.mktime(time.strptime(words, _CTIME_FORMAT))
        clock = time.time() if now is None else now
        whole, _, fraction = words.partition(".")
        year = time.localtime(clock).tm_year
        for candidate in (year, year - 1):
            parsed = time.mktime(time.strptime(f"{candidate} {whole}", _SYSLOG_FORMAT))
            if parsed <= clock + 86400:
                return parsed + (float(f"0.{fraction}") if fraction else 0.0)
    except (ValueError, OverflowError):
        return None
    return None
