"""The incident's figures, read from the journals of a game day of the incident experiments.

Run the incident entries of the catalogue, then point this at the output folder::

    blackstart gameday --name incident-gd --out /tmp/incident-gd \\
        --only telemetry-storm --only telemetry-storm-apf \\
        --only dns-chain-during-storm --only dns-chain-during-storm-mitigated \\
        --only remedy-remove-telemetry-service --only remedy-block-network \\
        --only remedy-scale-down --only remedy-grow-apiserver --only staged-rollout-guard
    python bench/incident_figures.py /tmp/incident-gd

Prints: time from storm start to API unavailability, kube-apiserver restarts
and peak memory, the storm's client CPU, the admin's rollback latency with and
without APF, data-plane DNS success during the outage with and without the
mitigation, the time to recovery of each remedy and where the staged roll-out
stopped. A figure whose experiment did not run is shown as ``-``.
"""

import argparse
import json
from pathlib import Path
from typing import Any


def activity_outputs(journal: dict[str, Any]) -> dict[str, Any]:
    """Activity name -> output, method first, then rollbacks (prefixed ``rollback:``)."""
    found: dict[str, Any] = {}
    for run in journal.get("run", []):
        found[run["activity"]["name"]] = run.get("output")
    for run in journal.get("rollbacks", []):
        found["rollback:" + run["activity"]["name"]] = run.get("output")
    after = (journal.get("steady_states") or {}).get("after") or {}
    for run in after.get("probes", []):
        found["after:" + run["activity"]["name"]] = run.get("output")
    return found


def series_delta(journal: dict[str, Any], name: str) -> float | None:
    """How much a sampled counter (e.g. ``apiserver_restarts``) rose during the run."""
    for ext in journal.get("extensions", []):
        for series in (ext.get("metrics") or {}).get("series", []) if ext.get("name") else []:
            if series.get("name") == name:
                values = [v for _, v in series.get("points", []) if v is not None]
                return max(values) - values[0] if values else None
    return None


def load(folder: Path, name: str) -> dict[str, Any]:
    path = folder / name / "journal.json"
    if not path.exists():
        return {}
    journal = json.loads(path.read_text())
    outputs = activity_outputs(journal)
    outputs["__status__"] = "deviated" if journal.get("deviated") else journal.get("status")
    outputs["__restarts__"] = series_delta(journal, "apiserver_restarts")
    return outputs


def _get(data: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(data, dict) or key not in data:
            return None
        data = data[key]
    return data


def figures(folder: Path) -> list[tuple[str, Any]]:
    storm = load(folder, "telemetry-storm")
    apf = load(folder, "telemetry-storm-apf")
    rows: list[tuple[str, Any]] = [
        ("telemetry-storm outcome", storm.get("__status__")),
        ("storm start -> API unavailable (s)",
         storm.get("seconds-from-storm-start-to-api-unavailable")),
        ("kube-apiserver restarts during the run", storm.get("__restarts__")),
        ("kube-apiserver OOM kills",
         _get(storm.get("control-plane-usage"), "components", "kube-apiserver", "oom_kills")),
        ("control plane memory peak (MiB)",
         round((_get(storm.get("control-plane-usage"), "usage", "memory_peak_bytes") or 0)
               / 2**20)),
        ("storm client CPU (s) / storm seconds",
         (_get(storm.get("storm-figures"), "client_cpu_s"),
          _get(storm.get("storm-figures"), "elapsed_s"))),
        ("admin rollback, dry run, without APF (s)",
         storm.get("admin-rollback-latency-without-apf")),
        ("admin rollback DELETE without APF (s, failed tries)",
         (_get(storm.get("rollback:remove-telemetry-service"), "seconds_until_deleted"),
          _get(storm.get("rollback:remove-telemetry-service"), "failed_tries"))),
        ("admin rollback, dry run, with APF (s)", apf.get("admin-rollback-latency-with-apf")),
        ("telemetry-storm-apf outcome, restarts", (apf.get("__status__"), apf.get("__restarts__"))),
    ]  # fmt: skip
    for name, label in (
        ("dns-chain-during-storm", "without"),
        ("dns-chain-during-storm-mitigated", "with"),
    ):
        chain = load(folder, name)
        rows.append((f"DNS success while the API server is down, {label} mitigation",
                     _get(chain.get("after:data-plane-dns-answers"), "success_ratio")))  # fmt: skip
        rows.append(("  outcome", chain.get("__status__")))
    for remedy in ("remove-telemetry-service", "block-network", "scale-down", "grow-apiserver"):
        run = load(folder, f"remedy-{remedy}")
        rows.append((f"time to recovery: {remedy} (s)", run.get("time-to-recovery")))
        rows.append(("  outcome, kube-apiserver restarts", (run.get("__status__"),
                                                            run.get("__restarts__"))))  # fmt: skip
        if remedy == "remove-telemetry-service":
            removed = run.get("remove-telemetry-service")
            took = (_get(removed, "seconds_until_deleted"), _get(removed, "failed_tries"))
            rows.append(("  lockout: DELETE accepted after (s, failed tries)", took))
    staged = load(folder, "staged-rollout-guard").get("staged-roll-out")
    stop = (_get(staged, "stopped_at_percent"), _get(staged, "stopped_at_clients"))
    rows.append(("staged roll-out stopped at (%, agents)", stop))
    kept = (_get(staged, "kept_percent"), _get(staged, "kept_clients"))
    rows.append(("staged roll-out kept (%, agents)", kept))
    rows.append(("staged roll-out reason", _get(staged, "reason")))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    args = parser.parse_args()
    for label, value in figures(args.folder):
        shown = "-" if value is None or value == (None, None) else value
        print(f"{label:<55} {shown}")


if __name__ == "__main__":
    main()
