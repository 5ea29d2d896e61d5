"""The controller's own Kubernetes calls: rate-limited, counted, retried with backoff.

kopf watches (nodes, policies, plans); every other request the controller makes
goes through :class:`KubeApi`:

- a token bucket bounds the request rate (``qps``, ``burst``), as client-go's does;
  requests go out by priority: :data:`CONTAIN` (the cordon a new plan makes before
  anything else: the action that stops a failing GPU taking new work), then
  :data:`ACT` (what moves a plan forward: create the plan, evict, and the status
  writes a step must make before it acts), then :data:`RECORD` (status written after
  a step), then :data:`REPORT` (Events, clean-ups); so a burst of Xids cordons every
  node first and records and reports after;
- every request is counted by verb and HTTP code (the
  ``..._api_requests_total`` metric);
- 429, 5xx and connection errors are retried with exponential backoff and full
  jitter for a bounded time, except where the caller handles them itself (an
  eviction refused by a PodDisruptionBudget is a 429 the drain retries on its own
  schedule);
- objects come back as plain dicts, the shape kopf hands to handlers.

The client underneath is the official synchronous one, run in worker threads.
"""

from __future__ import annotations

import asyncio
import functools
import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from blackstart.rescue.controller.metrics import ControllerMetrics
from blackstart.rescue.crd.plans import PLURAL
from blackstart.rescue.crd.policy import GROUP, VERSION
from blackstart.rescue.pacing import RateLimiter, backoff_delay, is_retryable_status

__all__ = [
    "ACT",
    "CONTAIN",
    "RECORD",
    "REPORT",
    "KubeApi",
    "RateLimiter",
    "is_denied",
    "is_retryable",
]

CONTAIN, ACT, RECORD, REPORT = 0, 1, 2, 3
"""Request priorities, most urgent first."""

_MERGE = "application/merge-patch+json"
_JSON_PATCH = "application/json-patch+json"
_TIMEOUT = (5.0, 30.0)  # connect, read


def is_retryable(err: BaseException) -> bool:
    """True for errors worth retrying: 429, 5xx, and no response at all."""
    if isinstance(err, ApiException):
        return err.status == 0 or is_retryable_status(err.status)
    return isinstance(err, OSError | TimeoutError) or type(err).__module__.startswith("urllib3")


def is_denied(err: BaseException) -> bool:
    """True for 401 and 403: wrong permissions, or an API server whose authorizer is syncing."""
    return isinstance(err, ApiException) and err.status in (401, 403)


def _status_code(err: BaseException) -> str:
    if isinstance(err, ApiException) and err.status:
        return str(err.status)
    return "error"


