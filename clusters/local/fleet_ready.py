"""Waiting for a simulated fleet: every node Ready and heartbeating through the kwok controller.

A node counts once the kwok controller holds its Lease (it renews it from then
on, and plays the node's stages only while it holds it) and the node reports
Ready. Leases are followed with one watch (an event per lease, a few hundred
bytes); nodes are read once every lease is held, as the API server's table
of nodes (a name and a status per row, as ``kubectl get nodes`` shows them:
about 40 times smaller than the Node objects). Replies are read as JSON, not
into models: at 10,000 nodes a list read into models every second cost more
CPU than the API server spent making the fleet.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Collection, Iterator
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from kubernetes.watch.watch import iter_resp_lines

NODE_LEASE_NAMESPACE = "kube-node-lease"
LEASES_PATH = f"/apis/coordination.k8s.io/v1/namespaces/{NODE_LEASE_NAMESPACE}/leases"
NODES_PATH = "/api/v1/nodes"
# the server-side table of a list, rows without their objects
TABLE_ACCEPT = "application/json;as=Table;v=v1;g=meta.k8s.io, application/json"
# how long one watch request may stay open; a new one starts where it ended
WATCH_WINDOW_S = 10
# progress at most this often
PROGRESS_EVERY_S = 1.0


class FleetNotReady(RuntimeError):
    """The fleet was not ready by the deadline; the message says how far it got."""


def get_json(
    api: client.ApiClient,
    path: str,
    query: dict[str, str] | None = None,
    timeout: float | None = None,
    accept: str = "application/json",
) -> dict[str, Any]:
    """GET ``path`` as JSON (a dict); raises ApiException on an error status."""
    request = api.param_serialize(
        "GET",
        path,
        query_params=list((query or {}).items()),
        header_params={"Accept": accept},
        auth_settings=["BearerToken"],
    )
    response = api.call_api(*request, _request_timeout=timeout)
    data = response.read()  # type: ignore[no-untyped-call]
    if not 200 <= response.status <= 299:
        raise ApiException(http_resp=response)
    parsed: dict[str, Any] = json.loads(data)
    return parsed


def watch_events(
    api: client.ApiClient, path: str, resource_version: str, window_s: int
) -> Iterator[dict[str, Any]]:
    """The events of one watch on ``path`` from ``resource_version``, as JSON dicts."""
    query = [
        ("watch", "true"),
        ("resourceVersion", resource_version),
        ("allowWatchBookmarks", "true"),
        ("timeoutSeconds", str(window_s)),
    ]
    request = api.param_serialize(
        "GET",
        path,
        query_params=query,
        header_params={"Accept": "application/json"},
        auth_settings=["BearerToken"],
    )
    response = api.call_api(*request, _request_timeout=(10, window_s + 10))
    raw = response.response
    try:
        if not 200 <= response.status <= 299:
            response.read()  # type: ignore[no-untyped-call]
            raise ApiException(http_resp=response)
        for line in iter_resp_lines(raw):  # type: ignore[no-untyped-call]
            if line:
                yield json.loads(line)
    finally:
        raw.release_conn()


def lease_held(lease: dict[str, Any]) -> bool:
    """True when some holder (the kwok controller) holds the lease."""
    return bool((lease.get("spec") or {}).get("holderIdentity"))


def ready_in_table(table: dict[str, Any]) -> set[str]:
    """The names of the Ready nodes in a table of nodes (``kubectl get nodes``' columns).

    The Status column reads ``Ready``, ``NotReady`` or ``Unknown``, with
    ``,SchedulingDisabled`` after it on a cordoned node.
    """
    columns = [str(c.get("name", "")).lower() for c in table.get("columnDefinitions") or []]
    if "name" not in columns or "status" not in columns:
        raise ValueError(f"a table of nodes without Name and Status columns: {columns}")
    name_at, status_at = columns.index("name"), columns.index("status")
    ready = set()
    for row in table.get("rows") or []:
        cells = row.get("cells") or []
        if len(cells) > max(name_at, status_at) and "Ready" in str(cells[status_at]).split(","):
            ready.add(str(cells[name_at]))
    return ready


def wait_leases_held(
    api: client.ApiClient,
    names: Collection[str],
    deadline: float,
    progress: Callable[[int], None] | None = None,
) -> None:
    """Return once every node in ``names`` has a held Lease; FleetNotReady at ``deadline``."""
    want = set(names)
    held: set[str] = set()
    resource_version = ""
    shown, last_shown = -1, 0.0

    def show() -> None:
        nonlocal shown, last_shown
        if progress is not None and len(held) != shown:
            now = time.monotonic()
            if now - last_shown >= PROGRESS_EVERY_S or len(held) >= len(want):
                progress(len(held))
                shown, last_shown = len(held), now

    while True:
        if not resource_version:
            listed = get_json(api, LEASES_PATH, timeout=60)
            held = {
                lease["metadata"]["name"]
                for lease in listed.get("items") or []
                if lease_held(lease) and lease["metadata"]["name"] in want
            }
            resource_version = str(listed["metadata"]["resourceVersion"])
        show()
        if held >= want:
            return
        if time.monotonic() >= deadline:
            break
        window = max(1, min(WATCH_WINDOW_S, int(deadline - time.monotonic())))
        try:
            for event in watch_events(api, LEASES_PATH, resource_version, window):
                kind, obj = event.get("type"), event.get("object") or {}
                if kind == "ERROR":  # e.g. 410 Gone: the version is too old; list again
                    resource_version = ""
                    break
                meta = obj.get("metadata") or {}
                resource_version = str(meta.get("resourceVersion") or resource_version)
                name = meta.get("name")
                if kind == "BOOKMARK" or name not in want:
                    continue
                if kind != "DELETED" and lease_held(obj):
                    held.add(name)
                else:
                    held.discard(name)
                show()
                if held >= want:
                    return
        except ApiException as err:
            if err.status == 410:
                resource_version = ""
                continue
            raise
    raise FleetNotReady(f"only {len(held)} of {len(want)} nodes had a held Lease in time")


def wait_nodes_ready(
    api: client.ApiClient,
    names: Collection[str],
    deadline: float,
    progress: Callable[[int], None] | None = None,
    poll_s: float = 0.5,
) -> None:
    """Return once every node in ``names`` reports Ready; raise FleetNotReady at ``deadline``."""
    want = set(names)
    last = -1
    while True:
        table = get_json(
            api, NODES_PATH, {"includeObject": "None"}, timeout=120, accept=TABLE_ACCEPT
        )
        ready = ready_in_table(table) & want
        if progress is not None and len(ready) != last:
            progress(len(ready))
            last = len(ready)
        if ready >= want:
            return
        if time.monotonic() + poll_s >= deadline:
            raise FleetNotReady(f"only {len(ready)} of {len(want)} nodes became Ready in time")
        time.sleep(poll_s)
