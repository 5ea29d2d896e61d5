"""The decision API (rescue/decision_api.py): request validation and the exact response bodies.

The HTTP side runs on a real aiohttp server on loopback; the controller behind it is
a small stand-in that records orders (what it does with them is tested end to end).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import ssl
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from blackstart.clusters.net import free_port
from blackstart.rescue.controller.decision_api import (
    OrderRefused,
    RescueOrder,
    TokenFile,
    build_app,
    parse_order,
    server_tls,
    start_decision_api,
)
from blackstart.rescue.controller.metrics import ControllerMetrics
from blackstart.rescue.crd.plans import api_plan_name
from blackstart.rescue.crd.policy import PRECONDITION_FAILURE, check_preconditions

NODES = {"gpu-3", "gpu-4"}
TOKEN = "s3cret-token"
VENDOR_EXAMPLE = {
    "nodeName": "gpu-3",
    "xid": 62,
    "escalateTime": "2036-11-24T09:00:00Z",  # the vendor's example, moved to a time to come
    "actions": [
        {"name": "cordon", "waittime": ""},
        {"name": "drain", "waittime": "10min"},
        {"name": "reboot", "waittime": "1day3h5min"},
    ],
}


def order(body: object) -> RescueOrder:
    return parse_order(body, NODES.__contains__)


def refused(body: object) -> str:
    with pytest.raises(OrderRefused) as caught:
        order(body)
    assert caught.value.status == 400
    return caught.value.message


def test_the_vendors_example_is_accepted() -> None:
    parsed = order(VENDOR_EXAMPLE)
    assert parsed.node == "gpu-3"
    assert parsed.xid == 62
    assert [a.name for a in parsed.actions] == ["cordon", "drain", "reboot"]
    assert parsed.actions[1].waittime == dt.timedelta(minutes=10)
    assert parsed.actions[2].waittime == dt.timedelta(days=1, hours=3, minutes=5)
    assert parsed.escalate_time == "2036-11-24T09:00:00Z"


def with_(**changes: Any) -> dict[str, Any]:
    return {**VENDOR_EXAMPLE, **changes}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ([], "Parameter error:the body must be a JSON object"),
        (
            with_(nodeName=""),
            "Parameter error:nodeName is required: the name of the node to act on",
        ),
        (
            with_(nodeName="gpu-99"),
            "Parameter error:nodeName 'gpu-99' is not a node of this cluster",
        ),
        (with_(xid="sixty"), "Parameter error:xid must be an Xid code from 0 to 999, got 'sixty'"),
        (with_(actions=[]), "Parameter error:actions must be a non-empty list of {name, waittime}"),
        (
            with_(actions=[{"name": "format-disk"}]),
            "Parameter error:actions[0].name: unknown action 'format-disk'; the actions are "
            "cordon, drain, reboot, enableWarmStandby, unCordon",
        ),
        (
            with_(actions=[{"name": "cordon"}, {"name": "cordon"}]),
            "Parameter error:actions: cordon is given more than once",
        ),
        (
            with_(escalateTime="soon"),
            "Parameter error:escalateTime 'soon' is not an RFC 3339 time such as "
            "2026-11-24T09:00:00Z",
        ),
    ],
)
def test_malformed_orders_get_a_parameter_error_naming_the_field(
    body: object, message: str
) -> None:
    assert refused(body) == message


def test_a_malformed_waittime_is_a_parameter_error_with_examples() -> None:
    message = refused(with_(actions=[{"name": "drain", "waittime": "ten minutes"}]))
    assert message.startswith("Parameter error:actions[0].waittime: waittime 'ten minutes'")
    assert "1day3h5min" in message


def test_a_waittime_on_cordon_is_a_parameter_error() -> None:
    message = refused(with_(actions=[{"name": "cordon", "waittime": "5min"}]))
    assert message.startswith("Parameter error:actions[0].")
    assert "only allowed on the drain and reboot actions" in message


def test_the_precondition_message_is_the_vendors() -> None:
    parsed = order(with_(actions=[{"name": "enableWarmStandby", "waittime": ""}]))
    failure = check_preconditions(parsed.actions)
    assert failure is not None
    assert failure.startswith(PRECONDITION_FAILURE + " enableWarmStandby")


class Backend:
    """Records orders; refuses as told."""

    def __init__(self) -> None:
        self.orders: list[RescueOrder] = []
        self.refuse: OrderRefused | None = None
        self.listed_for: list[str] = []  # the nodeName of each list request it was asked

    def node_exists(self, name: str) -> bool:
        return name in NODES

    async def order(self, order: RescueOrder, request_key: str) -> str:
        if self.refuse is not None:
            raise self.refuse
        self.orders.append(order)
        return f"{order.node}-api-1"

    def plan_summary(self, name: str) -> dict[str, Any] | None:
        return {"name": name, "status": {"phase": "Cordoned"}} if name == "gpu-3-api-1" else None

    def plan_summaries(self, node: str) -> list[dict[str, Any]]:
        self.listed_for.append(node)
        return [{"name": "gpu-3-api-1", "status": {"phase": "Cordoned"}}] if node == "gpu-3" else []


def serve(
    test: Callable[[TestClient[Any, Any], Backend, ControllerMetrics], Awaitable[None]],
) -> None:
    async def main() -> None:
        backend = Backend()
        metrics = ControllerMetrics()
        client = TestClient(TestServer(build_app(backend, TOKEN, metrics), host="127.0.0.1"))
        await client.start_server()
        try:
            await test(client, backend, metrics)
        finally:
            await client.close()

    asyncio.run(main())


AUTH = {"Authorization": f"Bearer {TOKEN}"}


def test_http_success_is_exactly_the_vendors_body_and_names_the_plan() -> None:
    async def check(client: TestClient[Any, Any], backend: Backend, m: ControllerMetrics) -> None:
        response = await client.post("/v1/rescue-actions", json=VENDOR_EXAMPLE, headers=AUTH)
        assert response.status == 200
        assert await response.json() == {"code": "Success", "message": "Success"}
        assert response.headers["Location"] == "/v1/rescue-plans/gpu-3-api-1"
        assert backend.orders[0].node == "gpu-3"
        got = await client.get("/v1/rescue-plans/gpu-3-api-1", headers=AUTH)
        assert (await got.json())["plan"]["status"]["phase"] == "Cordoned"
        counted = m.registry.get_sample_value(
            "blackstart_rescue_controller_decision_api_requests_total",
            {"method": "POST", "code": "200"},
        )
        assert counted == 1.0

    serve(check)


@pytest.mark.parametrize(
    ("refusal", "status", "body"),
    [
        (
            OrderRefused("Exceed the maximum plans limit 4", 429),
            429,
            {"code": "Error", "message": "Exceed the maximum plans limit 4"},
        ),
        (
            OrderRefused("Failures to meet preconditions enableWarmStandby (x)", 422),
            422,
            {"code": "Error", "message": "Failures to meet preconditions enableWarmStandby (x)"},
        ),
    ],
)
def test_http_refusals_carry_the_controllers_message(
    refusal: OrderRefused, status: int, body: dict[str, str]
) -> None:
    async def check(client: TestClient[Any, Any], backend: Backend, m: ControllerMetrics) -> None:
        backend.refuse = refusal
        response = await client.post("/v1/rescue-actions", json=VENDOR_EXAMPLE, headers=AUTH)
        assert response.status == status
        assert await response.json() == body

    serve(check)


def test_http_parameter_errors_and_bad_json() -> None:
    async def check(client: TestClient[Any, Any], backend: Backend, m: ControllerMetrics) -> None:
        response = await client.post(
            "/v1/rescue-actions", json=with_(nodeName="gpu-99"), headers=AUTH
        )
        assert response.status == 400
        assert await response.json() == {
            "code": "Error",
            "message": "Parameter error:nodeName 'gpu-99' is not a node of this cluster",
        }
        response = await client.post("/v1/rescue-actions", data=b"{not json", headers=AUTH)
        assert response.status == 400
        assert await response.json() == {
            "code": "Error",
            "message": "Parameter error:the body is not valid JSON",
        }
        assert backend.orders == []

    serve(check)


def test_http_without_the_token_is_refused_and_orders_nothing() -> None:
    async def check(client: TestClient[Any, Any], backend: Backend, m: ControllerMetrics) -> None:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
            response = await client.post(
                "/v1/rescue-actions", data=json.dumps(VENDOR_EXAMPLE), headers=headers
            )
            assert response.status == 401
            assert await response.json() == {"code": "Error", "message": "Unauthorized"}
        assert (await client.get("/v1/rescue-plans/gpu-3-api-1")).status == 401
        assert backend.orders == []
        assert (await client.get("/healthz")).status == 200

    serve(check)


def test_http_get_of_an_unknown_plan_is_404() -> None:
    async def check(client: TestClient[Any, Any], backend: Backend, m: ControllerMetrics) -> None:
        response = await client.get("/v1/rescue-plans/nope", headers=AUTH)
        assert response.status == 404
        assert await response.json() == {
            "code": "Error",
            "message": "Parameter error:no RescuePlan named 'nope'",
        }

    serve(check)


def test_http_lists_the_plans_of_the_node_asked_for_in_the_vendors_envelope() -> None:
    async def check(client: TestClient[Any, Any], backend: Backend, m: ControllerMetrics) -> None:
        listed = await client.get("/v1/rescue-plans?nodeName=gpu-3", headers=AUTH)
        assert listed.status == 200
        assert await listed.json() == {
            "code": "Success",
            "message": "Success",
            "plans": [{"name": "gpu-3-api-1", "status": {"phase": "Cordoned"}}],
        }
        none = await client.get("/v1/rescue-plans?nodeName=gpu-4", headers=AUTH)
        assert await none.json() == {"code": "Success", "message": "Success", "plans": []}
        assert backend.listed_for == ["gpu-3", "gpu-4"]
        missing = await client.get("/v1/rescue-plans", headers=AUTH)
        assert missing.status == 400
        assert await missing.json() == {
            "code": "Error",
            "message": "Parameter error:give ?nodeName=<node> to list plans",
        }
        assert backend.listed_for == ["gpu-3", "gpu-4"]  # not asked without a node

    serve(check)


def test_an_empty_token_is_refused_at_start() -> None:
    with pytest.raises(ValueError, match="token"):
        build_app(Backend(), "", ControllerMetrics())


# --- issue 11, scenario 19: escalateTime, idempotency, token rotation, TLS -------------------
def test_an_escalate_time_in_the_past_is_a_parameter_error() -> None:
    message = refused(with_(escalateTime="2026-11-24T09:00:00Z"))
    assert message.startswith("Parameter error:escalateTime '2026-11-24T09:00:00Z' is in the past")
    now = dt.datetime(2026, 11, 24, 8, 0, tzinfo=dt.UTC)
    assert parse_order(with_(escalateTime="2026-11-24T09:00:00Z"), NODES.__contains__, now)


class PlanMaker(Backend):
    """Makes plans named as the controller names them; they run until ``end`` is called."""

    def __init__(self) -> None:
        super().__init__()
        self.phases: dict[str, str] = {}

    async def order(self, order: RescueOrder, request_key: str) -> str:
        self.orders.append(order)
        name = api_plan_name(order.node, request_key)
        self.phases[name] = "Cordoned"
        return name

    def plan_summary(self, name: str) -> dict[str, Any] | None:
        phase = self.phases.get(name)
        return None if phase is None else {"name": name, "status": {"phase": phase}}

    def end_all(self) -> None:
        self.phases = dict.fromkeys(self.phases, "Succeeded")


def serve_with(
    backend: Backend,
    token: str | TokenFile,
    test: Callable[[TestClient[Any, Any]], Awaitable[None]],
) -> None:
    async def main() -> None:
        client = TestClient(
            TestServer(build_app(backend, token, ControllerMetrics()), host="127.0.0.1")
        )
        await client.start_server()
        try:
            await test(client)
        finally:
            await client.close()

    asyncio.run(main())


def test_the_same_order_posted_twice_is_one_plan_while_it_runs() -> None:
    backend = PlanMaker()

    async def check(client: TestClient[Any, Any]) -> None:
        first = await client.post("/v1/rescue-actions", json=VENDOR_EXAMPLE, headers=AUTH)
        # a retry after a lost answer, a second later: same node, Xid and actions
        again = await client.post(
            "/v1/rescue-actions",
            json=with_(escalateTime="2036-11-24T10:00:00Z"),
            headers=AUTH,
        )
        assert (first.status, again.status) == (200, 200)
        assert again.headers["Location"] == first.headers["Location"]
        assert len(backend.orders) == 1

        other = await client.post("/v1/rescue-actions", json=with_(xid=79), headers=AUTH)
        assert other.headers["Location"] != first.headers["Location"]

        backend.end_all()
        later = await client.post("/v1/rescue-actions", json=VENDOR_EXAMPLE, headers=AUTH)
        assert later.status == 200
        assert later.headers["Location"] != first.headers["Location"]
        assert len(backend.orders) == 3

    serve_with(backend, TOKEN, check)


def test_a_rotated_token_file_takes_effect_without_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("first-token\n")
    tokens = TokenFile(path)

    async def check(client: TestClient[Any, Any]) -> None:
        old = {"Authorization": "Bearer first-token"}
        new = {"Authorization": "Bearer second-token"}
        assert (await client.get("/v1/rescue-plans?nodeName=gpu-3", headers=old)).status == 200
        rotated = tmp_path / "token.new"
        rotated.write_text("second-token\n")
        os.replace(rotated, path)  # as a Secret volume swaps its files
        assert (await client.get("/v1/rescue-plans?nodeName=gpu-3", headers=old)).status == 401
        assert (await client.get("/v1/rescue-plans?nodeName=gpu-3", headers=new)).status == 200
        path.write_text("")
        assert (await client.get("/v1/rescue-plans?nodeName=gpu-3", headers=new)).status == 401

    serve_with(Backend(), tokens, check)


def test_an_empty_token_file_is_refused_at_start(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("  \n")
    with pytest.raises(ValueError, match="empty"):
        TokenFile(tmp_path / "token")


def test_with_a_certificate_the_api_answers_over_tls_only(tmp_path: Path) -> None:
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    made = subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        capture_output=True, check=False,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    port = free_port()

    async def main() -> None:
        runner = await start_decision_api(
            Backend(),
            TOKEN,
            ControllerMetrics(),
            "127.0.0.1",
            port,
            server_tls(str(cert), str(key)),
        )
        try:
            trusted = ssl.create_default_context(cafile=str(cert))
            async with aiohttp.ClientSession() as session:
                async with session.get(
                    f"https://127.0.0.1:{port}/v1/rescue-plans?nodeName=gpu-3",
                    headers=AUTH,
                    ssl=trusted,
                ) as answer:
                    assert answer.status == 200
                with pytest.raises(aiohttp.ClientError):
                    async with session.get(f"http://127.0.0.1:{port}/healthz") as plain:
                        assert plain.status != 200
        finally:
            await runner.cleanup()

    asyncio.run(main())


def test_a_missing_certificate_names_the_files_and_the_options(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="--tls-cert-file"):
        server_tls(str(tmp_path / "nope.crt"), str(tmp_path / "nope.key"))