class KubeApi:
    """Rate-limited, counted calls to the API server for the controller."""

    def __init__(
        self,
        api_client: client.ApiClient,
        metrics: ControllerMetrics,
        qps: float = 20.0,
        burst: int = 40,
        retry_for: float = 30.0,
    ) -> None:
        self.api_client = api_client
        self.core = client.CoreV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)
        self.metrics = metrics
        self.limiter = RateLimiter(qps, burst)
        self.retry_for = retry_for
        # the requests' own threads: asyncio's default executor has as few as 5 (one CPU
        # plus four), and a burst of cordons would queue there behind plan records
        self._threads = ThreadPoolExecutor(
            max_workers=min(32, max(8, api_client.configuration.connection_pool_maxsize or 8)),
            thread_name_prefix="kube-api",
        )

    async def call(
        self,
        verb: str,
        fn: Callable[..., Any],
        *args: Any,
        priority: int = ACT,
        retry: bool = True,
        **kwargs: Any,
    ) -> Any:
        """Call ``fn(*args, **kwargs)`` in a thread, rate-limited and counted as ``verb``.

        Returns the decoded JSON body. Raises :class:`ApiException` (or a
        connection error) once retrying is over or for errors not worth retrying.
        """
        deadline = time.monotonic() + (self.retry_for if retry else 0.0)
        attempt = 0
        while True:
            await self.limiter.acquire(priority)
            try:
                response = await asyncio.get_running_loop().run_in_executor(
                    self._threads,
                    functools.partial(
                        fn, *args, _preload_content=False, _request_timeout=_TIMEOUT, **kwargs
                    ),
                )
            except Exception as err:
                self.metrics.api_requests.labels(verb, _status_code(err)).inc()
                delay = backoff_delay(attempt, base=0.2, cap=5.0)
                if not retry or not is_retryable(err) or time.monotonic() + delay > deadline:
                    raise
                await asyncio.sleep(delay)
                attempt += 1
                continue
            self.metrics.api_requests.labels(verb, str(response.status)).inc()
            data = response.data
            return json.loads(data) if data else {}

    # --- nodes ------------------------------------------------------------------------------

    async def get_node(self, name: str, priority: int = ACT) -> dict[str, Any]:
        result: dict[str, Any] = await self.call(
            "get", self.core.read_node, name, priority=priority
        )
        return result

    async def patch_node(
        self, name: str, patch: dict[str, Any], priority: int = ACT
    ) -> dict[str, Any]:
        """JSON merge patch of a Node (cordon, labels, annotations)."""
        result: dict[str, Any] = await self.call(
            "patch", self.core.patch_node, name, patch, priority=priority, _content_type=_MERGE
        )
        return result

    async def json_patch_node(self, name: str, operations: list[dict[str, Any]]) -> dict[str, Any]:
        """JSON patch (RFC 6902) of a Node: ``test`` operations make it conditional."""
        result: dict[str, Any] = await self.call(
            "patch", self.core.patch_node, name, operations, _content_type=_JSON_PATCH
        )
        return result

    async def patch_node_status(self, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        """JSON merge patch of a Node's status subresource."""
        result: dict[str, Any] = await self.call(
            "patch", self.core.patch_node_status, name, patch, _content_type=_MERGE
        )
        return result

    async def list_nodes(self, chunk: int = 500) -> list[dict[str, Any]]:
        """Every Node, in chunks (used once, at start-up, before the watch takes over)."""
        items: list[dict[str, Any]] = []
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"limit": chunk}
            if token:
                kwargs["_continue"] = token
            page = await self.call("list", self.core.list_node, **kwargs)
            items.extend(page.get("items") or [])
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                return items

    # --- pods -------------------------------------------------------------------------------

    async def list_pods_on_node(
        self, node: str, not_older_than: str | None = None
    ) -> tuple[list[dict[str, Any]], str]:
        """The pods bound to ``node`` and the list's resourceVersion.

        Field-selected on ``spec.nodeName`` and served from the API server's watch cache
        (``resourceVersion`` "0", or not older than ``not_older_than``, the version a
        previous list returned), never a quorum read of every pod from etcd.
        """
        kwargs: dict[str, Any] = {"field_selector": f"spec.nodeName={node}"}
        if not_older_than:
            kwargs.update(resource_version=not_older_than, resource_version_match="NotOlderThan")
        else:
            kwargs["resource_version"] = "0"
        page = await self.call("list", self.core.list_pod_for_all_namespaces, **kwargs)
        items: list[dict[str, Any]] = page.get("items") or []
        return items, str((page.get("metadata") or {}).get("resourceVersion") or "")

    async def evict_pod(self, namespace: str, name: str, grace_seconds: int) -> None:
        """Evict one pod through the Eviction API. A 429 (PodDisruptionBudget) is raised as is."""
        body = client.V1Eviction(
            api_version="policy/v1",
            kind="Eviction",
            metadata=client.V1ObjectMeta(name=name, namespace=namespace),
            delete_options=client.V1DeleteOptions(grace_period_seconds=grace_seconds),
        )
        await self.call(
            "create",
            self.core.create_namespaced_pod_eviction,
            name,
            namespace,
            body,
            retry=False,
        )

    async def create_pod(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        """Create a pod (the validation check); a 409 (it exists) is raised as is."""
        result: dict[str, Any] = await self.call(
            "create", self.core.create_namespaced_pod, namespace, body
        )
        return result

    async def get_pod(self, namespace: str, name: str) -> dict[str, Any]:
        result: dict[str, Any] = await self.call(
            "get", self.core.read_namespaced_pod, name, namespace
        )
        return result

    # --- events -----------------------------------------------------------------------------

    async def create_event(self, namespace: str, body: dict[str, Any]) -> None:
        """Post an Event (low priority: it reports, it does not move a plan)."""
        await self.call(
            "create",
            self.core.create_namespaced_event,
            namespace,
            body,
            priority=REPORT,
            retry=False,
        )

    # --- rescue.blackstart.dev --------------------------------------------------------------

    async def list_custom(self, plural: str, chunk: int = 500) -> list[dict[str, Any]]:
        """Every object of a cluster-scoped rescue.blackstart.dev kind (start-up only)."""
        items: list[dict[str, Any]] = []
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"limit": chunk}
            if token:
                kwargs["_continue"] = token
            page = await self.call(
                "list", self.custom.list_cluster_custom_object, GROUP, VERSION, plural, **kwargs
            )
            items.extend(page.get("items") or [])
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                return items

    async def create_plan(self, body: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = await self.call(
            "create", self.custom.create_cluster_custom_object, GROUP, VERSION, PLURAL, body
        )
        return result

    async def get_plan(self, name: str) -> dict[str, Any]:
        result: dict[str, Any] = await self.call(
            "get", self.custom.get_cluster_custom_object, GROUP, VERSION, PLURAL, name
        )
        return result

    async def patch_plan_status(
        self, name: str, status: dict[str, Any], priority: int = RECORD
    ) -> dict[str, Any]:
        """Write a plan's status (merge patch of the status subresource).

        ``priority`` is :data:`ACT` for a write a step must make before it acts.
        """
        result: dict[str, Any] = await self.call(
            "patch",
            self.custom.patch_cluster_custom_object_status,
            GROUP,
            VERSION,
            PLURAL,
            name,
            {"status": status},
            priority=priority,
            _content_type=_MERGE,
        )
        return result

    async def json_patch_plan(self, name: str, operations: list[dict[str, Any]]) -> dict[str, Any]:
        """JSON patch of a plan's metadata (its finalizer)."""
        result: dict[str, Any] = await self.call(
            "patch",
            self.custom.patch_cluster_custom_object,
            GROUP,
            VERSION,
            PLURAL,
            name,
            operations,
            _content_type=_JSON_PATCH,
        )
        return result

    async def delete_plan(self, name: str) -> None:
        await self.call(
            "delete",
            self.custom.delete_cluster_custom_object,
            GROUP,
            VERSION,
            PLURAL,
            name,
            priority=REPORT,
        )
