"""The controller process: log in, hold the Lease, serve the decision API and metrics,
run kopf with the :class:`~blackstart.rescue.controller.operator.Controller`.

``blackstart rescue controller`` (:mod:`.cli`) parses the options and calls
:func:`run_controller`.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Any

import click

__all__ = ["controller_api_client", "run_controller"]

log = logging.getLogger("blackstart.rescue.controller.operator")


def controller_api_client(kubeconfig: str | None, context: str | None, pool_size: int = 16) -> Any:
    """The controller's API client (in-cluster or kubeconfig); a bad kubeconfig is a usage error."""
    from blackstart.kube import KubeconfigError, process_api_client

    try:
        return process_api_client(kubeconfig, context, pool_size=pool_size, timeout=30.0)
    except KubeconfigError as err:
        raise click.ClickException(str(err)) from err


async def run_controller(
    config: Any,
    kubeconfig: str | None,
    context: str | None,
    metrics_host: str,
    metrics_port: int | None,
    decision_api: tuple[str, int] | None,
    token: Any,
    journal: str | None,
    tls: Any = None,
    lease_seconds: float | None = 15.0,
) -> None:
    """Run the controller until SIGTERM/SIGINT (kopf handles the signals).

    With ``lease_seconds`` (leader election, :mod:`.leader`) it first waits to hold the
    Lease; when it cannot renew it (an API-server outage longer than the renew
    deadline, a partition) it stops acting at once, then waits for the Lease again
    and starts over from what the API server holds: nothing acts twice, and it is
    back as soon as the API server is, with no process restart and its back-off.
    """
    from blackstart.rescue.controller.journal import Journal
    from blackstart.rescue.controller.kube_api import KubeApi
    from blackstart.rescue.controller.leader import LeaderElection
    from blackstart.rescue.controller.metrics import ControllerMetrics
    from blackstart.rescue.controller.operator import Controller

    metrics = ControllerMetrics()
    if metrics_port is not None:
        metrics.serve(metrics_port, metrics_host)
        log.info("metrics on http://%s:%d/metrics", metrics_host, metrics_port)
    api = KubeApi(
        controller_api_client(kubeconfig, context, pool_size=max(16, config.burst)),
        metrics,
        qps=config.qps,
        burst=config.burst,
    )
    elector = None
    if lease_seconds is not None:
        elector = LeaderElection(
            api,
            config.namespace,
            lease_seconds=lease_seconds,
            renew_seconds=lease_seconds * 2 / 3,
            retry_seconds=max(0.2, lease_seconds / 7.5),
        )
    while True:
        # a fresh controller each term: what it knows comes from the API server, as after a
        # process restart, but without the restart's back-off (a crash-looping controller
        # comes back minutes after the API server does)
        controller = Controller(config, api, metrics, Journal(journal))
        if elector is not None:
            metrics.leader.set(0)
            # a standby replica waits here (no watches, no actions); a SIGTERM while it
            # waits, or just after it won, ends it cleanly, the Lease given up (kopf takes
            # the signals over once it runs)
            if not await _acquire_or_stop(elector):
                await elector.release()
                return
        if not await _one_term(controller, kubeconfig, context, metrics, elector, decision_api,
                               token, tls):  # fmt: skip
            return
        log.warning("stopped acting: waiting for the Lease again")


async def _one_term(
    controller: Any,
    kubeconfig: str | None,
    context: str | None,
    metrics: Any,
    elector: Any,
    decision_api: tuple[str, int] | None,
    token: Any,
    tls: Any,
) -> bool:
    """Act until stopped (False) or until the Lease could not be renewed (True)."""
    import kopf
    from kopf._core.engines.peering import Identity  # kopf exports no public name for it

    from blackstart.rescue.controller.decision_api import start_decision_api
    from blackstart.rescue.controller.kopf_wiring import build_registry
    from blackstart.rescue.controller.leader import default_identity

    metrics.leader.set(1)
    runner = None
    if decision_api is not None:
        assert token is not None
        runner = await start_decision_api(controller, token, metrics, *decision_api, tls=tls)
        scheme = "https" if tls is not None else "http"
        log.info("decision API on %s://%s:%d/v1/rescue-actions", scheme, *decision_api)
    stop = asyncio.Event()
    operator = asyncio.create_task(
        kopf.operator(
            registry=build_registry(controller, kubeconfig, context),
            standalone=True,
            clusterwide=True,
            stop_flag=stop,
            # given, not detected: kopf would ask getpass for a user name, which fails
            # for a container user that /etc/passwd does not list (runAsUser: 65532)
            identity=Identity(elector.identity if elector is not None else default_identity()),
        )
    )
    keeper = asyncio.create_task(elector.keep()) if elector is not None else None
    lost: BaseException | None = None
    try:
        waiting = {operator} if keeper is None else {operator, keeper}
        done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        if keeper is not None and keeper in done:
            lost = keeper.exception()
            log.error("%s", lost)
            metrics.leader.set(0)
            stop.set()
        await operator
    finally:
        if keeper is not None:
            keeper.cancel()
        if runner is not None:
            await runner.cleanup()
        if elector is not None and lost is None:
            await elector.release()
    return lost is not None


async def _acquire_or_stop(elector: Any) -> bool:
    """Wait for the Lease; False when SIGTERM or SIGINT came first."""
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    handled = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stopping.set)
            handled.append(sig)
        except (NotImplementedError, RuntimeError):  # not the main thread
            pass
    acquiring = asyncio.create_task(elector.acquire())
    stop_waiter = asyncio.create_task(stopping.wait())
    try:
        await asyncio.wait({acquiring, stop_waiter}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for sig in handled:
            loop.remove_signal_handler(sig)
        stop_waiter.cancel()
    if stopping.is_set():
        acquiring.cancel()
        log.info("stopping before acting: a signal came while waiting for the Lease")
        return False
    acquiring.result()
    return True
