"""The third-party decision API: an outside system orders the actions, the controller does them.

With ``--decision-api HOST:PORT`` the controller stops acting on RescuePolicies
and carries out only the orders posted here (it still watches the Xid signals and
counts them). Every request needs ``Authorization: Bearer <token>``; the token is
read from ``--token-file``, and read again whenever that file changes (a rotated
Secret takes effect without a restart; the old token stops working). With
``--tls-cert-file`` and ``--tls-key-file`` the API is served over HTTPS only.

``POST /v1/rescue-actions`` with::

    {"nodeName": "gpu-3", "xid": 62, "escalateTime": "2026-11-24T09:00:00Z",
     "actions": [{"name": "cordon", "waittime": ""}, {"name": "drain", "waittime": "10min"},
                 {"name": "reboot", "waittime": "1day3h5min", "unCordon": "true"}]}

answers, as the vendor's API does (the bodies are exactly these):

====  ==========================================================================
200   ``{"code": "Success", "message": "Success"}`` (header ``Location`` names
      the RescuePlan made: ``/v1/rescue-plans/<name>``)
400   ``{"code": "Error", "message": "Parameter error:<what>"}``: malformed JSON,
      unknown node, malformed waittime, unknown or repeated action...
422   ``{"code": "Error", "message": "Failures to meet preconditions <which>"}``
429   ``{"code": "Error", "message": "Exceed the maximum plans limit {N}"}``
401   ``{"code": "Error", "message": "Unauthorized"}``
====  ==========================================================================

``escalateTime`` (optional, RFC 3339, not in the past: a parameter error) is when
a drain still running gives way to the next action (or fails, when none follows),
whichever comes first of it and the drain's waittime. ``unCordon`` (optional,
reboot only) uncordons the node once it is Ready again.

Orders are idempotent by content: the same node, Xid and actions posted again
while the plan they made has not ended answer 200 with that plan's ``Location``
and make nothing new (a client retrying after a lost answer never reboots a node
twice); once it ended, the same order makes a new plan.

``GET /v1/rescue-plans/<name>`` returns ``{"code": "Success", "message": "Success",
"plan": {...}}`` with the plan's order and status (phase, transitions...);
``GET /v1/rescue-plans?nodeName=gpu-3`` lists a node's plans the same way
(``"plans": [...]``). ``GET /healthz`` needs no token.

:func:`parse_order` is the request validation, pure and unit-tested.
"""

from __future__ import annotations

import datetime as dt
import hmac
import json
import logging
import os
import ssl
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from aiohttp import web

from blackstart.names import TERMINAL_PHASES
from blackstart.rescue.controller.metrics import ControllerMetrics
from blackstart.rescue.crd.plans import api_plan_name, parse_time
from blackstart.rescue.crd.policy import ACTION_NAMES, PolicyError, RescueAction
from blackstart.rescue.crd.waittime import optional_waittime

__all__ = [
    "PARAMETER_ERROR",
    "SUCCESS",
    "DecisionBackend",
    "OrderRefused",
    "RescueOrder",
    "TokenFile",
    "build_app",
    "error_body",
    "order_key",
    "parse_order",
    "server_tls",
    "start_decision_api",
]

PARAMETER_ERROR = "Parameter error:"
SUCCESS: dict[str, str] = {"code": "Success", "message": "Success"}
MAX_BODY_BYTES = 64 * 1024


def error_body(message: str) -> dict[str, str]:
    """``{"code": "Error", "message": message}``."""
    return {"code": "Error", "message": message}


class OrderRefused(Exception):
    """The order cannot be carried out; ``message`` is the API's, ``status`` the HTTP status."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.message = message
        self.status = status


def _parameter_error(what: str) -> OrderRefused:
    return OrderRefused(PARAMETER_ERROR + what, 400)


@dataclass(frozen=True)
class RescueOrder:
    """A validated order: actions on a node for a Xid."""

    node: str
    xid: int
    actions: tuple[RescueAction, ...]
    escalate_time: str | None = None


def _action(raw: object, index: int) -> RescueAction:
    where = f"actions[{index}]"
    if not isinstance(raw, Mapping):
        raise _parameter_error(f'{where} must be an object like {{"name": "cordon"}}')
    name = raw.get("name")
    if not isinstance(name, str) or name not in ACTION_NAMES:
        raise _parameter_error(
            f"{where}.name: unknown action {name!r}; the actions are {', '.join(ACTION_NAMES)}"
        )
    waittime_text = raw.get("waittime", "")
    if waittime_text is None:
        waittime_text = ""
    if not isinstance(waittime_text, str):
        raise _parameter_error(f'{where}.waittime must be a string such as "10min"')
    try:
        waittime = optional_waittime(waittime_text)
    except ValueError as err:
        raise _parameter_error(f"{where}.waittime: {err}") from None
    uncordon_text = raw.get("unCordon", "")
    if uncordon_text not in ("", None, "true", "false", True, False):
        raise _parameter_error(f'{where}.unCordon must be "true" or "false"')
    uncordon = uncordon_text in ("true", True)
    unknown = set(raw) - {"name", "waittime", "unCordon"}
    if unknown:
        raise _parameter_error(f"{where}: unknown field {sorted(unknown)[0]!r}")
    try:
        return RescueAction(name=name, waittime=waittime, uncordon=uncordon)
    except PolicyError as err:
        raise _parameter_error(f"{where}.{err}") from None


log = logging.getLogger("blackstart.rescue.controller")


def parse_order(
    body: object, node_exists: Callable[[str], bool], now: dt.datetime | None = None
) -> RescueOrder:
    """Validate a POST body into a :class:`RescueOrder`.

    Raises :class:`OrderRefused` (400) with ``Parameter error:<what>`` naming the
    field. Preconditions and limits are the controller's to check, after this.
    ``now``: the time an ``escalateTime`` must not be before (default: now).
    """
    if not isinstance(body, Mapping):
        raise _parameter_error("the body must be a JSON object")
    node = body.get("nodeName")
    if not isinstance(node, str) or not node:
        raise _parameter_error("nodeName is required: the name of the node to act on")
    xid = body.get("xid")
    if isinstance(xid, str) and xid.isdigit():
        xid = int(xid)
    if not isinstance(xid, int) or isinstance(xid, bool) or not 0 <= xid <= 999:
        raise _parameter_error(f"xid must be an Xid code from 0 to 999, got {xid!r}")
    raw_actions = body.get("actions")
    if not isinstance(raw_actions, list) or not raw_actions:
        raise _parameter_error("actions must be a non-empty list of {name, waittime}")
    if len(raw_actions) > len(ACTION_NAMES):
        raise _parameter_error(f"actions holds {len(raw_actions)} items, at most 5")
    actions = tuple(_action(raw, index) for index, raw in enumerate(raw_actions))
    names = [a.name for a in actions]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise _parameter_error(f"actions: {', '.join(repeated)} is given more than once")
    escalate = body.get("escalateTime")
    if escalate in (None, ""):
        escalate = None
    elif not isinstance(escalate, str) or parse_time(escalate) is None:
        raise _parameter_error(
            f"escalateTime {escalate!r} is not an RFC 3339 time such as 2026-11-24T09:00:00Z"
        )
    unknown = set(body) - {"nodeName", "xid", "actions", "escalateTime"}
    if unknown:
        raise _parameter_error(f"unknown field {sorted(unknown)[0]!r}")
    if not node_exists(node):
        raise _parameter_error(f"nodeName {node!r} is not a node of this cluster")
    escalate_time = None
    if escalate is not None:
        moment = parse_time(escalate)
        assert moment is not None
        current = now or dt.datetime.now(dt.UTC)
        if moment < current:
            raise _parameter_error(
                f"escalateTime {escalate!r} is in the past (now {current:%Y-%m-%dT%H:%M:%SZ}): "
                "give a time to come, or none"
            )
        escalate_time = moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return RescueOrder(node=node, xid=xid, actions=actions, escalate_time=escalate_time)


class DecisionBackend(Protocol):
    """What the decision API needs from the controller."""

    def node_exists(self, name: str) -> bool: ...

    async def order(self, order: RescueOrder, request_key: str) -> str:
        """Make a plan for ``order`` and return its name; raise :class:`OrderRefused`."""
        ...

    def plan_summary(self, name: str) -> dict[str, Any] | None: ...

    def plan_summaries(self, node: str) -> list[dict[str, Any]]: ...


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def order_key(order: RescueOrder) -> str:
    """What makes two orders the same order: node, Xid and actions (never a timestamp)."""
    actions = [
        [a.name, None if a.waittime is None else a.waittime.total_seconds(), a.uncordon]
        for a in order.actions
    ]
    return json.dumps(
        {"nodeName": order.node, "xid": order.xid, "actions": actions},
        sort_keys=True,
        separators=(",", ":"),
    )


class TokenFile:
    """The bearer token in a file, read again whenever the file changes.

    A Secret mounted as a volume is swapped atomically on rotation; the next
    request after that sees the new token, and the old one stops working. An
    empty or unreadable file accepts no token at all (fails closed).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._seen: tuple[int, int, int] | None = None
        self._token = ""
        self.current()
        if not self._token:
            raise ValueError(f"the decision API token file {self.path} is empty or unreadable")

    def current(self) -> str:
        """The token as the file holds it now ("" when it holds none)."""
        try:
            stat = os.stat(self.path)
            seen = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
            if seen != self._seen:
                self._token = self.path.read_text().strip()
                self._seen = seen
                if not self._token:
                    log.error(
                        "decision API token file %s is empty: refusing every order", self.path
                    )
        except OSError as err:
            log.error("cannot read the decision API token file %s: %s", self.path, err)
            self._seen, self._token = None, ""
        return self._token


