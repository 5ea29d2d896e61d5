"""The validation gate before uncordon (:mod:`blackstart.rescue.crd.validation`).

The check's pod name is recorded before the pod is made (``status.validationJob``),
so a resumed plan waits for the same pod rather than starting another. The node is
uncordoned only after the pod Succeeded; a pod that Failed, or did not finish within
the validation's waittime (plus a minute for the kubelet to report), fails the plan:
the node stays cordoned, the reason is in the plan and a Warning Event.
"""

from __future__ import annotations

import asyncio
import datetime as dt

from kubernetes.client.exceptions import ApiException

from blackstart.rescue.controller.runner_base import RunnerBase, now_utc
from blackstart.rescue.crd.plans import Step, parse_time
from blackstart.rescue.crd.validation import validation_pod, validation_pod_name
from blackstart.rescue.crd.waittime import format_waittime

__all__ = ["ValidateStep"]

_REPORT_GRACE = dt.timedelta(minutes=1)
_POLL_SECONDS = 1.0


class ValidateStep(RunnerBase):
    """validate."""

    async def _validate(self) -> bool:
        check = self.plan.validation
        status = self.status
        node = self._node()
        assert check is not None
        namespace = self.ctx.config.namespace
        if self.plan.dry_run:
            status.complete(Step.VALIDATE)
            self._enter(
                "Validating", self._dry(f"check {node.name} with {' '.join(check.command)}")
            )
            return True
        if status.validation_job is None:
            status.validation_job = validation_pod_name(self.plan.name)
            self._enter(
                "Validating",
                f"checking {node.name} before it returns to service: {' '.join(check.command)} "
                f"in {check.image} (pod {namespace}/{status.validation_job}, up to "
                f"{format_waittime(check.waittime)})",
            )
            await self.ctx.persist(self.plan, before_acting=True)  # one check, also on resume
        started = parse_time(status.transitions[-1]["time"]) if status.transitions else None
        deadline = (started or now_utc()) + check.waittime + _REPORT_GRACE
        body = validation_pod(self.plan.name, self.plan.uid, node.name, namespace, check)
        try:
            await self.ctx.api.create_pod(namespace, body)
        except ApiException as err:
            if err.status != 409:  # 409: made before a restart, wait for it
                raise
        while True:
            pod = await self.ctx.api.get_pod(namespace, status.validation_job)
            phase = (pod.get("status") or {}).get("phase")
            if phase == "Succeeded":
                break
            if phase == "Failed" or now_utc() >= deadline:
                why = (pod.get("status") or {}).get("reason") or (
                    "failed" if phase == "Failed" else "did not finish in time"
                )
                await self._fail(
                    f"{node.name} failed its check before uncordon ({' '.join(check.command)}, "
                    f"pod {namespace}/{status.validation_job}: {why}); it stays cordoned, and "
                    "the reboot counts toward the reboot cap"
                )
                return False
            await asyncio.sleep(_POLL_SECONDS)
        status.complete(Step.VALIDATE)
        status.message = f"{node.name} passed its check ({' '.join(check.command)})"
        self._event("NodeValidated", status.message)
        return True
