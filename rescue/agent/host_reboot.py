"""The node-side rebooter: the agent reboots its own host when the controller asks.

The controller's ``annotation`` reboot driver sets
``rescue.blackstart.dev/reboot-requested: <plan>`` on the node (as kured's lock and
self-node-remediation's request do); nothing on the controller's side can reboot a
real host. With ``--host-reboot`` the agent on that node watches its own Node object
(one watch, no polling) and reboots the host when, and only when, all of these hold
(:func:`reboot_due`):

- the annotation names a RescuePlan, and that plan is for this node, not a dry run,
  and in ``Rebooting`` or ``WaitingReady`` (a plan that ended, or a stale or forged
  annotation, reboots nothing);
- the node still runs the boot the plan recorded before it asked
  (``status.bootIdBeforeReboot`` equals the Node's ``status.nodeInfo.bootID``).

The second rule is what keeps a node from rebooting twice for one request: after the
reboot the agent starts again, finds the annotation still set (the controller removes
it once the node is Ready), and sees a new boot ID. Nothing is kept on disk for it.

The reboot itself is a command, by default ``systemctl reboot`` in the namespaces of
the host's PID 1 (``nsenter``), so the host shuts down cleanly: the pod needs
``hostPID`` and a privileged container, which is why it is an explicit opt-in (the
chart's ``agent.hostReboot.enabled``). On blackstart's kind nodes the same command
reboots the node container: its systemd exits, Docker starts it again, and the node
comes back under a new boot ID.
"""

from __future__ import annotations

import logging
import shlex
import subprocess
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from blackstart.names import (
    REBOOT_REQUESTED_ANNOTATION,
    RESCUE_GROUP,
    RESCUE_PLANS,
    RESCUE_VERSION,
    TERMINAL_PHASES,
)

if TYPE_CHECKING:  # the CLI imports this module for its default; kubernetes loads on use
    from kubernetes import client, watch

__all__ = [
    "DEFAULT_REBOOT_COMMAND",
    "HostRebooter",
    "RebootDecision",
    "reboot_due",
    "retry_delay",
]

log = logging.getLogger("blackstart.rescue.agent.host_reboot")

#: systemd's clean reboot, run in the host's namespaces from a hostPID pod
DEFAULT_REBOOT_COMMAND = (
    "nsenter",
    "--target",
    "1",
    "--mount",
    "--uts",
    "--ipc",
    "--net",
    "--pid",
    "--",
    "systemctl",
    "reboot",
)
#: the phases in which a plan waits for its node's reboot
REBOOT_PHASES = frozenset({"Rebooting", "WaitingReady"})
#: seconds a watch lasts before it is opened again (the API server ends it anyway)
WATCH_SECONDS = 300
#: the longest wait before a failed watch is opened again
MAX_RETRY_S = 60.0


@dataclass(frozen=True)
class RebootDecision:
    """Whether to reboot now, and why (logged either way)."""

    reboot: bool
    reason: str
    plan: str = ""


def reboot_due(node: Mapping[str, Any], plan: Mapping[str, Any] | None) -> RebootDecision:
    """Whether ``node`` (a Node object) must reboot for the plan its annotation names.

    ``plan`` is that RescuePlan as read from the API server, or None when it does
    not exist.
    """
    metadata = node.get("metadata") or {}
    name = str(metadata.get("name") or "")
    requested = (metadata.get("annotations") or {}).get(REBOOT_REQUESTED_ANNOTATION)
    if not requested:
        return RebootDecision(False, "no reboot requested")
    if plan is None:
        return RebootDecision(False, f"the requested plan {requested} does not exist", requested)
    spec, status = plan.get("spec") or {}, plan.get("status") or {}
    if spec.get("nodeName") != name:
        return RebootDecision(
            False, f"plan {requested} is for node {spec.get('nodeName')!r}, not {name}", requested
        )
    if spec.get("dryRun"):
        return RebootDecision(False, f"plan {requested} is a dry run", requested)
    phase = str(status.get("phase") or "")
    if phase not in REBOOT_PHASES:
        return RebootDecision(
            False, f"plan {requested} is {phase or 'new'}, not waiting for a reboot", requested
        )
    before = status.get("bootIdBeforeReboot")
    boot = ((node.get("status") or {}).get("nodeInfo") or {}).get("bootID")
    if not before:
        return RebootDecision(False, f"plan {requested} recorded no boot ID to reboot", requested)
    if boot != before:
        return RebootDecision(
            False, f"{name} has booted since plan {requested} asked (boot {boot})", requested
        )
    return RebootDecision(True, f"plan {requested} asks {name} to reboot (boot {boot})", requested)


def retry_delay(failures: int) -> float:
    """Seconds before the watch is opened again after ``failures`` failures in a row: 1 s
    doubling to :data:`MAX_RETRY_S`, so a fleet of agents that may not read plans (a
    chart without ``agent.hostReboot``, an outage) does not hammer the API server."""
    return float(min(MAX_RETRY_S, 2 ** max(0, failures - 1)))


def run_command(command: Sequence[str]) -> tuple[int, str]:
    """Run the reboot command; its exit code and the end of what it printed."""
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as err:
        return 127, str(err)
    return done.returncode, (done.stdout + done.stderr).strip()[-500:]


class HostRebooter:
    """Watches one Node and runs the reboot command when :func:`reboot_due` says so."""

    def __init__(
        self,
        api: client.ApiClient,
        node: str,
        command: Sequence[str] = DEFAULT_REBOOT_COMMAND,
        *,
        runner: Callable[[Sequence[str]], tuple[int, str]] = run_command,
        event_namespace: str = "default",
    ) -> None:
        from kubernetes import client

        self.node = node
        self.command = tuple(command)
        self.core = client.CoreV1Api(api)
        self.custom = client.CustomObjectsApi(api)
        self.runner = runner
        self.event_namespace = event_namespace
        self.ordered: set[str] = set()  # plans this process ran the command for
        self._last_key: tuple[str | None, str | None] | None = None
        self._last_decision: RebootDecision | None = None
        self._recheck = False
        self._stop = threading.Event()
        self._watch: watch.Watch | None = None
        self._thread = threading.Thread(target=self._loop, name="host-reboot", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._watch is not None:
            self._watch.stop()  # type: ignore[no-untyped-call]

    def _plan(self, name: str) -> dict[str, Any] | None:
        from kubernetes import client

        try:
            plan = self.custom.get_cluster_custom_object(
                RESCUE_GROUP, RESCUE_VERSION, RESCUE_PLANS, name
            )
        except client.ApiException as err:
            if err.status == 404:
                return None
            raise
        return plan if isinstance(plan, dict) else None

    def consider(self, node: Mapping[str, Any]) -> RebootDecision:
        """Decide on one state of the Node, and reboot when due (once per plan).

        The Node changes every few seconds (its status heartbeats); the plan is read
        again only when the request or the boot ID changed, or while the plan it names
        may still come to wait for the reboot.
        """
        requested = ((node.get("metadata") or {}).get("annotations") or {}).get(
            REBOOT_REQUESTED_ANNOTATION
        )
        boot = ((node.get("status") or {}).get("nodeInfo") or {}).get("bootID")
        key = (requested, boot)
        if key == self._last_key and self._last_decision is not None and not self._recheck:
            return self._last_decision
        plan = self._plan(requested) if requested else None
        decision = reboot_due(node, plan)
        phase = str(((plan or {}).get("status") or {}).get("phase") or "")
        self._recheck = plan is not None and not decision.reboot and phase not in TERMINAL_PHASES
        if key != self._last_key and requested and not decision.reboot:
            log.info("not rebooting %s: %s", self.node, decision.reason)
        self._last_key, self._last_decision = key, decision
        if not decision.reboot:
            return decision
        if decision.plan in self.ordered:
            return RebootDecision(False, f"already ran the reboot for plan {decision.plan}")
        self.ordered.add(decision.plan)
        log.warning("rebooting %s: %s; running %s", self.node, decision.reason, self._shown())
        code, output = self.runner(self.command)
        if code != 0:
            # the controller waits out the reboot's waittime and fails the plan visibly;
            # the node stays cordoned. The Event says why here.
            log.error("the reboot command failed (exit %d): %s", code, output)
            self._event(f"the reboot command {self._shown()} failed (exit {code}): {output}")
        return decision

    def _shown(self) -> str:
        return " ".join(shlex.quote(part) for part in self.command)

    def _event(self, message: str) -> None:
        from kubernetes import client

        body = client.CoreV1Event(
            metadata=client.V1ObjectMeta(generate_name=f"{self.node}.reboot-failed."),
            involved_object=client.V1ObjectReference(kind="Node", name=self.node, api_version="v1"),
            reason="RebootFailed",
            message=message[:1000],
            type="Warning",
            source=client.V1EventSource(component="blackstart-rescue-agent", host=self.node),
        )
        try:
            self.core.create_namespaced_event(self.event_namespace, body)
        except client.ApiException as err:
            log.error("could not write the RebootFailed Event: %s", err.reason)

    def _loop(self) -> None:
        from kubernetes import watch

        selector = f"metadata.name={self.node}"
        failures = 0
        while not self._stop.is_set():
            self._watch = watch.Watch()  # type: ignore[no-untyped-call]
            try:
                for event in self._watch.stream(  # type: ignore[no-untyped-call]
                    self.core.list_node,
                    field_selector=selector,
                    timeout_seconds=WATCH_SECONDS,
                    _request_timeout=WATCH_SECONDS + 15,
                ):
                    if self._stop.is_set():
                        break
                    obj = event.get("raw_object")
                    if event.get("type") in ("ADDED", "MODIFIED") and isinstance(obj, dict):
                        self.consider(obj)
                failures = 0  # the watch ran its course: open the next one at once
            except Exception as err:  # an outage, a refusal (403): open it again, backing off
                failures += 1
                delay = retry_delay(failures)
                log.warning("node watch failed (%s); opening it again in %.0f s", err, delay)
                self._stop.wait(delay)
