"""Data-plane DNS probes: resolve Service names through the cluster's CoreDNS, as pods do.

The server is the cluster's CoreDNS (a blackstart cluster's saved address, or
the configuration key ``dns_server`` as ``host:port``). Each attempt is one
UDP query with its own timeout, no retries, so a dropped answer counts as a
failure and the latency is what a client waits for its first answer. An
answer counts as a success when its code is NOERROR and it holds a record.
"""

import time
from collections import Counter
from typing import Any

import dns.exception
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
from chaoslib.exceptions import ActivityFailed
from chaoslib.types import Configuration, Secrets

from blackstart.stats import percentile
from blackstart.target import resolve_target

__all__ = [
    "dns_over_time",
    "dns_p99_seconds",
    "dns_resolution",
    "dns_success_ratio",
    "seconds_until_dns_answers",
]

DEFAULT_NAMES = ("kubernetes.default.svc.cluster.local",)


def _server(configuration: Configuration, secrets: Secrets, server: str) -> tuple[str, int]:
    address = server or resolve_target(configuration, secrets).dns_server
    if not address:
        raise ActivityFailed(
            "no DNS server known: pass server as host:port or set the configuration key "
            "'dns_server' (a blackstart cluster knows its CoreDNS address)"
        )
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ActivityFailed(f"DNS server {address!r} is not host:port")
    return host, int(port)


def _names(names: list[str] | None) -> list[str]:
    chosen = list(names or DEFAULT_NAMES)
    if not all(isinstance(n, str) and n for n in chosen):
        raise ActivityFailed(f"names must be a list of DNS names, not {names!r}")
    return chosen


def query_once(host: str, port: int, name: str, rdtype: str, timeout: float) -> tuple[str, float]:
    """One UDP query: (outcome, seconds). Outcome ``ok``, a response code, or ``timeout``."""
    message = dns.message.make_query(name, dns.rdatatype.from_text(rdtype))
    started = time.monotonic()
    try:
        response = dns.query.udp(message, host, port=port, timeout=timeout)
    except dns.exception.Timeout:
        return "timeout", time.monotonic() - started
    except OSError as err:  # refused (nothing listening) shows up as an OSError on UDP
        return type(err).__name__, time.monotonic() - started
    elapsed = time.monotonic() - started
    code = response.rcode()
    if code == dns.rcode.NOERROR and response.answer:
        return "ok", elapsed
    return dns.rcode.to_text(code) if code != dns.rcode.NOERROR else "NODATA", elapsed


