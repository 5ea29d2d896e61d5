"""API server probes: is it ready, how slow is it for a client, and what Prometheus says.

- :func:`apiserver_ready`: ``GET /readyz`` as the admin identity.
- :func:`apiserver_request_latency` / :func:`apiserver_latency_p99_seconds`: time
  a few small requests as a chosen identity. Use a non-admin identity (e.g.
  ``blackstart:coredns``, ``blackstart:rescue-controller``) to see what system
  traffic sees during a storm: the admin is exempt from API Priority and
  Fairness and never waits in its queues.
- :func:`apiserver_p99_seconds` and :func:`apiserver_429_per_second`: from the
  API server's own metrics, through Prometheus.
"""

import time
from typing import Any

from chaoslib.exceptions import ActivityFailed
from chaoslib.types import Configuration, Secrets

from blackstart.actions._checks import number
from blackstart.health import apiserver_readyz
from blackstart.probes.prometheus import scalar
from blackstart.stats import percentile
from blackstart.target import resolve_target

__all__ = [
    "apiserver_429_per_second",
    "apiserver_latency_p99_seconds",
    "apiserver_p99_seconds",
    "apiserver_ready",
    "apiserver_request_latency",
]

# verbs whose latency means something (WATCH and CONNECT are long-running)
_VERBS = "GET|LIST|POST|PUT|PATCH|DELETE|APPLY"


def p99_query(window: str = "1m", verbs: str = _VERBS, extra: str = "") -> str:
    """The PromQL for the API server's p99 request latency over ``window``."""
    selector = f'verb=~"{verbs}"' + (f",{extra}" if extra else "")
    return (
        "histogram_quantile(0.99, sum by (le) "
        f"(rate(apiserver_request_duration_seconds_bucket{{{selector}}}[{window}])))"
    )


def rate_429_query(window: str = "1m") -> str:
    """The PromQL for HTTP 429 answers per second over ``window``.

    With no 429 yet there is no ``code="429"`` series, and a plain sum would be
    empty (a chart with no line); it is 0 instead whenever the API server's
    requests are being counted at all, and still empty when they are not.
    """
    counted = f"apiserver_request_total[{window}]"
    return (
        f'sum(rate(apiserver_request_total{{code="429"}}[{window}])) or (sum(rate({counted})) * 0)'
    )


def _window(window: str) -> str:
    if not isinstance(window, str) or not window[:-1].isdigit() or window[-1] not in "smh":
        raise ActivityFailed(
            f"window must be a PromQL duration such as 30s, 1m or 5m, not {window!r}"
        )
    return window


def apiserver_ready(
    timeout_s: float = 2.0, configuration: Configuration = None, secrets: Secrets = None
) -> bool:
    """True when the API server answers ``/readyz`` with 200 within ``timeout_s`` seconds."""
    if isinstance(timeout_s, bool) or not isinstance(timeout_s, int | float) or timeout_s <= 0:
        raise ActivityFailed(f"timeout_s must be a positive number of seconds, not {timeout_s!r}")
    target = resolve_target(configuration, secrets)
    ready, _ = apiserver_readyz(target.api(), float(timeout_s))
    return ready


def apiserver_request_latency(
    requests: int = 10,
    identity: str = "",
    path: str = "",
    timeout_s: float = 5.0,
    spacing_s: float = 0.0,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> dict[str, Any]:
    """Time ``requests`` sequential GETs of ``path`` as ``identity``; the client's view.

    ``spacing_s``: a pause between two requests, so that the sample spans a stretch of
    time rather than a moment (a kube-apiserver just restarted by its supervisor answers
    well for a few seconds even while the storm that killed it goes on).

    ``identity``: empty for the admin (exempt from API Priority and Fairness),
    or one of blackstart's identities such as ``blackstart:coredns``.
    ``path``: default ``/api/v1/namespaces/default/services`` (the admin, the
    telemetry and the CoreDNS identities may read it; use ``/api/v1/nodes?limit=1``
    for the rescue identities). A request that fails or times out counts as an
    error and as ``timeout_s`` of latency. Returns ``{"requests", "errors",
    "throttled_429", "p50_seconds", "p99_seconds", "max_seconds", "answers"}``
    (``answers``: count by HTTP status or error).
    """
    if isinstance(requests, bool) or not isinstance(requests, int) or not 1 <= requests <= 1000:
        raise ActivityFailed(f"requests must be a whole number from 1 to 1000, not {requests!r}")
    if (
        isinstance(timeout_s, bool)
        or not isinstance(timeout_s, int | float)
        or not 0 < timeout_s <= 60
    ):
        raise ActivityFailed(f"timeout_s must be a number of seconds up to 60, not {timeout_s!r}")
    number("spacing_s", spacing_s, 0, 60)
    target = resolve_target(configuration, secrets)
    api = target.identity_api(identity, 1) if identity else target.api(1)
    url = f"{api.configuration.host}{path or '/api/v1/namespaces/default/services'}"
    latencies: list[float] = []
    errors = throttled = 0
    codes: dict[str, int] = {}
    for index in range(requests):
        if index and spacing_s:
            time.sleep(float(spacing_s))
        started = time.monotonic()
        try:
            response = api.rest_client.request(  # type: ignore[no-untyped-call]
                "GET", url, _request_timeout=float(timeout_s)
            )
            response.read()
            status = response.status
        except Exception as err:
            status = None
            codes[type(err).__name__] = codes.get(type(err).__name__, 0) + 1
        elapsed = time.monotonic() - started
        if status is not None:
            codes[str(status)] = codes.get(str(status), 0) + 1
        if status is not None and 200 <= status < 300:
            latencies.append(elapsed)
        else:
            errors += 1
            throttled += status == 429
            latencies.append(max(elapsed, float(timeout_s)) if status is None else elapsed)
    ordered = sorted(latencies)
    return {
        "requests": requests,
        "errors": errors,
        "throttled_429": throttled,
        "p50_seconds": round(ordered[len(ordered) // 2], 4),
        "p99_seconds": round(percentile(ordered, 0.99) or 0.0, 4),
        "max_seconds": round(ordered[-1], 4),
        "answers": codes,
    }


def apiserver_latency_p99_seconds(
    requests: int = 10,
    identity: str = "",
    path: str = "",
    timeout_s: float = 5.0,
    spacing_s: float = 0.0,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> float:
    """The p99 of ``apiserver_request_latency`` as a number, for a range tolerance."""
    result = apiserver_request_latency(
        requests, identity, path, timeout_s, spacing_s, configuration, secrets
    )
    return float(result["p99_seconds"])


def apiserver_p99_seconds(
    window: str = "1m",
    verbs: str = _VERBS,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> float:
    """The API server's p99 request latency over ``window``, from its metrics in Prometheus.

    ``verbs``: a regular expression of the verbs counted (long-running WATCH
    and CONNECT are left out by default). Returns 0.0 when no request was
    served in the window. Raises when Prometheus cannot be reached.
    """
    query = p99_query(_window(window), verbs)
    url = resolve_target(configuration, secrets).require_prometheus()
    value = scalar(url, query, 0.0)
    return float(value or 0.0)


def apiserver_429_per_second(
    window: str = "1m", configuration: Configuration = None, secrets: Secrets = None
) -> float:
    """HTTP 429 (Too Many Requests) answers per second over ``window``, from Prometheus.

    API Priority and Fairness answers 429 when a priority level's queues are
    full. Returns 0.0 when there were none.
    """
    query = rate_429_query(_window(window))
    url = resolve_target(configuration, secrets).require_prometheus()
    value = scalar(url, query, 0.0)
    return float(value or 0.0)
