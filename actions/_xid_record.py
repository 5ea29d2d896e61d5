"""What :func:`~blackstart.actions.xid.inject_xid` wrote, kept for the probes and the rollback.

In this process's memory (for the probes of the same run) and on disk, in the
cluster's state folder (``<state>/chaos/xid-injections.jsonl``), so that a
rollback run by another process (a new ``chaos run``, an operator after a crash)
still knows which nodes were injected into and how they were before.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from blackstart.target import Target

__all__ = [
    "Injection",
    "forget",
    "forget_on_disk",
    "journal_injections",
    "record",
    "recorded_injections",
]


@dataclass(frozen=True)
class Injection:
    """What :func:`inject_xid` wrote, kept for the probes and the rollback."""

    cluster: str
    node: str
    xid: int
    pci: str
    count: int
    line_format: str
    written_at: str
    was_cordoned: bool | None
    log: str


_injections: list[Injection] = []
_injections_lock = threading.Lock()


def recorded_injections(cluster: str | None = None) -> list[dict[str, Any]]:
    """The injections this process made (oldest first), optionally of one cluster only."""
    with _injections_lock:
        return [asdict(i) for i in _injections if cluster is None or i.cluster == cluster]


def forget(cluster: str, nodes: set[str]) -> None:
    with _injections_lock:
        _injections[:] = [i for i in _injections if not (i.cluster == cluster and i.node in nodes)]


def record(target: Target, injection: Injection) -> None:
    """Keep ``injection`` in memory and in the cluster's state on disk."""
    with _injections_lock:
        _injections.append(injection)
        with _journal_file(target).open("a") as journal:
            journal.write(json.dumps(asdict(injection)) + "\n")


def _journal_file(target: Target) -> Path:
    """Where a cluster's injections are recorded, with its state: any process can roll back."""
    folder = Path(target.require_state("inject_xid").state_dir) / "chaos"
    folder.mkdir(exist_ok=True)
    return folder / "xid-injections.jsonl"


def journal_injections(target: Target) -> list[dict[str, Any]]:
    """The injections recorded on disk for ``target``'s cluster and not restored yet."""
    path = _journal_file(target)
    if not path.exists():
        return []
    found = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue  # a line cut short by a crash: the others still count
        if isinstance(record, dict) and isinstance(record.get("node"), str):
            found.append(record)
    return found


def forget_on_disk(target: Target, nodes: set[str]) -> None:
    path = _journal_file(target)
    with _injections_lock:
        kept = [i for i in journal_injections(target) if i["node"] not in nodes]
        temporary = path.with_suffix(".tmp")
        temporary.write_text("".join(json.dumps(i) + "\n" for i in kept))
        os.replace(temporary, path)