def build_app(
    backend: DecisionBackend, token: str | TokenFile, metrics: ControllerMetrics
) -> web.Application:
    """The aiohttp application of the decision API (``token``: fixed, or a :class:`TokenFile`)."""
    tokens: Callable[[], str] = token.current if isinstance(token, TokenFile) else lambda: token
    if not tokens():
        raise ValueError("the decision API needs a non-empty bearer token (--token-file)")

    def reply(
        request: web.Request, status: int, body: dict[str, Any], **headers: str
    ) -> web.Response:
        metrics.decision_api_requests.labels(request.method, str(status)).inc()
        return web.json_response(body, status=status, headers=headers or None)

    def authorized(request: web.Request) -> bool:
        current = tokens()
        given = request.headers.get("Authorization", "").encode()
        return bool(current) and hmac.compare_digest(given, f"Bearer {current}".encode())

    def running_plan(order: RescueOrder, key: str) -> tuple[str | None, str]:
        """(the plan this very order made and that still runs, the key a new plan takes)."""
        for generation in range(1, 1000):
            candidate = key if generation == 1 else f"{key}\n#{generation}"
            summary = backend.plan_summary(api_plan_name(order.node, candidate))
            if summary is None:
                return None, candidate
            phase = (summary.get("status") or {}).get("phase")
            if phase not in TERMINAL_PHASES:
                return str(summary.get("name")), candidate
        raise OrderRefused(f"{PARAMETER_ERROR}this order was given 1000 times already", 400)

    async def post_actions(request: web.Request) -> web.Response:
        if not authorized(request):
            return reply(request, 401, error_body("Unauthorized"))
        raw = await request.read()
        try:
            body = json.loads(raw)
        except ValueError:
            return reply(request, 400, error_body(PARAMETER_ERROR + "the body is not valid JSON"))
        try:
            order = parse_order(body, backend.node_exists)
            running, key = running_plan(order, order_key(order))
            # the same order again (a retry): the plan it made, nothing new
            name = running or await backend.order(order, key)
        except OrderRefused as refused:
            return reply(request, refused.status, error_body(refused.message))
        return reply(request, 200, dict(SUCCESS), Location=f"/v1/rescue-plans/{name}")

    async def get_plan(request: web.Request) -> web.Response:
        if not authorized(request):
            return reply(request, 401, error_body("Unauthorized"))
        name = request.match_info["name"]
        summary = backend.plan_summary(name)
        if summary is None:
            return reply(request, 404, error_body(f"{PARAMETER_ERROR}no RescuePlan named {name!r}"))
        return reply(request, 200, {**SUCCESS, "plan": summary})

    async def list_plans(request: web.Request) -> web.Response:
        if not authorized(request):
            return reply(request, 401, error_body("Unauthorized"))
        node = request.query.get("nodeName", "")
        if not node:
            return reply(
                request, 400, error_body(PARAMETER_ERROR + "give ?nodeName=<node> to list plans")
            )
        return reply(request, 200, {**SUCCESS, "plans": backend.plan_summaries(node)})

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app.router.add_post("/v1/rescue-actions", post_actions)
    app.router.add_get("/v1/rescue-plans/{name}", get_plan)
    app.router.add_get("/v1/rescue-plans", list_plans)
    app.router.add_get("/healthz", healthz)
    return app


def server_tls(cert_file: str, key_file: str) -> ssl.SSLContext:
    """A TLS 1.2+ server context from a PEM certificate (chain) and its key."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert_file, key_file)
    except (OSError, ssl.SSLError) as err:
        raise ValueError(
            f"cannot load the decision API's TLS certificate {cert_file} and key {key_file}: "
            f"{err}; give PEM files (--tls-cert-file, --tls-key-file)"
        ) from err
    return context


async def start_decision_api(
    backend: DecisionBackend,
    token: str | TokenFile,
    metrics: ControllerMetrics,
    host: str,
    port: int,
    tls: ssl.SSLContext | None = None,
) -> web.AppRunner:
    """Serve the decision API on ``host:port`` (HTTPS with ``tls``); ``await runner.cleanup()``."""
    runner = web.AppRunner(build_app(backend, token, metrics), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, ssl_context=tls)
    await site.start()
    return runner
