"""The validation gate: a check a node must pass after its reboot, before it is uncordoned.

A rule says (``validation``)::

    validation:
      image: nvcr.io/nvidia/cuda:12.4.1-base-ubuntu22.04
      command: ["nvidia-smi", "-q"]          # or a DCGM diagnostic: ["dcgmi", "diag", "-r", "1"]
      waittime: 5min                         # how long the check may take (default 10min)

The plan copies it (``spec.validation``). After the node is Ready under a new boot
ID, the controller runs a pod pinned to the node (``spec.nodeName``, tolerating
every taint, ``restartPolicy: Never``, ``activeDeadlineSeconds`` the waittime, owned
by the plan). The node is uncordoned only if the pod Succeeded; a pod that Failed,
or did not finish within the waittime, keeps the node cordoned with the reason in
the plan and a Warning Event, and the plan's reboot counts toward the reboot cap.

On a simulated fleet (KWOK) nothing runs in the pod: the pod stays Running until the
experiment sets its phase (Succeeded or Failed), which is how it controls the check.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from blackstart.names import RESCUE_API_VERSION, RESCUE_GROUP
from blackstart.rescue.crd.actions import PolicyError
from blackstart.rescue.crd.waittime import format_waittime, parse_waittime

__all__ = ["DEFAULT_VALIDATION_WAITTIME", "Validation", "validation_from_object", "validation_pod"]

DEFAULT_VALIDATION_WAITTIME = timedelta(minutes=10)
_MAX_COMMAND = 32


@dataclass(frozen=True)
class Validation:
    """The check: ``command`` in ``image``, within ``waittime``."""

    image: str
    command: tuple[str, ...]
    waittime: timedelta = DEFAULT_VALIDATION_WAITTIME

    def to_object(self) -> dict[str, Any]:
        return {
            "image": self.image,
            "command": list(self.command),
            "waittime": format_waittime(self.waittime),
        }


def validation_from_object(value: object, where: str = "validation") -> Validation:
    """Parse a rule's or a plan's ``validation``; :class:`PolicyError` names the field."""
    if not isinstance(value, Mapping):
        raise PolicyError(f"{where} must be an object, got {type(value).__name__}")
    image = value.get("image")
    if not isinstance(image, str) or not image or len(image) > 512:
        raise PolicyError(f"{where}.image must be an image reference of 1 to 512 characters")
    command = value.get("command")
    if (
        not isinstance(command, list | tuple)
        or not 1 <= len(command) <= _MAX_COMMAND
        or not all(isinstance(part, str) and len(part) <= 1024 for part in command)
    ):
        raise PolicyError(
            f"{where}.command must be a list of 1 to {_MAX_COMMAND} strings, "
            'e.g. ["nvidia-smi", "-q"]'
        )
    waittime = DEFAULT_VALIDATION_WAITTIME
    if value.get("waittime") is not None:
        try:
            waittime = parse_waittime(value["waittime"])
        except ValueError as err:
            raise PolicyError(f"{where}.waittime: {err}") from None
        if waittime <= timedelta(0):
            raise PolicyError(f"{where}.waittime must be longer than zero")
    return Validation(image=image, command=tuple(command), waittime=waittime)


def validation_pod_name(plan: str) -> str:
    """The check's pod for ``plan``: a DNS label, the same every time (a resumed plan finds it)."""
    return "rescue-validate-" + hashlib.sha256(plan.encode()).hexdigest()[:16]


def validation_pod(
    plan: str, plan_uid: str, node: str, namespace: str, check: Validation
) -> dict[str, Any]:
    """The pod that runs ``check`` on ``node`` for ``plan``."""
    owner = []
    if plan_uid:
        owner = [
            {
                "apiVersion": RESCUE_API_VERSION,
                "kind": "RescuePlan",
                "name": plan,
                "uid": plan_uid,
            }
        ]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": validation_pod_name(plan),
            "namespace": namespace,
            "labels": {
                "app.kubernetes.io/managed-by": "blackstart-rescue",
                f"{RESCUE_GROUP}/validates": node[:63],
            },
            "annotations": {f"{RESCUE_GROUP}/plan": plan},
            "ownerReferences": owner,
        },
        "spec": {
            "nodeName": node,  # past the scheduler: the node is cordoned
            "restartPolicy": "Never",
            "activeDeadlineSeconds": max(1, int(check.waittime.total_seconds())),
            "tolerations": [{"operator": "Exists"}],
            "containers": [{"name": "check", "image": check.image, "command": list(check.command)}],
        },
    }
