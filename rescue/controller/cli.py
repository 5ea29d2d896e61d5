"""``blackstart rescue controller`` and ``blackstart rescue install``.

``rescue controller`` runs the GPU self-heal controller as a process against any
kubeconfig (in a pod: its service account), kopf in-process, cluster-wide. The
decision API and the metrics server run in the same process.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import sys
from pathlib import Path

import click

from blackstart.rescue.env_options import with_env_options

__all__ = ["controller_command", "install_command"]

log = logging.getLogger("blackstart.rescue.controller.operator")


def _host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise click.BadParameter(
            f"{text!r} is not HOST:PORT, e.g. 127.0.0.1:8088", param_hint="--decision-api"
        )
    return host or "127.0.0.1", int(port)


def _duration(text: str, option: str) -> dt.timedelta:
    from blackstart.rescue.crd.waittime import parse_waittime

    try:
        return parse_waittime(text)
    except ValueError as err:
        raise click.BadParameter(str(err), param_hint=option) from None


@with_env_options
@click.command(name="controller")
@click.option("--kubeconfig", default=None, help="Kubeconfig (default: in-cluster, $KUBECONFIG).")
@click.option("--context", default=None, help="Kubeconfig context.")
@click.option(
    "--namespace",
    default="default",
    show_default=True,
    help="Namespace of the controller's Events (RescuePlans are cluster-scoped).",
)
@click.option("--dry-run", is_flag=True, help="Compute and record plans; change nothing.")
@click.option(
    "--reboot-driver",
    type=click.Choice(["local", "kind", "annotation", "webhook"]),
    default="local",
    show_default=True,
    help="How nodes are rebooted: KWOK stage (local), docker restart (kind), node annotation "
    "for the node's agent (annotation), or an HTTP POST (webhook).",
)
@click.option("--webhook-url", default=None, help="URL the webhook reboot driver POSTs to.")
@click.option(
    "--webhook-token-file",
    type=click.Path(dir_okay=False, exists=True),
    default=None,
    help="Bearer token for the reboot webhook.",
)
@click.option(
    "--max-concurrent-plans",
    type=click.IntRange(min=1),
    default=10,
    show_default=True,
    help="Storm guard: plans running at once.",
)
@click.option(
    "--max-unavailable-share",
    type=click.FloatRange(min=0.0, min_open=True, max=1.0),
    default=0.2,
    show_default=True,
    help="Storm guard: share of a rule's matching nodes held by the controller at once.",
)
@click.option(
    "--max-reporting-share",
    type=click.FloatRange(min=0.0, min_open=True, max=1.0),
    default=0.5,
    show_default=True,
    help="Storm guard: when more than this share of the GPU nodes reports Xids within 10 "
    "minutes, act on no node and alert (a mass event: a driver roll-out, a bad job).",
)
@click.option(
    "--reboot-cap",
    default="3/1day",
    show_default=True,
    metavar="N/WINDOW",
    help="At most N reboots of one node within WINDOW (e.g. 3/1day, 2/30min).",
)
@click.option(
    "--decision-api",
    default=None,
    metavar="HOST:PORT",
    help="Serve the third-party decision API here; plans then come only from its orders.",
)
@click.option(
    "--token-file",
    type=click.Path(dir_okay=False, exists=True),
    default=None,
    help="File holding the decision API's bearer token (required with --decision-api); "
    "read again whenever it changes.",
)
@click.option(
    "--tls-cert-file",
    type=click.Path(dir_okay=False, exists=True),
    default=None,
    help="PEM certificate (chain): serve the decision API over HTTPS (with --tls-key-file).",
)
@click.option(
    "--tls-key-file",
    type=click.Path(dir_okay=False, exists=True),
    default=None,
    help="PEM private key of --tls-cert-file.",
)
@click.option(
    "--metrics-port",
    type=click.IntRange(min=0, max=65535),
    default=None,
    help="Serve Prometheus metrics on this port (default: off).",
)
@click.option(
    "--metrics-host", default="127.0.0.1", show_default=True, help="Address of the metrics server."
)
@click.option(
    "--plans-ttl",
    default="7d",
    show_default=True,
    help="How long ended RescuePlans are kept (e.g. 7d, 12h).",
)
@click.option(
    "--max-report-age",
    default="6h",
    show_default=True,
    help="Xid reports older than this are ignored (at most --plans-ttl).",
)
@click.option(
    "--journal",
    type=click.Path(dir_okay=False),
    default=None,
    help="Append every plan transition to this file as JSON lines.",
)
@click.option(
    "--standby-label",
    default="blackstart.dev/standby=true",
    show_default=True,
    help="The label that marks warm standby nodes (key=value).",
)
@click.option(
    "--drain-unmanaged",
    type=click.Choice(["evict", "skip", "fail"]),
    default="fail",
    show_default=True,
    help="Pods no controller owns: fail the drain (as kubectl drain without --force), evict "
    'them (named in an Event), or leave them. A rule\'s drain opts in with force: "true".',
)
@click.option(
    "--drain-emptydir",
    type=click.Choice(["evict", "skip", "fail"]),
    default="fail",
    show_default=True,
    help="Pods with emptyDir volumes (their data is lost): fail the drain (as kubectl drain "
    "without --delete-emptydir-data), evict, or leave them. A rule's drain opts in with "
    'deleteEmptyDirData: "true".',
)
@click.option(
    "--qps",
    type=click.FloatRange(min=0.1),
    default=50.0,
    show_default=True,
    help="Most API requests per second (besides kopf's watches). The default is "
    "kube-scheduler's own, a rate every API server takes; cordons go first, then what moves "
    "plans on, then records and Events.",
)
@click.option(
    "--burst",
    type=click.IntRange(min=1),
    default=100,
    show_default=True,
    help="Requests that may go at once after a quiet spell (kube-scheduler's default).",
)
@click.option(
    "--drain-retry-seconds",
    type=click.FloatRange(min=0.1),
    default=2.0,
    show_default=True,
    help="Seconds between rounds of a drain (evictions refused by a PodDisruptionBudget).",
)
@click.option(
    "--local-boot-seconds",
    type=click.FloatRange(min=0.0),
    default=2.0,
    show_default=True,
    help="local reboot driver: seconds a node stays NotReady.",
)
@click.option(
    "--leader-elect/--no-leader-elect",
    default=True,
    show_default=True,
    help="Act only while holding the Lease blackstart-rescue-controller in --namespace, so "
    "of several replicas one acts; the others wait.",
)
@click.option(
    "--leader-lease-seconds",
    type=click.FloatRange(min=1.0),
    default=15.0,
    show_default=True,
    help="How long a Lease not renewed stays its holder's; a holder that could not renew it "
    "for 2/3 of that (an API-server outage) stops acting and waits for the Lease again.",
)
@click.option("-v", "--verbose", is_flag=True, help="Log kopf's and the client's details.")
def controller_command(
    kubeconfig: str | None,
    context: str | None,
    namespace: str,
    dry_run: bool,
    reboot_driver: str,
    webhook_url: str | None,
    webhook_token_file: str | None,
    max_concurrent_plans: int,
    max_unavailable_share: float,
    max_reporting_share: float,
    reboot_cap: str,
    decision_api: str | None,
    token_file: str | None,
    tls_cert_file: str | None,
    tls_key_file: str | None,
    metrics_port: int | None,
    metrics_host: str,
    plans_ttl: str,
    max_report_age: str,
    journal: str | None,
    standby_label: str,
    drain_unmanaged: str,
    drain_emptydir: str,
    qps: float,
    burst: int,
    drain_retry_seconds: float,
    local_boot_seconds: float,
    leader_elect: bool,
    leader_lease_seconds: float,
    verbose: bool,
) -> None:
    """Run the GPU self-heal controller: Xid signals in, RescuePlans carried out.

    It watches the nodes' GPUXidError conditions (written by `blackstart rescue
    agent`) and the RescuePolicies, and for each incident makes a RescuePlan
    (cordon, drain, reboot, enableWarmStandby, unCordon) that it carries out and
    records; a restarted controller resumes its plans. The storm guard caps how
    much of the fleet is remediated at once. With --decision-api it acts only on
    orders posted over HTTP. Needs the CRDs: `blackstart rescue install` first.

    \b
    Examples:
      blackstart rescue controller --kubeconfig kc.yaml --metrics-port 9470
      blackstart rescue controller --dry-run --journal plans.jsonl
      blackstart rescue controller --decision-api 127.0.0.1:8088 --token-file token
    """
    from blackstart.rescue.controller.config import ControllerConfig
    from blackstart.rescue.controller.drain import DrainOptions
    from blackstart.rescue.controller.storm_guard import StormGuard, parse_reboot_cap

    logging.basicConfig(
        stream=sys.stderr,
        level=logging.INFO,
        format="%(asctime)s rescue-controller %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("kopf").setLevel(logging.INFO if verbose else logging.WARNING)
    try:
        cap, window = parse_reboot_cap(reboot_cap)
    except ValueError as err:
        raise click.BadParameter(str(err), param_hint="--reboot-cap") from None
    address = _host_port(decision_api) if decision_api else None
    from blackstart.rescue.controller.decision_api import TokenFile, server_tls

    token = None
    tls = None
    if bool(tls_cert_file) != bool(tls_key_file):
        raise click.UsageError("give --tls-cert-file and --tls-key-file together, or neither")
    if address is not None:
        if not token_file:
            raise click.UsageError("--decision-api needs --token-file (the bearer token)")
        try:
            token = TokenFile(token_file)
            if tls_cert_file and tls_key_file:
                tls = server_tls(tls_cert_file, tls_key_file)
        except ValueError as err:
            raise click.UsageError(str(err)) from None
    webhook_token = Path(webhook_token_file).read_text().strip() if webhook_token_file else None
    try:
        config = ControllerConfig(
            namespace=namespace,
            dry_run=dry_run,
            decision_api=address is not None,
            storm_guard=StormGuard(
                max_concurrent_plans=max_concurrent_plans,
                max_unavailable_share=max_unavailable_share,
                max_reporting_share=max_reporting_share,
                reboot_cap=cap,
                reboot_window=window,
            ),
            reboot_driver=reboot_driver,
            webhook_url=webhook_url,
            webhook_token=webhook_token,
            plans_ttl=_duration(plans_ttl, "--plans-ttl"),
            max_report_age=_duration(max_report_age, "--max-report-age"),
            standby_label=standby_label,
            drain=DrainOptions(unmanaged=drain_unmanaged, emptydir=drain_emptydir),  # type: ignore[arg-type]
            qps=qps,
            burst=burst,
            drain_retry_seconds=drain_retry_seconds,
            local_boot_seconds=local_boot_seconds,
        )
    except ValueError as err:
        raise click.UsageError(str(err)) from None
    if reboot_driver == "webhook" and not webhook_url:
        raise click.UsageError("--reboot-driver webhook needs --webhook-url")
    from blackstart.rescue.controller.process import run_controller

    asyncio.run(
        run_controller(
            config,
            kubeconfig,
            context,
            metrics_host,
            metrics_port,
            address,
            token,
            journal,
            tls=tls,
            lease_seconds=leader_lease_seconds if leader_elect else None,
        )
    )


@click.command(name="install")
@click.option("--kubeconfig", default=None, help="Kubeconfig of a cluster admin.")
@click.option("--context", default=None, help="Kubeconfig context.")
@click.option(
    "--local-reboot-driver",
    is_flag=True,
    help="Also let the controller patch nodes/status: only its local reboot driver "
    "(KWOK nodes) needs that; never on real nodes.",
)
def install_command(kubeconfig: str | None, context: str | None, local_reboot_driver: bool) -> None:
    """Apply the rescue CRDs and the controller's and agent's RBAC to a cluster.

    Server-side apply of rescue/deploy/crds.yaml, controller-rbac.yaml and
    agent-rbac.yaml; waits until the CRDs are Established. Run it as a cluster
    admin before the first `blackstart rescue controller`; running it again
    updates them.
    """
    from blackstart.rescue.controller.process import controller_api_client
    from blackstart.rescue.install import install

    try:
        applied = install(
            controller_api_client(kubeconfig, context),
            progress=lambda m: click.echo(m, err=True),
            local_reboot=local_reboot_driver,
        )
    except Exception as err:
        raise click.ClickException(f"install failed: {err}") from err
    click.echo(f"installed {len(applied)} objects")
