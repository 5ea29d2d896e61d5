"""The drain step: :func:`.drain.drain_node` within the plan's waittime, then what follows.

A drain that ran out of time escalates to the plan's reboot, except over pods a
PodDisruptionBudget protects (their eviction was refused): by default the plan then
stops and leaves the node cordoned, and only a drain action with ``escalateOverPdb:
"true"`` goes on, saying so in a Warning Event and ``status.escalatedOverPdb``.
"""

from __future__ import annotations

from blackstart.rescue.controller.drain import classify_pod, drain_node, plan_drain_round
from blackstart.rescue.controller.runner_base import RunnerBase, now_utc
from blackstart.rescue.crd.plans import Step, after_drain_timeout, format_time, parse_time
from blackstart.rescue.crd.waittime import format_waittime

__all__ = ["DrainStep"]


class DrainStep(RunnerBase):
    """drain."""

    async def _drain(self) -> bool:
        status = self.status
        node = self._node()
        waittime = self._waittime("drain", self.ctx.config.default_drain_waittime)
        action = self.plan.action("drain")
        options = self.ctx.config.drain.for_action(action)
        if status.drain_started_at is None:
            status.drain_started_at = format_time(now_utc())
            self._enter(
                "Draining", self._dry(f"drain {node.name} (waittime {format_waittime(waittime)})")
            )
            await self.ctx.persist(self.plan, before_acting=True)  # the start, before evicting
        started = parse_time(status.drain_started_at) or now_utc()
        deadline = started + waittime
        escalate = parse_time(self.plan.escalate_time)
        if escalate is not None:
            deadline = min(deadline, escalate)
        if self.plan.dry_run:
            items, _ = await self.ctx.api.list_pods_on_node(node.name)
            round_ = plan_drain_round([classify_pod(p) for p in items], options)
            refs = ", ".join(p.ref for p in round_.evict[:10]) or "none"
            status.message = f"dry run: would evict {len(round_.evict)} pods ({refs})"
            status.complete(Step.DRAIN)
            self._event("Drained", status.message)
            return True

        async def notify(message: str) -> None:
            self._event("EvictingUnprotectedPod", message, warning=True)

        result = await drain_node(
            self.ctx.api,
            node.name,
            deadline,
            options,
            notify=notify,
            retry_seconds=self.ctx.config.drain_retry_seconds,
        )
        status.evicted_pods += result.evicted
        status.eviction_retries += result.retries
        if result.done:
            status.drained_at = format_time(now_utc())
            status.message = (
                f"drained {node.name}: {status.evicted_pods} pods evicted, "
                f"{status.eviction_retries} evictions retried after a PodDisruptionBudget refused"
            )
            status.complete(Step.DRAIN)
            self._event("Drained", status.message)
            return True
        if after_drain_timeout(self.plan.actions) == "escalate":
            protected = ", ".join(result.protected[:10])
            if result.protected and not (action and action.escalate_over_pdb):
                await self._fail(
                    f"{result.reason}; not escalating to the reboot: a PodDisruptionBudget "
                    f'protects {protected} (a drain with escalateOverPdb: "true" would); '
                    f"{node.name} stays cordoned"
                )
                return False
            status.complete(Step.DRAIN)
            if result.protected:
                status.escalated_over_pdb = result.protected[:20]
                status.message = (
                    f"{result.reason}; escalating to the reboot over pods a PodDisruptionBudget "
                    f"protects ({protected}), as the drain's escalateOverPdb allows"
                )
            else:
                status.message = f"{result.reason}; escalating to the reboot"
            self._event("DrainEscalated", status.message, warning=True)
            return True
        await self._fail(f"{result.reason}; {node.name} stays cordoned")
        return False
