"""Reboot drivers: how the controller has a node rebooted, one class per kind of node.

A plan records ``rebootIssuedAt`` (and the node's boot ID) *before* it asks a
driver to reboot, and never asks again once that is recorded, so a controller
killed mid-reboot does not reboot twice. It then waits for the node to be Ready
after a reboot: a new boot ID, or a Ready condition that changed after the
reboot was ordered where no boot ID is known (:func:`rebooted_and_ready`).

``local``
    A KWOK node of the local provider: the label ``node-not-ready.stage.kwok.x-k8s.io``
    puts it through KWOK's node-not-ready stage (it reports NotReady); after
    ``boot_seconds`` with the node NotReady the driver ends the stage and gives the
    node a new boot ID, as a host that booted again would (the same operations as
    ``LocalProvider.mark_node_not_ready`` / ``mark_node_ready``).
``kind``
    A kind node: ``docker restart <node>`` (the node is a container of that name).
    Needs Docker on the controller's host; not exercised by the test suite, which
    runs without a container engine.
``annotation``
    A real node whose own agent reboots its host, as kured and
    self-node-remediation do: the controller sets the annotation
    ``rescue.blackstart.dev/reboot-requested: <plan>`` on the node; the node's agent
    reboots the host when it sees it (``blackstart rescue agent --host-reboot``, see
    :mod:`blackstart.rescue.agent.host_reboot`); the controller removes the annotation
    once the node is Ready again, and whenever the plan ends.
``webhook``
    An HTTP POST to a cloud or fleet API (``--webhook-url``) with the body
    ``{"node": ..., "providerID": ..., "plan": ..., "action": "reboot", "requestedAt": ...}``
    and, with ``--webhook-token-file``, ``Authorization: Bearer <token>``. Any 2xx
    answer means the reboot was accepted; anything else fails the plan, visibly.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import uuid
from typing import Any, Protocol

import aiohttp

from blackstart.names import REBOOT_REQUESTED_ANNOTATION as ANNOTATION_REBOOT_REQUESTED
from blackstart.rescue.controller.kube_api import KubeApi
from blackstart.rescue.controller.node_actions import NodeView
from blackstart.rescue.crd.plans import format_time

__all__ = [
    "ANNOTATION_REBOOT_REQUESTED",
    "DRIVERS",
    "NODE_NOT_READY_LABEL",
    "AnnotationDriver",
    "KindDriver",
    "LocalDriver",
    "RebootDriver",
    "RebootError",
    "WebhookDriver",
    "make_driver",
    "rebooted_and_ready",
]

NODE_NOT_READY_LABEL = "node-not-ready.stage.kwok.x-k8s.io"

DRIVERS = ("local", "kind", "annotation", "webhook")


class RebootError(RuntimeError):
    """The driver could not order the reboot; the message says why and what to check."""


SYNCHRONOUS_RESTART_GRACE = dt.timedelta(seconds=10)


def rebooted_and_ready(
    node: NodeView,
    boot_id_before: str | None,
    issued_at: dt.datetime,
    now: dt.datetime | None = None,
    restart_is_synchronous: bool = False,
) -> bool:
    """True when ``node`` is Ready after a reboot ordered at ``issued_at``.

    Rebooted means a boot ID other than ``boot_id_before``; where no boot ID was
    recorded (or the node reports none), a Ready condition whose last transition is
    after the order; or, for drivers whose order returns once the node restarted (as
    ``docker restart`` does, where the host's boot ID stays), Ready again
    :data:`SYNCHRONOUS_RESTART_GRACE` after the order, time for the kubelet to report.
    A Ready flap under the recorded boot ID (a kubelet restart) is not a reboot.
    """
    if not node.ready:
        return False
    if restart_is_synchronous and now is not None and now - issued_at >= SYNCHRONOUS_RESTART_GRACE:
        return True
    if boot_id_before and node.boot_id:
        return node.boot_id != boot_id_before
    return node.ready_since is not None and node.ready_since > issued_at


class RebootDriver(Protocol):
    """What a reboot driver does; see the module docstring for each one."""

    name: str
    restart_is_synchronous: bool
    """True when :meth:`issue` returns only once the node has restarted (kind), so Ready
    some seconds later is proof enough where the boot ID cannot change."""

    async def issue(self, node: NodeView, plan: str) -> None:
        """Order the reboot of ``node`` (called once per plan)."""

    async def progress(self, node: NodeView, issued_at: dt.datetime, now: dt.datetime) -> None:
        """Called while waiting for the node to come back (drivers that simulate hosts act)."""

    async def finish(self, node: NodeView) -> None:
        """Called once the node is Ready again, and whenever a plan that ordered a reboot
        ends or is deleted: takes back what the order asked of the node (idempotent)."""


class LocalDriver:
    """KWOK's node-not-ready stage, then a new boot ID (the local provider's nodes)."""

    name = "local"
    restart_is_synchronous = False

    def __init__(self, api: KubeApi, boot_seconds: float = 2.0, not_ready_timeout: float = 30.0):
        self.api = api
        self.boot_seconds = boot_seconds
        self.not_ready_timeout = not_ready_timeout
        self._down_since: dict[str, dt.datetime] = {}

    async def issue(self, node: NodeView, plan: str) -> None:
        await self.api.patch_node(
            node.name, {"metadata": {"labels": {NODE_NOT_READY_LABEL: "true"}}}
        )

    async def progress(self, node: NodeView, issued_at: dt.datetime, now: dt.datetime) -> None:
        if node.labels.get(NODE_NOT_READY_LABEL) != "true":
            return  # not down (yet, or any more)
        if not node.ready:
            self._down_since.setdefault(node.name, now)
        down_since = self._down_since.get(node.name)
        booted = down_since is not None and (now - down_since).total_seconds() >= self.boot_seconds
        # a node the stage never took down is brought back anyway, not left in the stage
        stuck = (now - issued_at).total_seconds() >= self.not_ready_timeout
        if booted or stuck:
            self._down_since.pop(node.name, None)
            # the host "boots": a new boot ID first, then the stage ends and KWOK reports Ready
            await self.api.patch_node_status(
                node.name, {"status": {"nodeInfo": {"bootID": str(uuid.uuid4())}}}
            )
            await self.api.patch_node(
                node.name, {"metadata": {"labels": {NODE_NOT_READY_LABEL: None}}}
            )

    async def finish(self, node: NodeView) -> None:
        # a plan that ended (or was deleted) mid-reboot: end the stage, not left NotReady
        self._down_since.pop(node.name, None)
        if node.labels.get(NODE_NOT_READY_LABEL) == "true":
            await self.api.patch_node(
                node.name, {"metadata": {"labels": {NODE_NOT_READY_LABEL: None}}}
            )


class KindDriver:
    """``docker restart <node>``: a kind node is a container named like the node.

    Not exercised by the test suite (it runs without a container engine).
    """

    name = "kind"
    # docker restart returns once the container runs again; the boot ID (the host's) does
    # not change, and the node may never be seen NotReady
    restart_is_synchronous = True

    def __init__(self, docker: str = "docker", timeout: float = 120.0):
        self.docker = docker
        self.timeout = timeout

    async def issue(self, node: NodeView, plan: str) -> None:
        try:
            proc = await asyncio.create_subprocess_exec(
                self.docker,
                "restart",
                node.name,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
        except FileNotFoundError:
            raise RebootError(
                f"cannot reboot kind node {node.name}: {self.docker} is not installed; the kind "
                "driver needs Docker on the controller's host"
            ) from None
        try:
            _, stderr = await asyncio.wait_for(proc.communicate(), self.timeout)
        except TimeoutError:
            proc.kill()
            raise RebootError(
                f"docker restart {node.name} did not finish within {self.timeout:.0f} s"
            ) from None
        if proc.returncode != 0:
            raise RebootError(
                f"docker restart {node.name} failed ({proc.returncode}): "
                f"{stderr.decode(errors='replace').strip()[:300]}"
            )

    async def progress(self, node: NodeView, issued_at: dt.datetime, now: dt.datetime) -> None:
        return None

    async def finish(self, node: NodeView) -> None:
        return None


class AnnotationDriver:
    """Annotate the node; the node's own agent reboots the host (kured style)."""

    name = "annotation"
    restart_is_synchronous = False

    def __init__(self, api: KubeApi):
        self.api = api

    async def issue(self, node: NodeView, plan: str) -> None:
        await self.api.patch_node(
            node.name, {"metadata": {"annotations": {ANNOTATION_REBOOT_REQUESTED: plan}}}
        )

    async def progress(self, node: NodeView, issued_at: dt.datetime, now: dt.datetime) -> None:
        return None

    async def finish(self, node: NodeView) -> None:
        await self.api.patch_node(
            node.name, {"metadata": {"annotations": {ANNOTATION_REBOOT_REQUESTED: None}}}
        )


