"""The agent's API requests: paced by one token bucket, errors sorted into what to do next."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any

from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from blackstart.rescue.agent.metrics import AgentMetrics
from blackstart.rescue.pacing import TokenBucket, is_retryable_status, retry_after_seconds

__all__ = ["AlreadyExists", "ApiRetry", "NotFound", "PacedApi", "RequestHook", "Stopped"]

RequestHook = Callable[[str, str, str], None]
"""Called after every API request with (verb, resource, HTTP status or "error")."""


class ApiRetry(Exception):
    """A request failed; ``status`` None for no response. Carries the server's Retry-After."""

    def __init__(self, what: str, status: int | None, retry_after: float | None = None) -> None:
        super().__init__(what)
        self.status = status
        self.retry_after = retry_after

    @property
    def retryable(self) -> bool:
        """429, 5xx or no response: the server is struggling, back off before the next request."""
        return is_retryable_status(self.status)


class NotFound(Exception):
    """404: the object (or its namespace) does not exist."""


class AlreadyExists(Exception):
    """409: the object is there already."""


class Stopped(Exception):
    """The agent is stopping."""


class PacedApi:
    """Runs API calls at most ``max_rps`` per second; counts each in ``metrics``."""

    def __init__(
        self,
        max_rps: float,
        stop: threading.Event,
        metrics: AgentMetrics,
        on_request: RequestHook | None = None,
    ) -> None:
        self._bucket = TokenBucket(max_rps)
        self._stop = stop
        self._metrics = metrics
        self._on_request = on_request

    def request(self, verb: str, resource: str, call: Callable[[], Any]) -> Any:
        """One paced API request; returns the response object, raises the errors above."""
        if not self._bucket.take(self._stop):
            raise Stopped()
        try:
            response = call()
        except ApiException as err:
            self._count(verb, resource, str(err.status))
            if err.status == 404:
                raise NotFound() from err
            if err.status == 409:
                raise AlreadyExists() from err
            raise ApiRetry(
                f"{verb} {resource}: {err.status} {err.reason}",
                err.status,
                retry_after_seconds(err.headers),
            ) from err
        except (HTTPError, OSError) as err:
            self._count(verb, resource, "error")
            raise ApiRetry(f"{verb} {resource}: {type(err).__name__}: {err}", None) from err
        # *_with_http_info answers (data, status, headers); newer clients an ApiResponse;
        # with _preload_content=False the raw response, whose JSON is decoded here as plain
        # dicts (the client's model classes cost milliseconds per Node)
        if isinstance(response, tuple):
            data, status = response[0], response[1]
        else:
            data = getattr(response, "data", response)
            status = getattr(response, "status_code", None) or getattr(response, "status", 0)
        self._count(verb, resource, str(status or 200))
        if isinstance(data, bytes | bytearray):
            return json.loads(data) if data else {}
        return data

    def _count(self, verb: str, resource: str, code: str) -> None:
        self._metrics.api_requests.labels(verb=verb, resource=resource, code=code).inc()
        if self._on_request is not None:
            self._on_request(verb, resource, code)
