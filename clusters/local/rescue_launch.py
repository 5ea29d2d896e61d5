"""Starting a rescue process of a local cluster from the command line ``start_rescue`` recorded.

Shared by the provider (``start_rescue``, ``start_component``) and the cluster's
supervisor (which restarts an exited one): the same command line, environment,
pid file and log file either way.
"""

import json
import os
import subprocess
from pathlib import Path

from blackstart.clusters.processes import spawn_detached
from blackstart.clusters.state import STATE_FILE


def recorded_argv(state_dir: Path, component: str) -> list[str]:
    """The command line recorded for ``component`` in the cluster's state ([] when none)."""
    try:
        state = json.loads((state_dir / STATE_FILE).read_text())
    except (OSError, ValueError):
        return []
    rescue = (state.get("extra") or {}).get("rescue") if isinstance(state, dict) else None
    argv = (rescue.get("argv") or {}).get(component) if isinstance(rescue, dict) else None
    return [str(a) for a in argv] if isinstance(argv, list) else []


def launch(state_dir: Path, component: str, argv: list[str]) -> subprocess.Popen[bytes]:
    """Start ``argv`` detached, with the cluster's cache, pid file and log file."""
    env = {
        **os.environ,
        "BLACKSTART_CACHE_DIR": str(state_dir.parent.parent),  # <cache>/clusters/<name>
        "PYTHONUNBUFFERED": "1",
    }
    pid_file = state_dir / "pids" / f"{component}.pid"
    log_file = state_dir / "logs" / f"{component}.log"
    return spawn_detached(argv, pid_file, log_file, env=env)
