"""Leader election: a ``coordination.k8s.io`` Lease, so only one controller acts.

Two replicas of the controller (a roll-out, a partitioned old pod that still runs)
would each cordon, drain and reboot: two plans, two reboots. Each replica tries to
hold the Lease ``blackstart-rescue-controller`` in the controller's namespace; only
the holder starts its watches and acts, the others wait (and serve their metrics,
``..._leader`` 0).

As client-go's leader election does: the holder renews the Lease every
``retry_seconds``, with one write of the Lease as its last write returned it (no
read first: a conflict, 409, means someone else wrote it, and only then is it read
and decided again), so holding the Lease costs one request per ``retry_seconds``;
a replica takes the Lease over only once it has seen the Lease unchanged for
``lease_seconds`` (its own clock, so clocks that disagree do not matter); every
write carries the ``resourceVersion`` read, so two replicas cannot both win. A
holder that could not renew for ``renew_seconds`` (less than ``lease_seconds``)
stops acting before anyone else may start; a holder that stops
cleanly gives the Lease up at once.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import socket
import time
import uuid
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from blackstart.rescue.controller.kube_api import KubeApi

__all__ = ["LEASE_NAME", "LeaderElection", "LostLeadership", "default_identity"]

LEASE_NAME = "blackstart-rescue-controller"

log = logging.getLogger("blackstart.rescue.controller.leader")


class LostLeadership(RuntimeError):
    """The Lease could not be renewed in time: this replica must stop acting."""


def default_identity() -> str:
    """``<host>_<pid>_<random>``: unique per process, readable in the Lease."""
    return f"{socket.gethostname()}_{os.getpid()}_{uuid.uuid4().hex[:8]}"


def _micro_time(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElection:
    """Acquire, renew and release the controller's Lease."""

    def __init__(
        self,
        api: KubeApi,
        namespace: str,
        identity: str | None = None,
        name: str = LEASE_NAME,
        lease_seconds: float = 15.0,
        renew_seconds: float = 10.0,
        retry_seconds: float = 2.0,
    ) -> None:
        if not 0 < retry_seconds < renew_seconds < lease_seconds:
            raise ValueError(
                "leader election needs retry < renew deadline < lease duration, got "
                f"{retry_seconds} s, {renew_seconds} s, {lease_seconds} s"
            )
        self.api = api
        self.coordination = client.CoordinationV1Api(api.api_client)
        self.namespace = namespace
        self.identity = identity or default_identity()
        self.name = name
        self.lease_seconds = lease_seconds
        self.renew_seconds = renew_seconds
        self.retry_seconds = retry_seconds
        self._observed: tuple[Any, ...] | None = None
        self._observed_at = 0.0
        self._renewed_at = 0.0
        self._written: dict[str, Any] | None = None  # the Lease as our last write returned it
        self.is_leader = False

    async def acquire(self) -> None:
        """Return once this replica holds the Lease (waits as long as another holds it)."""
        announced = False
        while True:
            try:
                if await self._try():
                    break
            except Exception as err:  # the API server away, or no permission yet: try again
                log.warning("could not read or take the Lease %s: %s", self.name, err)
                await asyncio.sleep(self.retry_seconds)
                continue
            if not announced:
                log.info(
                    "waiting for the Lease %s/%s (held by another controller)",
                    self.namespace,
                    self.name,
                )
                announced = True
            await asyncio.sleep(self.retry_seconds)
        log.info("holding the Lease %s/%s as %s", self.namespace, self.name, self.identity)

    async def keep(self) -> None:
        """Renew the Lease until cancelled; raise :class:`LostLeadership` when it cannot."""
        while True:
            await asyncio.sleep(self.retry_seconds)
            try:
                renewed = await self._try()
            except Exception as err:
                log.warning("could not renew the Lease %s: %s", self.name, err)
                renewed = False
            if not renewed and time.monotonic() - self._renewed_at >= self.renew_seconds:
                self.is_leader = False
                raise LostLeadership(
                    f"the Lease {self.namespace}/{self.name} was not renewed for "
                    f"{self.renew_seconds:.0f} s: stopping, another controller may take over"
                )

    async def release(self) -> None:
        """Give the Lease up (a clean stop): the next replica need not wait it out."""
        if not self.is_leader:
            return
        self.is_leader = False
        self._written = None
        try:
            lease = await self._get()
            if lease is None or lease["spec"].get("holderIdentity") != self.identity:
                return
            lease["spec"].update(holderIdentity=None, leaseDurationSeconds=1)
            await self._replace(lease)
        except Exception as err:
            log.warning("could not give the Lease %s up: %s", self.name, err)

    # --- one round ------------------------------------------------------------------------

    async def _get(self) -> dict[str, Any] | None:
        try:
            lease: dict[str, Any] = await self.api.call(
                "get",
                self.coordination.read_namespaced_lease,
                self.name,
                self.namespace,
                retry=False,
            )
        except ApiException as err:
            if err.status == 404:
                return None
            raise
        return lease

    async def _create(self, body: dict[str, Any]) -> None:
        self._written = await self.api.call(
            "create", self.coordination.create_namespaced_lease, self.namespace, body, retry=False
        )

    async def _replace(self, lease: dict[str, Any]) -> None:
        """Write ``lease`` back; its ``resourceVersion`` makes it fail (409) if it changed."""
        self._written = None
        self._written = await self.api.call(
            "update",
            self.coordination.replace_namespaced_lease,
            self.name,
            self.namespace,
            lease,
            retry=False,
        )

    def _spec(self, transitions: int, acquired: str | None) -> dict[str, Any]:
        now = _micro_time(dt.datetime.now(dt.UTC))
        return {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": max(1, round(self.lease_seconds)),
            "acquireTime": acquired or now,
            "renewTime": now,
            "leaseTransitions": transitions,
        }

    async def _renew_as_written(self) -> bool:
        """Renew the Lease we hold with one write, from what our last write returned;
        False when that is not known or someone wrote the Lease since (409)."""
        written = self._written
        if not self.is_leader or written is None:
            return False
        spec = written.get("spec") or {}
        if spec.get("holderIdentity") != self.identity:
            return False
        now = time.monotonic()
        renewed = {
            **written,
            "spec": self._spec(int(spec.get("leaseTransitions") or 0), spec.get("acquireTime")),
        }
        try:
            await self._replace(renewed)
        except ApiException as err:
            if err.status == 409:
                return False  # changed since our write: read it and decide again
            raise
        return self._won(now)

    async def _try(self) -> bool:
        """One round: create, renew or take over the Lease; True when this replica holds it."""
        if await self._renew_as_written():
            return True
        lease = await self._get()
        now = time.monotonic()
        if lease is None:
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": self.name, "namespace": self.namespace},
                "spec": self._spec(0, None),
            }
            try:
                await self._create(body)
            except ApiException as err:
                if err.status == 409:
                    return False  # another replica made it first
                raise
            return self._won(now)
        spec = lease.get("spec") or {}
        holder = spec.get("holderIdentity")
        record = (holder, spec.get("renewTime"), spec.get("leaseDurationSeconds"))
        if record != self._observed:
            self._observed, self._observed_at = record, now
        duration = float(spec.get("leaseDurationSeconds") or self.lease_seconds)
        ours = holder == self.identity
        if not ours and holder and now - self._observed_at < duration:
            self.is_leader = False
            return False  # held, and renewed within its duration as far as we have seen
        transitions = int(spec.get("leaseTransitions") or 0) + (0 if ours else 1)
        lease["spec"] = self._spec(transitions, spec.get("acquireTime") if ours else None)
        try:
            await self._replace(lease)
        except ApiException as err:
            if err.status == 409:
                return False  # someone wrote it since our read
            raise
        return self._won(now)

    def _won(self, now: float) -> bool:
        if not self.is_leader:
            self.is_leader = True
        self._renewed_at = now
        return True
