"""Prometheus probes: any PromQL query, for steady-state tolerances and the metrics sampler.

The Prometheus URL comes from the configuration key ``prometheus_url`` or,
for a blackstart cluster, from its saved state (every local cluster runs one
that scrapes the API server, etcd, the scheduler, the controller manager, the
kwok controller and CoreDNS every 5 s).
"""

import math
from typing import Any

from chaoslib.exceptions import ActivityFailed
from chaoslib.types import Configuration, Secrets
from prometheus_api_client import PrometheusConnect

from blackstart.target import resolve_target

__all__ = ["prometheus_query", "prometheus_value"]

QUERY_TIMEOUT_S = 5.0


def _check_query(query: Any) -> None:
    if not isinstance(query, str) or not query.strip():
        raise ActivityFailed(f"query must be a non-empty PromQL expression, not {query!r}")


def run_query(url: str, query: str, timeout_s: float = QUERY_TIMEOUT_S) -> list[dict[str, Any]]:
    """Evaluate ``query`` at Prometheus ``url`` now; the raw result list of an instant query."""
    _check_query(query)
    connection = PrometheusConnect(url=url, disable_ssl=True)
    try:
        result = connection.custom_query(query, params={"timeout": f"{timeout_s:g}s"})
    except Exception as err:  # connection refused, HTTP 400 on a bad query, timeouts
        raise ActivityFailed(f"Prometheus at {url} could not answer {query!r}: {err}") from err
    if isinstance(result, dict):  # a scalar or string result
        return [{"metric": {}, "value": result.get("value", result)}]
    return list(result)


def sample_value(sample: dict[str, Any]) -> float | None:
    """The float value of one result sample; None for NaN or a missing value."""
    value = sample.get("value")
    if isinstance(value, list) and len(value) == 2:
        value = value[1]
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) or math.isinf(number) else number


def scalar(url: str, query: str, empty: float | None = None) -> float | None:
    """The first sample of ``query`` as a float; ``empty`` when there is no sample (or NaN)."""
    for sample in run_query(url, query):
        value = sample_value(sample)
        if value is not None:
            return value
    return empty


def prometheus_query(
    query: str, configuration: Configuration = None, secrets: Secrets = None
) -> list[dict[str, Any]]:
    """Evaluate a PromQL ``query`` now; returns its samples as ``[{"metric": {...}, "value": v}]``.

    ``value`` is a float (null for NaN). Raises when Prometheus cannot be
    reached or rejects the query.
    """
    _check_query(query)
    url = resolve_target(configuration, secrets).require_prometheus()
    return [
        {"metric": dict(sample.get("metric", {})), "value": sample_value(sample)}
        for sample in run_query(url, query)
    ]


def prometheus_value(
    query: str,
    default: float | None = None,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> float:
    """The value of a PromQL ``query`` that yields one number, e.g. for a range tolerance.

    When the query yields no sample (or NaN), returns ``default``, or raises
    when no ``default`` is given. Example: ``sum(rate(apiserver_request_total{code="429"}[1m]))``
    with ``default: 0``.
    """
    _check_query(query)
    url = resolve_target(configuration, secrets).require_prometheus()
    value = scalar(url, query, default)
    if value is None:
        raise ActivityFailed(
            f"Prometheus at {url} has no sample for {query!r} (yet?); pass a default "
            "to use when the query is empty"
        )
    return value
