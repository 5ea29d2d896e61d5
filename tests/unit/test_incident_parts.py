"""The pure parts of the incident catalogue: the storm's agents against a loopback HTTP
server (gzip asked, bodies read and thrown away, live scaling, own source address), the
staged roll-out's stages, the firewall rule, the DNS snapshot and Corefile, outage figures.
"""

import gzip
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from chaoslib.exceptions import ActivityFailed
from kubernetes import client

from blackstart.actions import control_plane, dns_survival, rollout
from blackstart.actions import telemetry_storm as storm
from blackstart.actions._storm import StormSettings, TelemetryStorm
from blackstart.actions.network import block_rule
from blackstart.clusters.local.coredns import CorednsConfig, render_corefile
from blackstart.clusters.local.dns_snapshot import render_hosts, service_records
from blackstart.probes import dns as dns_probes
from blackstart.probes import lockout
from blackstart.probes.dns import outage_figures

BODY = b'{"kind":"PodList","items":[' + b'{"x":1},' * 2000 + b'{"x":1}]}'


class _Seen:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests: list[tuple[str, str, str]] = []  # (client address, path, accept-encoding)


@pytest.fixture
def apiserver() -> Iterator[tuple[str, _Seen]]:
    """A loopback stand-in for the API server: answers every GET with a gzipped list."""
    seen = _Seen()
    packed = gzip.compress(BODY)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            with seen.lock:
                seen.requests.append(
                    (self.client_address[0], self.path, self.headers.get("Accept-Encoding", ""))
                )
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Encoding", "gzip")
            self.send_header("Content-Length", str(len(packed)))
            self.end_headers()
            self.wfile.write(packed)

        def log_message(self, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", seen
    server.shutdown()
    server.server_close()


def _storm(host: str, clients: int, duration: float, threads: int = 8) -> TelemetryStorm:
    cfg = client.Configuration()
    cfg.host = host
    settings = StormSettings(
        clients=clients,
        rate_per_client=5.0,
        duration_s=duration,
        resources=("pods",),
        limit=None,
        threads=min(threads, clients),
        synchronized=True,
        request_timeout_s=5.0,
    )
    return TelemetryStorm(client.ApiClient(cfg), settings, "unit", max_threads=threads)


def test_agents_ask_for_gzip_and_count_the_compressed_bytes_they_throw_away(
    apiserver: tuple[str, _Seen],
) -> None:
    host, seen = apiserver
    storm = _storm(host, clients=2, duration=1.0)
    storm.start()
    assert storm.join(10.0)
    report = storm.report()
    assert report["ok"] == report["requests"] > 0
    assert report["bytes_read"] == report["requests"] * len(gzip.compress(BODY))
    assert report["bytes_read"] < report["requests"] * len(BODY)  # never decompressed
    assert all(enc == "gzip" for _, _, enc in seen.requests)
    assert all(path == "/api/v1/pods" for _, path, _ in seen.requests)


def test_agents_connect_from_their_own_loopback_address(apiserver: tuple[str, _Seen]) -> None:
    host, seen = apiserver
    storm = _storm(host, clients=1, duration=0.5)
    storm.start()
    assert storm.join(10.0)
    assert {address for address, _, _ in seen.requests} == {"127.0.0.2"}


def test_a_storm_grows_and_shrinks_while_it_runs(apiserver: tuple[str, _Seen]) -> None:
    host, _ = apiserver
    storm = _storm(host, clients=1, duration=30.0, threads=6)
    storm.start()
    try:
        storm.set_clients(6)
        assert storm.report()["clients"] == 6
        assert len(storm.threads) == 6
        before = storm.report()["requests"]
        deadline = time.monotonic() + 10
        while storm.report()["requests"] < before + 20 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert storm.report()["requests"] >= before + 20  # six agents at 5/s
        storm.set_clients(1)
        assert storm.report()["clients"] == 1
        assert storm.running
    finally:
        storm.stop(10.0)
    assert not storm.running
    assert storm.report()["state"] == "stopped"


@pytest.mark.parametrize(
    ("nodes", "percent", "agents"),
    [(60, 1, 1), (60, 10, 6), (60, 50, 30), (60, 100, 60), (3, 1, 1), (1000, 1, 10)],
)
def test_a_stage_runs_the_agent_on_its_share_of_the_nodes_at_least_one(
    nodes: int, percent: float, agents: int
) -> None:
    assert rollout.stage_clients(nodes, percent) == agents


@pytest.mark.parametrize(
    ("stages", "word"), [([], "list"), ([10, 1], "grow"), ([0, 50], "stage"), ([1, 150], "stage")]
)
def test_stages_must_be_growing_percentages(stages: list[float], word: str) -> None:
    with pytest.raises(ActivityFailed, match=word):
        rollout.roll_out_telemetry_service(stages=stages)


def test_the_telemetry_service_is_a_daemonset_on_every_node() -> None:
    body = rollout.daemonset_body()
    assert body["kind"] == "DaemonSet"
    assert body["metadata"]["namespace"] == "blackstart-telemetry"
    assert body["spec"]["template"]["spec"]["tolerations"] == [{"operator": "Exists"}]


def test_the_firewall_rule_resets_only_the_agents_packets_to_the_api_server() -> None:
    rule = block_rule("incident", "https://127.0.0.1:32766")
    text = " ".join(rule)
    assert text.startswith("OUTPUT -o lo -s 127.0.0.2 -d 127.0.0.1 -p tcp --dport 32766")
    assert "--reject-with tcp-reset" in text
    assert "blackstart:incident:block-telemetry" in rule


def _svc(ns: str, name: str, ip: str | None, kind: str = "ClusterIP") -> Any:
    return SimpleNamespace(
        metadata=SimpleNamespace(namespace=ns, name=name),
        spec=SimpleNamespace(cluster_ips=[ip] if ip else None, cluster_ip=ip or "None", type=kind),
    )


def test_the_snapshot_holds_cluster_ips_and_ready_endpoints_of_headless_services() -> None:
    services = [_svc("default", "kubernetes", "10.96.0.1"), _svc("db", "pg", None)]
    ready = SimpleNamespace(addresses=["10.0.0.7"], conditions=SimpleNamespace(ready=True))
    gone = SimpleNamespace(addresses=["10.0.0.8"], conditions=SimpleNamespace(ready=False))
    slices = [
        SimpleNamespace(
            metadata=SimpleNamespace(namespace="db", labels={"kubernetes.io/service-name": "pg"}),
            endpoints=[ready, gone],
        )
    ]
    records = service_records(services, slices)
    assert records == [
        ("10.96.0.1", "kubernetes.default.svc.cluster.local"),
        ("10.0.0.7", "pg.db.svc.cluster.local"),
    ]
    assert "10.96.0.1 kubernetes.default.svc.cluster.local\n" in render_hosts(records)


def test_the_mitigated_corefile_serves_stale_and_answers_from_the_snapshot_first() -> None:
    cfg = CorednsConfig(Path("/k"), 53, 1, 2, 3, serve_stale_s=3600, snapshot=Path("/s.hosts"))
    text = render_corefile(cfg)
    assert "hosts /s.hosts cluster.local {" in text
    assert text.index("hosts /s.hosts") < text.index("kubernetes cluster.local")
    assert "fallthrough\n    }" in text
    assert "cache 30 {\n        serve_stale 3600s\n    }" in text
    assert "startup_timeout 1s" in text  # a restart serves the snapshot after 1 s, not 5
    plain = render_corefile(CorednsConfig(Path("/k"), 53, 1, 2, 3))
    assert "hosts" not in plain and "serve_stale" not in plain and "startup" not in plain


def test_outage_figures_find_the_first_failure_and_the_longest_outage() -> None:
    points = [(0.0, True), (1.0, True), (2.0, False), (3.0, False), (4.0, True), (5.0, False)]
    figures = outage_figures(points)
    assert figures["first_failure_s"] == 2.0
    assert figures["longest_outage_s"] == 2.0
    assert figures["success_ratio"] == 0.5
    assert outage_figures([])["success_ratio"] is None


@pytest.mark.parametrize(
    ("call", "words"),
    [
        (lambda: rollout.remove_telemetry_service(timeout_s=0), ("timeout_s", "1 to 3600")),
        (lambda: rollout.remove_telemetry_service(attempt_timeout_s=100), ("attempt_timeout_s",)),
        (lambda: rollout.roll_out_telemetry_service(hold_s=0), ("hold_s", "1 to 300")),
        (lambda: rollout.roll_out_telemetry_service(ramp_factor=1), ("ramp_factor", "1.1 to 100")),
        (lambda: control_plane.grow_control_plane(cpus=0), ("cpus", "0.1 to 256")),
        (lambda: control_plane.grow_control_plane(memory="lots"), ("memory", "2Gi")),
        (lambda: dns_survival.enable_dns_survival(serve_stale_s=0, snapshot=False),
         ("nothing to enable",)),
        (lambda: dns_survival.enable_dns_survival(enabled="yes"), ("enabled", "true or false")),
        (lambda: storm.scale_telemetry_storm(clients=0), ("clients", "1 to 5000")),
        (lambda: dns_probes.dns_over_time(duration_s=0), ("duration_s",)),
        (lambda: lockout.seconds_until_recovered(max_p99_s=0), ("max_p99_s",)),
    ],
)  # fmt: skip
def test_the_incident_activities_refuse_bad_arguments_naming_them(
    call: Any, words: tuple[str, ...]
) -> None:
    with pytest.raises(ActivityFailed) as caught:
        call()
    for word in words:
        assert word in str(caught.value)


def test_disabled_dns_mitigation_does_nothing_and_needs_no_cluster() -> None:
    assert dns_survival.enable_dns_survival(enabled=False) == {"enabled": False}


def test_the_storms_client_cpu_is_counted_while_it_runs(apiserver: tuple[str, _Seen]) -> None:
    host, _ = apiserver
    storm = _storm(host, clients=4, duration=30.0, threads=4)
    storm.start()
    try:
        deadline = time.monotonic() + 10
        while storm.report()["requests"] < 40 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert storm.running
        assert storm.report()["client_cpu_s"] > 0
    finally:
        storm.stop(10.0)


@pytest.mark.parametrize(
    ("running", "target", "steps"),
    [
        (0, 1, [1]),
        (1, 6, [2, 4, 6]),
        (6, 30, [12, 24, 30]),  # the 50 % stage of 60 nodes: no jump from 6 to 30 at once
        (30, 60, [60]),
        (6, 6, [6]),
        (0, 60, [1, 2, 4, 8, 16, 32, 60]),
    ],
)
def test_a_stage_brings_its_agents_up_at_most_doubling_each_step(
    running: int, target: int, steps: list[int]
) -> None:
    assert rollout.ramp_steps(running, target) == steps


def test_a_ramp_factor_of_one_and_a_half_takes_smaller_steps() -> None:
    assert rollout.ramp_steps(6, 30, 1.5) == [9, 14, 21, 30]
