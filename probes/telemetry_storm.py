"""Telemetry storm probe: the client-side figures of a storm started in this run."""

from typing import Any

from chaoslib.types import Configuration, Secrets

from blackstart.actions.telemetry_storm import storm_report

__all__ = ["telemetry_storm_figures"]


def telemetry_storm_figures(
    storm_id: str = "", configuration: Configuration = None, secrets: Secrets = None
) -> dict[str, Any]:
    """The figures of telemetry storm ``storm_id`` (default the latest of this run) so far.

    Returns what ``stop_telemetry_storm`` returns (requests, ok, 429s,
    errors, latency percentiles, bytes, client CPU), whether it still runs or
    not; changes nothing. Raises when no storm was started in this run.
    """
    return storm_report(storm_id)