def resolve_many(
    host: str, port: int, names: list[str], attempts: int, timeout_s: float, rdtype: str
) -> dict[str, Any]:
    """``attempts`` queries spread over ``names``; the figures of :func:`dns_resolution`."""
    outcomes: Counter[str] = Counter()
    latencies: list[float] = []
    for index in range(attempts):
        outcome, seconds = query_once(host, port, names[index % len(names)], rdtype, timeout_s)
        outcomes[outcome] += 1
        if outcome == "ok":
            latencies.append(seconds)
    # a failed attempt costs the client at least the timeout: count it so in the percentile
    waits = sorted(latencies + [timeout_s] * (attempts - len(latencies)))
    return {
        "server": f"{host}:{port}",
        "attempts": attempts,
        "answered": outcomes["ok"],
        "success_ratio": round(outcomes["ok"] / attempts, 4),
        "p50_seconds": round(waits[len(waits) // 2], 4),
        "p99_seconds": round(percentile(waits, 0.99) or 0.0, 4),
        "failures": {k: v for k, v in outcomes.items() if k != "ok"},
    }


def _check(attempts: int, timeout_s: float) -> None:
    if isinstance(attempts, bool) or not isinstance(attempts, int) or not 1 <= attempts <= 10000:
        raise ActivityFailed(f"attempts must be a whole number from 1 to 10000, not {attempts!r}")
    if (
        isinstance(timeout_s, bool)
        or not isinstance(timeout_s, int | float)
        or not 0 < timeout_s <= 30
    ):
        raise ActivityFailed(f"timeout_s must be a number of seconds up to 30, not {timeout_s!r}")


def dns_resolution(
    names: list[str] | None = None,
    attempts: int = 20,
    timeout_s: float = 0.5,
    record_type: str = "A",
    server: str = "",
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> dict[str, Any]:
    """Resolve ``names`` (default ``kubernetes.default.svc.cluster.local``) ``attempts`` times.

    Returns ``{"server", "attempts", "answered", "success_ratio", "p50_seconds",
    "p99_seconds", "failures": {"timeout": n, "SERVFAIL": n, ...}}``; a failed
    attempt counts as ``timeout_s`` in the percentiles. Use a tolerance such as
    ``{"type": "range", "target": "success_ratio", "range": [0.99, 1.0]}``.
    """
    _check(attempts, timeout_s)
    host, port = _server(configuration, secrets, server)
    return resolve_many(host, port, _names(names), attempts, float(timeout_s), record_type)


def dns_success_ratio(
    names: list[str] | None = None,
    attempts: int = 20,
    timeout_s: float = 0.5,
    server: str = "",
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> float:
    """Share (0-1) of ``attempts`` queries for ``names`` answered with a record."""
    return float(
        dns_resolution(names, attempts, timeout_s, "A", server, configuration, secrets)[
            "success_ratio"
        ]
    )


def dns_p99_seconds(
    names: list[str] | None = None,
    attempts: int = 20,
    timeout_s: float = 0.5,
    server: str = "",
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> float:
    """p99 seconds a client waits for an answer (a failed query counts as ``timeout_s``)."""
    return float(
        dns_resolution(names, attempts, timeout_s, "A", server, configuration, secrets)[
            "p99_seconds"
        ]
    )


def seconds_until_dns_answers(
    name: str = DEFAULT_NAMES[0],
    timeout_s: float = 30.0,
    server: str = "",
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> float:
    """Seconds from now until ``name`` resolves (queried every 0.1 s).

    When it never answers within ``timeout_s``, returns ``timeout_s + 1``, so
    that any tolerance up to ``timeout_s`` fails: e.g. ``[0, 10]`` with
    ``timeout_s: 30`` means "DNS answers again within 10 s".
    """
    _check(1, min(float(timeout_s), 30.0) if isinstance(timeout_s, int | float) else timeout_s)
    host, port = _server(configuration, secrets, server)
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        outcome, _ = query_once(host, port, name, "A", 0.5)
        if outcome == "ok":
            return round(time.monotonic() - started, 3)
        time.sleep(0.1)
    return float(timeout_s) + 1.0


def outage_figures(points: list[tuple[float, bool]]) -> dict[str, Any]:
    """From (seconds, answered) samples: the success ratio, first failure, longest outage."""
    if not points:
        return {"success_ratio": None, "first_failure_s": None, "longest_outage_s": 0.0}
    first_failure = next((t for t, ok in points if not ok), None)
    longest = 0.0
    down_since: float | None = None
    for t, ok in points:
        if not ok and down_since is None:
            down_since = t
        if ok and down_since is not None:
            longest = max(longest, t - down_since)
            down_since = None
    if down_since is not None:
        longest = max(longest, points[-1][0] - down_since)
    return {
        "success_ratio": round(sum(1 for _, ok in points if ok) / len(points), 4),
        "first_failure_s": first_failure,
        "longest_outage_s": round(longest, 3),
    }


def dns_over_time(
    duration_s: float = 30.0,
    interval_s: float = 1.0,
    name: str = DEFAULT_NAMES[0],
    timeout_s: float = 0.5,
    server: str = "",
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> dict[str, Any]:
    """Query ``name`` every ``interval_s`` for ``duration_s`` seconds: data-plane DNS over time.

    Returns ``{"success_ratio", "first_failure_s", "longest_outage_s",
    "failures": {outcome: n}, "points": [[seconds, outcome], ...]}``, seconds
    counted from the probe's start. Changes nothing; takes ``duration_s``.
    """
    if isinstance(duration_s, bool) or not isinstance(duration_s, int | float):
        raise ActivityFailed(f"duration_s must be seconds, not {duration_s!r}")
    if not 1 <= duration_s <= 3600 or not 0.1 <= interval_s <= 60:
        raise ActivityFailed(
            f"duration_s must be 1-3600 and interval_s 0.1-60, not {duration_s}/{interval_s}"
        )
    _check(1, timeout_s)
    host, port = _server(configuration, secrets, server)
    started = time.monotonic()
    samples: list[tuple[float, bool]] = []
    raw: list[list[Any]] = []
    outcomes: Counter[str] = Counter()
    while time.monotonic() - started < duration_s:
        tick = time.monotonic()
        outcome, _ = query_once(host, port, name, "A", float(timeout_s))
        at = round(tick - started, 3)
        samples.append((at, outcome == "ok"))
        raw.append([at, outcome])
        outcomes[outcome] += 1
        time.sleep(max(0.0, interval_s - (time.monotonic() - tick)))
    return {
        **outage_figures(samples),
        "failures": {k: v for k, v in outcomes.items() if k != "ok"},
        "points": raw,
    }
