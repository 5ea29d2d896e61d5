"""Bringing up a simulated fleet: nodes registered Ready with the TTL annotation the
controller manager settles on, created with plain JSON POSTs, and counted once the kwok
controller holds every node's Lease and every node reads Ready."""

from __future__ import annotations

import datetime as dt
import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
from kubernetes import client

from blackstart.clusters.local import fleet_ready
from blackstart.clusters.local.bulk_create import CreateError, JsonPoster, post_all
from blackstart.clusters.local.fleet_ready import (
    FleetNotReady,
    ready_in_table,
    wait_leases_held,
)
from blackstart.clusters.local.kwok_nodes import TTL_ANNOTATION, node_manifest, node_ttl_seconds
from blackstart.clusters.spec import load_spec

# --- Node manifests -------------------------------------------------------------


def test_a_node_registers_ready_with_kwoks_conditions_so_kwok_writes_no_status_first() -> None:
    now = dt.datetime(2026, 12, 1, 9, 0, tzinfo=dt.UTC)
    manifest = node_manifest(load_spec().nodes()[0], fleet_size=60, now=now)
    status = manifest["status"]
    assert status["phase"] == "Running"
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["Ready"]["status"] == "True"
    assert conditions["Ready"]["reason"] == "KubeletReady"
    for pressure in ("MemoryPressure", "DiskPressure", "PIDPressure", "NetworkUnavailable"):
        assert conditions[pressure]["status"] == "False"
    assert {c["lastHeartbeatTime"] for c in status["conditions"]} == {"2026-12-01T09:00:00Z"}


def test_a_node_carries_the_os_and_arch_labels_a_kubelet_registers_beta_ones_included() -> None:
    labels = node_manifest(load_spec().nodes()[0])["metadata"]["labels"]
    assert labels["kubernetes.io/os"] == labels["beta.kubernetes.io/os"] == "linux"
    assert labels["kubernetes.io/arch"] == labels["beta.kubernetes.io/arch"] == "amd64"


@pytest.mark.parametrize(
    ("fleet_size", "ttl"),
    [(60, 0), (100, 0), (101, 15), (500, 15), (1000, 30), (1028, 60), (2000, 60), (10028, 300)],
)
def test_the_ttl_annotation_is_the_one_the_ttl_controller_settles_on(
    fleet_size: int, ttl: int
) -> None:
    assert node_ttl_seconds(fleet_size) == ttl
    node = load_spec().nodes()[0]
    assert node_manifest(node, fleet_size)["metadata"]["annotations"][TTL_ANNOTATION] == str(ttl)


# --- JSON POSTs ---------------------------------------------------------------