class WebhookDriver:
    """POST the reboot order to an HTTP endpoint (a cloud or fleet API)."""

    name = "webhook"
    restart_is_synchronous = False

    def __init__(self, url: str, token: str | None = None, timeout: float = 10.0):
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"webhook URL {url!r} must start with http:// or https://")
        self.url = url
        self.token = token
        self.timeout = timeout

    def body(self, node: NodeView, plan: str, now: dt.datetime) -> dict[str, Any]:
        """The JSON the webhook receives."""
        return {
            "node": node.name,
            "providerID": node.provider_id or None,
            "plan": plan,
            "action": "reboot",
            "requestedAt": format_time(now),
        }

    async def issue(self, node: NodeView, plan: str) -> None:
        headers = {"Content-Type": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        payload = json.dumps(self.body(node, plan, dt.datetime.now(dt.UTC)))
        timeout = aiohttp.ClientTimeout(total=self.timeout)
        try:
            async with (
                aiohttp.ClientSession(timeout=timeout) as session,
                session.post(self.url, data=payload, headers=headers) as response,
            ):
                text = await response.text()
                if not 200 <= response.status < 300:
                    raise RebootError(
                        f"reboot webhook {self.url} answered {response.status} for node "
                        f"{node.name}: {text.strip()[:300]}"
                    )
        except (aiohttp.ClientError, TimeoutError) as err:
            raise RebootError(
                f"reboot webhook {self.url} could not be reached for node {node.name}: {err}"
            ) from err

    async def progress(self, node: NodeView, issued_at: dt.datetime, now: dt.datetime) -> None:
        return None

    async def finish(self, node: NodeView) -> None:
        return None


def make_driver(
    name: str,
    api: KubeApi,
    webhook_url: str | None = None,
    webhook_token: str | None = None,
    local_boot_seconds: float = 2.0,
) -> RebootDriver:
    """The driver called ``name`` (one of :data:`DRIVERS`)."""
    if name == "local":
        return LocalDriver(api, boot_seconds=local_boot_seconds)
    if name == "kind":
        return KindDriver()
    if name == "annotation":
        return AnnotationDriver(api)
    if name == "webhook":
        if not webhook_url:
            raise ValueError("the webhook reboot driver needs --webhook-url")
        return WebhookDriver(webhook_url, webhook_token)
    raise ValueError(f"unknown reboot driver {name!r}; one of {', '.join(DRIVERS)}")
