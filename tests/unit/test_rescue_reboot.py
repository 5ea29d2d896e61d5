"""Reboot drivers (rescue/reboot.py): the readiness check, and the webhook driver's HTTP.

The webhook driver posts to a real aiohttp server on loopback.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import pytest
from aiohttp import web

from blackstart.rescue.controller.node_actions import NodeView
from blackstart.rescue.controller.reboot import RebootError, WebhookDriver, rebooted_and_ready

ISSUED = dt.datetime(2026, 11, 24, 8, 30, tzinfo=dt.UTC)


def node(**kwargs: Any) -> NodeView:
    return NodeView(name="gpu-3", **kwargs)


def test_a_new_boot_id_and_ready_means_rebooted() -> None:
    assert rebooted_and_ready(node(ready=True, boot_id="b2"), "b1", ISSUED)


def test_ready_with_the_old_boot_id_is_not_a_reboot() -> None:
    assert not rebooted_and_ready(node(ready=True, boot_id="b1"), "b1", ISSUED)


def test_not_ready_is_never_done() -> None:
    assert not rebooted_and_ready(node(ready=False, boot_id="b2"), "b1", ISSUED)


def test_a_ready_flap_with_the_recorded_boot_id_is_not_a_reboot() -> None:
    # a kubelet restart flips Ready without a reboot: with a boot ID on record, only a new
    # one counts, or a node with a dead GPU is uncordoned without ever rebooting
    later = ISSUED + dt.timedelta(seconds=20)
    assert not rebooted_and_ready(node(ready=True, boot_id="b1", ready_since=later), "b1", ISSUED)


def test_a_ready_transition_after_the_order_counts_only_where_there_is_no_boot_id() -> None:
    later = ISSUED + dt.timedelta(seconds=20)
    assert rebooted_and_ready(node(ready=True, boot_id="", ready_since=later), "", ISSUED)
    assert rebooted_and_ready(node(ready=True, boot_id="", ready_since=later), None, ISSUED)
    earlier = ISSUED - dt.timedelta(hours=1)
    assert not rebooted_and_ready(node(ready=True, boot_id="", ready_since=earlier), "", ISSUED)


def test_a_synchronous_restart_counts_once_ready_after_the_grace() -> None:
    same = node(ready=True, boot_id="b1")
    soon = ISSUED + dt.timedelta(seconds=2)
    later = ISSUED + dt.timedelta(seconds=15)
    assert not rebooted_and_ready(same, "b1", ISSUED, soon, restart_is_synchronous=True)
    assert rebooted_and_ready(same, "b1", ISSUED, later, restart_is_synchronous=True)
    assert not rebooted_and_ready(same, "b1", ISSUED, later, restart_is_synchronous=False)


def run_webhook(status: int) -> tuple[list[dict[str, Any]], list[str], BaseException | None]:
    received: list[dict[str, Any]] = []
    auth: list[str] = []
    error: BaseException | None = None

    async def handler(request: web.Request) -> web.Response:
        received.append(await request.json())
        auth.append(request.headers.get("Authorization", ""))
        return web.Response(status=status, text="cloud says no" if status >= 400 else "ok")

    async def main() -> None:
        nonlocal error
        app = web.Application()
        app.router.add_post("/reboot", handler)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        driver = WebhookDriver(f"http://127.0.0.1:{port}/reboot", token="t0k")
        try:
            await driver.issue(node(provider_id="aws:///zone/i-123"), "gpu-3-xid-abc")
        except RebootError as err:
            error = err
        finally:
            await runner.cleanup()

    asyncio.run(main())
    return received, auth, error


def test_the_webhook_driver_posts_the_order_with_the_token() -> None:
    received, auth, error = run_webhook(202)
    assert error is None
    assert received[0]["node"] == "gpu-3"
    assert received[0]["providerID"] == "aws:///zone/i-123"
    assert received[0]["plan"] == "gpu-3-xid-abc"
    assert received[0]["action"] == "reboot"
    assert auth == ["Bearer t0k"]


def test_a_webhook_refusal_fails_naming_the_answer() -> None:
    _, _, error = run_webhook(500)
    assert isinstance(error, RebootError)
    assert "answered 500" in str(error) and "cloud says no" in str(error)


def test_an_unreachable_webhook_fails_naming_the_url() -> None:
    async def main() -> None:
        await WebhookDriver("http://127.0.0.1:9/reboot", timeout=2).issue(node(), "p")

    with pytest.raises(RebootError, match="could not be reached"):
        asyncio.run(main())