class _Recorder(http.server.BaseHTTPRequestHandler):
    """An API server stand-in: 201 for a new name, 409 for a known one, 422 for 'bad'."""

    seen: ClassVar[list[dict[str, Any]]] = []
    lock = threading.Lock()

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        name = body["metadata"]["name"]
        with self.lock:
            known = any(b["metadata"]["name"] == name for b in self.seen)
            if not known:
                self.seen.append(body)
        status = 422 if name == "bad" else 409 if known else 201
        reply = json.dumps({"kind": "Status", "code": status}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def api_server() -> Iterator[client.Configuration]:
    _Recorder.seen = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    cfg = client.Configuration()
    cfg.host = f"http://127.0.0.1:{server.server_address[1]}"
    yield cfg
    server.shutdown()
    server.server_close()


def test_every_node_is_posted_once_and_one_that_exists_is_not_counted(
    api_server: client.Configuration,
) -> None:
    names = [f"gpu-{i}" for i in range(50)]

    def body(name: str) -> dict[str, Any]:
        return {"metadata": {"name": name}}

    assert post_all(api_server, "/api/v1/nodes", names, body, workers=4) == 50
    assert sorted(b["metadata"]["name"] for b in _Recorder.seen) == sorted(names)
    assert post_all(api_server, "/api/v1/nodes", names[:5], body, workers=2) == 0


def test_a_refused_object_fails_naming_the_status_and_the_reply(
    api_server: client.Configuration,
) -> None:
    poster = JsonPoster(api_server)
    with pytest.raises(CreateError, match="422") as err:
        poster.post("/api/v1/nodes", {"metadata": {"name": "bad"}})
    assert err.value.status == 422
    poster.close()


# --- Waiting for the fleet ------------------------------------------------------


def test_ready_nodes_are_read_from_the_status_column_cordoned_ones_included() -> None:
    table = {
        "columnDefinitions": [{"name": "Name"}, {"name": "Status"}, {"name": "Roles"}],
        "rows": [
            {"cells": ["gpu-0", "Ready", "<none>"]},
            {"cells": ["standby-0", "Ready,SchedulingDisabled", "<none>"]},
            {"cells": ["gpu-1", "NotReady", "<none>"]},
            {"cells": ["gpu-2", "Unknown", "<none>"]},
            {"cells": ["gpu-3", "NotReady,SchedulingDisabled", "<none>"]},
        ],
    }
    assert ready_in_table(table) == {"gpu-0", "standby-0"}


def test_a_table_without_a_status_column_is_an_error_not_an_empty_fleet() -> None:
    with pytest.raises(ValueError, match="Status"):
        ready_in_table({"columnDefinitions": [{"name": "Name"}], "rows": []})


def _lease(name: str, holder: str | None = "kwok", rv: str = "1") -> dict[str, Any]:
    return {"metadata": {"name": name, "resourceVersion": rv}, "spec": {"holderIdentity": holder}}


def test_the_fleet_counts_once_every_node_lease_is_held_listed_or_watched(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    listed = {
        "metadata": {"resourceVersion": "10"},
        "items": [_lease("gpu-0"), _lease("gpu-1", None)],
    }
    watched: list[str] = []

    def watch(api: object, path: str, rv: str, window: int) -> Iterator[dict[str, Any]]:
        watched.append(rv)
        yield {"type": "ADDED", "object": _lease("someone-else", rv="11")}
        yield {"type": "MODIFIED", "object": _lease("gpu-1", rv="12")}

    monkeypatch.setattr(fleet_ready, "get_json", lambda *a, **k: listed)
    monkeypatch.setattr(fleet_ready, "watch_events", watch)
    shown: list[int] = []
    wait_leases_held(object(), ["gpu-0", "gpu-1"], deadline=1e12, progress=shown.append)  # type: ignore[arg-type]
    assert watched == ["10"]
    assert shown[0] == 1 and shown[-1] == 2


def test_a_watch_that_ends_in_an_error_lists_again(monkeypatch: pytest.MonkeyPatch) -> None:
    lists = [
        {"metadata": {"resourceVersion": "10"}, "items": []},
        {"metadata": {"resourceVersion": "20"}, "items": [_lease("gpu-0")]},
    ]

    def watch(api: object, path: str, rv: str, window: int) -> Iterator[dict[str, Any]]:
        yield {"type": "ERROR", "object": {"code": 410}}

    monkeypatch.setattr(fleet_ready, "get_json", lambda *a, **k: lists.pop(0))
    monkeypatch.setattr(fleet_ready, "watch_events", watch)
    wait_leases_held(object(), ["gpu-0"], deadline=1e12)  # type: ignore[arg-type]
    assert lists == []


def test_a_lease_never_held_fails_naming_how_far_the_fleet_got(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    listed = {"metadata": {"resourceVersion": "10"}, "items": [_lease("gpu-0")]}
    monkeypatch.setattr(fleet_ready, "get_json", lambda *a, **k: listed)
    with pytest.raises(FleetNotReady, match="only 1 of 2 nodes"):
        wait_leases_held(object(), ["gpu-0", "gpu-1"], deadline=0.0)  # type: ignore[arg-type]


def test_every_gpu_and_standby_node_gets_an_empty_kernel_log_and_cpu_nodes_none(
    tmp_path: Path,
) -> None:
    from blackstart.clusters.local.provider import make_kernel_logs

    nodes = load_spec().nodes()
    assert make_kernel_logs(tmp_path, nodes) == 52
    logs = {p.name for p in tmp_path.iterdir()}
    assert "gpu-0.log" in logs and "standby-3.log" in logs and "cpu-0.log" not in logs
    assert all(p.stat().st_size == 0 for p in tmp_path.iterdir())
