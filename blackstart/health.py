"""Small checks and waits that activities and controls share.

- :func:`apiserver_readyz`: ask an API server's ``/readyz`` through an ApiClient
  (so the kubeconfig's TLS client certificate is used), with a short timeout.
- :func:`wait_until`: poll a check until it holds or a deadline passes.
- :func:`wait_for`: the same, raising with what it waited for when time runs out.
- :func:`utc_now_iso`: timestamps as journals carry them (ISO 8601, UTC, ``Z``).
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from typing import TypeVar

from kubernetes import client

T = TypeVar("T")


def apiserver_readyz(api: client.ApiClient, timeout: float = 2.0) -> tuple[bool, str]:
    """(ready, detail) from ``GET /readyz``; any failure is "not ready" with its reason."""
    url = f"{api.configuration.host}/readyz"
    try:
        response = api.rest_client.request(  # type: ignore[no-untyped-call]
            "GET", url, _request_timeout=timeout
        )
        body = response.read()
        text = body.decode(errors="replace").strip() if isinstance(body, bytes) else str(body)
        return 200 <= response.status < 300, text[:200]
    except Exception as err:  # connection refused, timeout, TLS: all mean "not ready"
        return False, f"{type(err).__name__}: {str(err)[:200]}"


def wait_until(
    check: Callable[[], T],
    timeout: float,
    interval: float = 0.25,
    fatal: tuple[type[BaseException], ...] = (),
) -> tuple[T | None, float]:
    """Poll ``check()`` until it returns something truthy or ``timeout`` seconds pass.

    Returns the last value and the seconds waited. Exceptions from ``check``
    count as "not yet" (the API server may be slow, or just back), except
    those of the ``fatal`` types, which end the wait.
    """
    started = time.monotonic()
    deadline = started + timeout
    last: T | None = None
    while True:
        try:
            last = check()
        except fatal:
            raise
        except Exception:
            last = None
        if last:
            return last, time.monotonic() - started
        if time.monotonic() >= deadline:
            return last, time.monotonic() - started
        time.sleep(interval)


def wait_for(
    check: Callable[[], object],
    timeout: float,
    what: str,
    interval: float = 0.25,
    error: type[Exception] = TimeoutError,
) -> float:
    """Poll ``check()`` until it is truthy; return the seconds waited.

    Unlike :func:`wait_until`, an exception from ``check`` ends the wait (a check
    raises when waiting can no longer succeed), and running out of time raises
    ``error`` with a message naming ``what``.
    """
    started = time.monotonic()
    deadline = started + max(0.0, timeout)
    while True:
        if check():
            return time.monotonic() - started
        if time.monotonic() >= deadline:
            raise error(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def utc_now_iso() -> str:
    """Now as ``2026-11-24T08:30:00.123456Z``."""
    return to_iso(dt.datetime.now(dt.UTC))


def to_iso(moment: dt.datetime) -> str:
    """A timezone-aware datetime as ISO 8601 UTC with ``Z``."""
    return moment.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def parse_iso(text: str) -> dt.datetime:
    """Parse ISO 8601 (``Z`` or offset); naive times are taken as UTC."""
    moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment
