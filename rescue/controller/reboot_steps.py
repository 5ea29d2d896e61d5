"""The reboot steps: order the reboot through the driver, wait for the node to be back.

The intent (``rebootIssuedAt``, with the boot ID then) is recorded before the order,
so a reboot is never ordered twice; the order is recorded apart from it
(``rebootOrderedAt``) once the driver accepted it. An order the API server or the
driver refused for a while is tried again until the reboot's waittime is out, then
the plan fails visibly; it is never waited out as if the node were rebooting. A
plan resumed between intent and order orders again, unless the node already shows
a new boot ID (the order went out before the restart).

Back means Ready under a new boot ID (:func:`.reboot.rebooted_and_ready`): a Ready
flap under the recorded boot ID is not a reboot.
"""

from __future__ import annotations

from blackstart.rescue.controller.reboot import RebootError, rebooted_and_ready
from blackstart.rescue.controller.runner_base import RunnerBase, StepFailed, now_utc
from blackstart.rescue.crd.plans import Step, format_time, parse_time
from blackstart.rescue.crd.waittime import format_waittime

__all__ = ["RebootSteps"]


class RebootSteps(RunnerBase):
    """reboot and waitReady."""

    last_error: str = ""

    async def _reboot(self) -> bool:
        status = self.status
        node = self._node()
        driver = self.ctx.driver
        just_intended = False
        if status.reboot_issued_at is None:
            now = now_utc()
            earlier = [
                moment
                for other in self.ctx.plans_for_node(node.name)
                if other.name != self.plan.name and not other.dry_run
                for moment in [parse_time(other.status.reboot_issued_at)]
                if moment is not None
            ]
            refusal = (
                None if self.plan.dry_run else self.ctx.storm_guard.reboot_allowed(earlier, now)
            )
            if refusal is not None:
                self.ctx.metrics.refusals.labels("reboot-cap").inc()
                await self._fail(refusal)
                return False
            status.reboot_issued_at = format_time(now)
            status.boot_id_before_reboot = node.boot_id
            self._enter(
                "Rebooting", self._dry(f"reboot {node.name} through the {driver.name} driver")
            )
            await self.ctx.persist(self.plan, before_acting=True)  # never ordered twice
            just_intended = True
        if self.plan.dry_run:
            status.complete(Step.REBOOT)
            self._event("Rebooting", status.message)
            return True
        if status.reboot_ordered_at is None:
            before = status.boot_id_before_reboot or ""
            if not just_intended and before and node.boot_id and node.boot_id != before:
                # ordered before a restart, and the node has rebooted since: ordered
                status.reboot_ordered_at = status.reboot_issued_at
            else:
                await self._order_reboot()
            await self.ctx.persist(self.plan, before_acting=True)
            self._event("Rebooting", f"reboot {node.name} ordered through the {driver.name} driver")
        status.complete(Step.REBOOT)
        return True

    async def _order_reboot(self) -> None:
        status = self.status
        node = self._node()
        driver = self.ctx.driver
        waittime = self._waittime("reboot", self.ctx.config.default_reboot_waittime)
        intended = parse_time(status.reboot_issued_at) or now_utc()
        if now_utc() >= intended + waittime:
            raise StepFailed(
                f"the reboot of {node.name} could not be ordered within its waittime "
                f"({format_waittime(waittime)}): {self.last_error or 'no answer'}; it stays "
                "cordoned"
            )
        try:
            await driver.issue(node, self.plan.name)
        except RebootError as err:
            raise StepFailed(str(err)) from None
        # an API error propagates: the plan retries this step, with the order not recorded
        status.reboot_ordered_at = format_time(now_utc())
        self.ctx.metrics.reboots.labels(driver.name).inc()

    async def _wait_ready(self) -> bool:
        status = self.status
        ordered = parse_time(status.reboot_ordered_at or status.reboot_issued_at) or now_utc()
        waittime = self._waittime("reboot", self.ctx.config.default_reboot_waittime)
        deadline = ordered + waittime
        if status.phase != "WaitingReady":
            self._enter(
                "WaitingReady",
                self._dry(
                    f"wait up to {format_waittime(waittime)} for {self.plan.node} to be Ready"
                ),
            )
            await self.ctx.persist(self.plan)
        if self.plan.dry_run:
            status.complete(Step.WAIT_READY)
            return True
        while True:
            node = self._node()
            now = now_utc()
            if rebooted_and_ready(
                node,
                status.boot_id_before_reboot,
                ordered,
                now,
                self.ctx.driver.restart_is_synchronous,
            ):
                break
            if now >= deadline:
                await self._fail(
                    f"{node.name} was not Ready again under a new boot ID within "
                    f"{format_waittime(waittime)} of the reboot order; it stays cordoned (the "
                    "reboot is never ordered twice)"
                )
                return False
            await self.ctx.driver.progress(node, ordered, now)
            remaining = (deadline - now).total_seconds()
            await self.ctx.wait_node_change(node.name, timeout=min(1.0, max(0.05, remaining)))
        status.ready_at = format_time(now_utc())
        await self.ctx.driver.finish(node)
        status.complete(Step.WAIT_READY)
        took = (parse_time(status.ready_at) or ordered) - ordered
        status.message = f"{node.name} is Ready again, {took.total_seconds():.1f} s after the order"
        self._event("NodeReady", status.message)
        return True
