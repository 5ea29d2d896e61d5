"""The optional JSON-lines record of every plan transition (``--journal FILE``).

One line per transition, appended and flushed at once, so the record survives the
RescuePlan objects (which are deleted after ``--plans-ttl``) and a crash::

    {"time": "2026-11-24T08:30:00.123456Z", "plan": "gpu-3-xid-0a1b2c3d4e5f",
     "node": "gpu-3", "phase": "Cordoned", "message": "...", "dryRun": false,
     "xids": [62], "source": "policy"}

Refusals by the storm guard are recorded too (``"phase": "Refused"``, no plan).
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

__all__ = ["Journal"]


class Journal:
    """Appends JSON lines to a file; a journal without a path records nothing."""

    def __init__(self, path: str | Path | None) -> None:
        self.path = Path(path) if path else None
        self._lock = threading.Lock()
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def record(self, entry: dict[str, Any]) -> None:
        """Append ``entry`` as one line."""
        if self.path is None:
            return
        line = json.dumps(entry, separators=(",", ":"), sort_keys=True) + "\n"
        with self._lock, self.path.open("a", encoding="utf-8") as stream:
            stream.write(line)
            stream.flush()
