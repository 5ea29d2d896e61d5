"""The steps that take a node out of service and put it back: cordon, warm standby, uncordon.

A cordon is decided on a fresh read of the node, not the watch cache, and written
conditionally (:func:`.node_actions.cordon`): a person's cordon made just before is
found and left alone, and the plan records ``nodeWasCordoned: true``. The uncordon is
recorded as done only once the API server accepted it, and is conditional on the
node's ``cordoned-by`` annotation still naming this plan. After a reboot, a node that
shows an Xid from its new boot stays cordoned.
"""

from __future__ import annotations

from blackstart.rescue.controller.node_actions import CordonTaken, NodeView, cordon, uncordon
from blackstart.rescue.controller.runner_base import RunnerBase, now_utc
from blackstart.rescue.controller.standby import enable_standby, matched_labels, pick_standby
from blackstart.rescue.crd.plans import Step, format_time, parse_time, should_uncordon
from blackstart.rescue.wire.signal import parse_condition_message

__all__ = ["NodeSteps", "xids_from_boot"]


def xids_from_boot(condition_message: str | None, boot_id: str) -> list[int]:
    """The Xid codes on the node's condition reported from the boot ``boot_id``.

    A report names its boot in ``bootId``, or as the start of its id
    (``<bootID>:<position>``, the agent's format).
    """
    if not boot_id:
        return []
    found = []
    for report in parse_condition_message(condition_message):
        boot = str(report.get("bootId") or str(report.get("id", "")).partition(":")[0])
        if boot == boot_id:
            try:
                found.append(int(report.get("xid", -1)))
            except (TypeError, ValueError):
                continue
    return found


class NodeSteps(RunnerBase):
    """cordon, enableWarmStandby and unCordon."""

    async def _record_cordon_owner(self, someone_else: bool) -> None:
        if self.status.node_was_cordoned is not someone_else:
            self.status.node_was_cordoned = someone_else
            await self.ctx.persist(self.plan, before_acting=True)

    async def _cordon(self) -> bool:
        node = self._node()
        status = self.status
        cordoned_at = None
        if self.plan.dry_run:
            message = self._dry(f"cordon {node.name}")
        else:
            early = self.ctx.take_early_cordon(self.plan.name)
            if early is not None:
                cordoned_at = early.at
                self.ctx.remember(early.view)
                await self._record_cordon_owner(early.taken)
            else:
                try:
                    view = await cordon(self.ctx.api, node.name, self.plan.name)
                except CordonTaken as taken:
                    self.ctx.remember(taken.view)
                    await self._record_cordon_owner(True)
                else:
                    self.ctx.remember(view)
                    await self._record_cordon_owner(False)
            if status.node_was_cordoned:
                message = (
                    f"{node.name} was already cordoned by someone else; left as it is, and it "
                    "will not be uncordoned by this plan"
                )
            else:
                message = f"cordon {node.name}"
        now = cordoned_at or now_utc()
        status.cordoned_at = format_time(now)
        if not self.plan.dry_run and self.plan.source == "policy":
            first = parse_time(self.plan.first_seen_at)
            if first is not None:
                self.ctx.metrics.xid_to_cordon.observe(max(0.0, (now - first).total_seconds()))
        status.complete(Step.CORDON)
        self._enter("Cordoned", message)
        self._event("Cordoned", message)
        return True

    async def _standby(self) -> bool:
        status = self.status
        failed = self._node()
        if status.standby_node is None:
            choice = pick_standby(
                failed,
                self.ctx.all_nodes(),
                self.ctx.config.standby,
                self.ctx.claimed_standbys(),
                self.ctx.standby_policies(),
            )
            if choice is None:
                status.standby_missing = True
                status.complete(Step.STANDBY)
                status.message = f"no warm standby node is available to replace {failed.name}"
                self._event("NoWarmStandby", status.message, warning=True)
                return True
            status.standby_node = choice
            status.standby_labels = matched_labels(
                failed, self.ctx.rule_selector(self.plan), self.ctx.standby_policies()
            )
            await self.ctx.persist(self.plan, before_acting=True)  # the choice, before the swap
        assert status.standby_node is not None
        if not self.plan.dry_run:
            swapped = await enable_standby(
                self.ctx.api,
                status.standby_node,
                failed.name,
                status.standby_labels,
                self.ctx.config.standby,
                self.plan.name,
            )
            self.ctx.remember(swapped)
        status.complete(Step.STANDBY)
        labels = ", ".join(f"{k}={v}" for k, v in sorted(status.standby_labels.items()))
        message = self._dry(
            f"make warm standby {status.standby_node} schedulable in place of {failed.name}"
            + (f" with labels {labels}" if labels else "")
        )
        self._enter("Replaced", message)
        self._event("WarmStandbyEnabled", message)
        return True

    async def _uncordon(self) -> bool:
        status = self.status
        node = self._node()
        if not should_uncordon(status):
            status.complete(Step.UNCORDON)
            status.message = (
                f"{node.name} left cordoned: it was cordoned before the plan began (by an "
                "administrator or another tool); the controller never uncordons such a node"
            )
            self._event("LeftCordoned", status.message)
            return True
        if status.reboot_ordered_at and not self.plan.dry_run:
            rebooted = node.boot_id != (status.boot_id_before_reboot or "")
            fresh = xids_from_boot(node.xid_message, node.boot_id) if rebooted else []
            if fresh:
                codes = ", ".join(str(x) for x in sorted(set(fresh)))
                await self._fail(
                    f"{node.name} reported Xid {codes} after its reboot (boot {node.boot_id}); "
                    "it stays cordoned for a person to look at"
                )
                return False
        if not self.plan.dry_run:
            # recorded as done only once the API server took it: an uncordon lost to an
            # outage is tried again, not reported as done
            view = await uncordon(self.ctx.api, node.name, self.plan.name)
            if view is None:  # not our mark: uncordoned before a restart, or someone's cordon
                view = NodeView.from_object(await self.ctx.api.get_node(node.name))
            self.ctx.remember(view)
            if view.unschedulable:
                status.complete(Step.UNCORDON)
                status.message = (
                    f"{node.name} left cordoned: its cordon is no longer this plan's (someone "
                    "else cordoned it, or removed the plan's mark); it is left as it is"
                )
                self._event("LeftCordoned", status.message)
                return True
        status.complete(Step.UNCORDON)
        message = self._dry(f"uncordon {node.name}")
        self._enter("Uncordoned", message)
        self._event("Uncordoned", message)
        return True
