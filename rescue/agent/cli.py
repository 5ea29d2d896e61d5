"""``blackstart rescue agent``: run the GPU Xid node agent as a process.

Three ways to say which kernel logs to read:

- ``--kmsg``: a real node's ``/dev/kmsg`` (the DaemonSet); the node is
  ``--node-name`` or ``$NODE_NAME``;
- ``--cluster NAME``: every GPU and standby node of a local blackstart cluster,
  each from its kernel log file, with the cluster's ``blackstart:rescue-agent``
  identity;
- ``--node NAME=LOGFILE`` (repeatable): any node with a text log file.
"""

from __future__ import annotations

import logging
import os
import shlex
import signal
import sys
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

import click

from blackstart.rescue.agent.host_reboot import DEFAULT_REBOOT_COMMAND
from blackstart.rescue.env_options import with_env_options

if TYPE_CHECKING:
    from kubernetes import client

    from blackstart.rescue.agent.node_agent import NodeLog

__all__ = ["RESCUE_AGENT_USER", "agent_command", "cluster_node_logs"]

RESCUE_AGENT_USER = "blackstart:rescue-agent"
NODE_NAME_ENV = "NODE_NAME"


def cluster_node_logs(cluster: str, cache: Path | None = None) -> tuple[list[NodeLog], str, Path]:
    """The kernel logs, agent kubeconfig and default state dir of local cluster ``cluster``.

    Every node with a kernel log file (the GPU and standby nodes) is served;
    no API call is made to find them.
    """
    from blackstart.clusters.state import load_state
    from blackstart.rescue.agent.node_agent import NodeLog

    state = load_state(cluster, cache)
    if not state.kernel_log_dir:
        raise click.ClickException(f"cluster {cluster} has no kernel log folder in its state")
    # the simulated nodes' kernel stamps count from the cluster's creation (see inject_xid)
    logs = [
        NodeLog(node=path.stem, path=str(path), boot_time=state.created_at or None)
        for path in sorted(Path(state.kernel_log_dir).glob("*.log"))
    ]
    if not logs:
        raise click.ClickException(
            f"cluster {cluster} has no node kernel logs in {state.kernel_log_dir}"
        )
    return (
        logs,
        state.identity_kubeconfig(RESCUE_AGENT_USER),
        Path(state.state_dir) / "rescue-agent",
    )


def default_senders(nodes: int) -> int:
    """Sender threads for an agent serving ``nodes``: one per 16 nodes up to 8, and past
    1,024 nodes one per 128 up to 64.

    On this 2-core machine (bench/rescue_latency.py, 2026-12-02): 64 senders made 50
    Xids on 1,000 nodes slower than 8 (p50 1.10 to 1.22 s against 0.73 to 0.92 s: the
    controller and the API server took the burst all at once on the same two cores),
    but 1,000 Xids on 10,000 nodes faster (line written to condition seen p99 25.6 s
    against 73.1 s, once the controller no longer weighed every admission against
    the whole fleet).
    """
    small = min(8, -(-nodes // 16))
    large = min(64, -(-nodes // 128)) if nodes > 1024 else 0
    return max(1, small, large)


def _parse_pairs(values: tuple[str, ...], option: str) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for value in values:
        name, sep, rest = value.partition("=")
        if not sep or not name or not rest:
            raise click.BadParameter(f"{value!r} is not NAME=VALUE", param_hint=option)
        if name in pairs:
            raise click.BadParameter(f"node {name} is given twice", param_hint=option)
        pairs[name] = rest
    return pairs


def _boot_times(pairs: dict[str, str]) -> dict[str, float]:
    times = {}
    for node, value in pairs.items():
        try:
            times[node] = float(value)
        except ValueError:
            raise click.BadParameter(
                f"{node}={value}: the boot time is seconds since the epoch, e.g. 1795000000",
                param_hint="--boot-time",
            ) from None
    return times


def _api(kubeconfig: str | None, context: str | None, connections: int = 4) -> client.ApiClient:
    """An ApiClient without client-side retries: the agent backs off on its own."""
    from blackstart.kube import KubeconfigError, process_api_client

    try:
        return process_api_client(kubeconfig, context, pool_size=connections, timeout=10.0)
    except KubeconfigError as err:
        raise click.ClickException(str(err)) from err


@with_env_options
@click.command(name="agent")
@click.option(
    "--kubeconfig",
    default=None,
    help="Kubeconfig to use (default: in-cluster, "
    "$KUBECONFIG, ~/.kube/config; with --cluster the cluster's rescue-agent identity).",
)
@click.option("--context", default=None, help="Kubeconfig context.")
@click.option(
    "--node",
    "nodes",
    multiple=True,
    metavar="NAME=LOGFILE",
    help="Serve node NAME, reading its kernel log from the text file LOGFILE. Repeatable.",
)
@click.option(
    "--boot-id",
    "boot_ids",
    multiple=True,
    metavar="NAME=BOOTID",
    help="The boot id of a --node (default: the Node's status.nodeInfo.bootID). Repeatable.",
)
@click.option(
    "--cluster",
    default=None,
    help="Serve every GPU and standby node of this local blackstart cluster.",
)
@click.option("--kmsg", is_flag=True, help="Read this host's /dev/kmsg (the agent on a real node).")
@click.option(
    "--kmsg-path", default="/dev/kmsg", show_default=True, help="The kmsg device to read."
)
@click.option(
    "--node-name",
    default=lambda: os.environ.get(NODE_NAME_ENV),
    show_default=f"${NODE_NAME_ENV}",
    help="The node --kmsg reads the log of.",
)
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Where the cursors and the spool live (default: <cluster state>/rescue-agent with "
    "--cluster, else <cache>/rescue-agent).",
)
@click.option(
    "--max-rps",
    type=click.FloatRange(min=0.1),
    default=5.0,
    show_default=True,
    help="Most API requests per second this process makes.",
)
@click.option(
    "--burst-window",
    type=click.FloatRange(min=0.0),
    default=0.05,
    show_default=True,
    help="Seconds without a new Xid on a node that end a burst, at least --poll-interval. "
    "The first lines of a burst on a quiet node are written at once; lines read within this "
    "window after them are its tail, written once when the burst is quiet for a window.",
)
@click.option(
    "--poll-interval",
    type=click.FloatRange(min=0.01),
    default=0.05,
    show_default=True,
    help="Seconds between reads of each log (a read of a log that did not grow is one stat, "
    "or one read of /dev/kmsg). A burst spans at least this long.",
)
@click.option(
    "--backoff-cap",
    type=click.FloatRange(min=0.1),
    default=10.0,
    show_default=True,
    help="Longest wait between retries when the API server fails.",
)
@click.option(
    "--metrics-port",
    type=click.IntRange(min=0, max=65535),
    default=None,
    help="Serve Prometheus metrics on this port (0: any free port, printed). Default: off.",
)
@click.option(
    "--metrics-address",
    default="127.0.0.1",
    show_default=True,
    help="Address the metrics server listens on.",
)
@click.option(
    "--from-end/--from-start",
    default=True,
    show_default=True,
    help="With no saved read position (a first start, a wiped or corrupt state), skip what "
    "the logs already hold (--from-end), or report it all as new (--from-start).",
)
@click.option(
    "--min-write-interval",
    type=click.FloatRange(min=0.0),
    default=10.0,
    show_default=True,
    help="Seconds between two API writes for one node (the first after a quiet spell goes at "
    "once): a steady Xid stream costs one write per node per interval.",
)
@click.option(
    "--senders",
    type=click.IntRange(min=1, max=64),
    default=None,
    help="Threads that write to the API server in parallel, each for its share of the nodes "
    "(one budget, --max-rps, for all). Default: 1 for one node; with many (--cluster, "
    "repeated --node) one per 16 nodes up to 8, past 1,024 nodes one per 128 up to 64, so a "
    "burst on many simulated nodes is written in parallel as their own agents would.",
)
@click.option(
    "--prefetch/--no-prefetch",
    default=True,
    show_default=True,
    help="Read each node once at start, while no Xid is due (its condition and boot id), so "
    "a first Xid costs one write instead of a read and a write. One GET per node served, "
    "within --max-rps.",
)
@click.option(
    "--boot-time",
    "boot_times",
    multiple=True,
    metavar="NAME=EPOCH",
    help="When a --node booted (seconds since the epoch): what seconds-since-boot stamps in "
    "its log count from. Repeatable.",
)
@click.option(
    "--event-namespace", default="default", show_default=True, help="Namespace of the Events."
)
@click.option(
    "--host-reboot",
    is_flag=True,
    help="Reboot this host when the controller's annotation driver asks for it "
    "(rescue.blackstart.dev/reboot-requested on this node, for a plan that waits for this "
    "boot to end). Only with one node (--kmsg, or a single --node); needs hostPID and a "
    "privileged container in a pod.",
)
@click.option(
    "--reboot-command",
    default=" ".join(DEFAULT_REBOOT_COMMAND),
    show_default=True,
    help="The command --host-reboot runs (split like a shell would).",
)
@click.option("-v", "--verbose", is_flag=True, help="Log every request, not only Xids and errors.")
def agent_command(
    kubeconfig: str | None,
    context: str | None,
    nodes: tuple[str, ...],
    boot_ids: tuple[str, ...],
    cluster: str | None,
    kmsg: bool,
    kmsg_path: str,
    node_name: str | None,
    state_dir: str | None,
    max_rps: float,
    burst_window: float,
    poll_interval: float,
    backoff_cap: float,
    metrics_port: int | None,
    metrics_address: str,
    from_end: bool,
    min_write_interval: float,
    senders: int | None,
    prefetch: bool,
    boot_times: tuple[str, ...],
    event_namespace: str,
    host_reboot: bool,
    reboot_command: str,
    verbose: bool,
) -> None:
    """Watch kernel logs for NVIDIA Xid errors and report them on the Node.

    For every burst of Xids on a node the agent writes a Warning Event (reason
    XidError) and the node condition GPUXidError, whose message lists the last
    20 Xids as JSON: what the rescue controller acts on. Xids seen while the API
    server is unreachable are kept in a spool under --state-dir and reported
    when it answers again, once each; the read position survives restarts.

    It makes no LIST calls; once it has read each node at start (--prefetch) it makes
    no requests at all while no Xid comes; at most
    --max-rps requests per second, backing off with jitter on 429, 5xx and
    connection errors. Stop it with SIGTERM or Ctrl-C.

    \b
    Examples:
      blackstart rescue agent --cluster blackstart --metrics-port 9469
      blackstart rescue agent --node gpu-0=/tmp/gpu-0.log --kubeconfig kc.yaml
      NODE_NAME=$(hostname) blackstart rescue agent --kmsg --state-dir /var/lib/blackstart
    """
    from blackstart.paths import cache_dir
    from blackstart.rescue.agent.node_agent import AgentMetrics, AgentOptions, NodeLog, XidAgent

    logging.basicConfig(
        stream=sys.stderr,
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s rescue-agent %(levelname)s %(message)s",
    )
    sources = sum(1 for given in (bool(nodes), bool(cluster), kmsg) if given)
    if sources != 1:
        raise click.UsageError("give exactly one of --node NAME=LOGFILE, --cluster NAME, --kmsg")
    if host_reboot and cluster:
        raise click.UsageError(
            "--host-reboot reboots the host the agent runs on: never with --cluster (the "
            "simulated nodes of a local cluster all share this host)"
        )

    logs: list[NodeLog]
    # the main CLI's --cache-dir, when the command runs as `blackstart rescue agent`
    cache: Path = getattr(click.get_current_context().find_root().obj, "cache", None) or cache_dir()
    default_state = cache / "rescue-agent"
    if cluster:
        try:
            logs, cluster_kubeconfig, default_state = cluster_node_logs(cluster, cache)
        except LookupError as err:
            raise click.ClickException(str(err)) from err
        kubeconfig = kubeconfig or cluster_kubeconfig
    elif kmsg:
        if not node_name:
            raise click.UsageError(f"--kmsg needs --node-name or ${NODE_NAME_ENV}")
        logs = [NodeLog(node=node_name, path=kmsg_path, kind="kmsg")]
    else:
        boots = _parse_pairs(boot_ids, "--boot-id")
        pairs = _parse_pairs(nodes, "--node")
        times = _boot_times(_parse_pairs(boot_times, "--boot-time"))
        for option, given in (("--boot-id", boots), ("--boot-time", times)):
            unknown = sorted(set(given) - set(pairs))
            if unknown:
                raise click.BadParameter(f"no --node for {', '.join(unknown)}", param_hint=option)
        logs = [
            NodeLog(node=n, path=p, boot_id=boots.get(n), boot_time=times.get(n))
            for n, p in pairs.items()
        ]

    command = _reboot_command(host_reboot, reboot_command, logs)
    options = AgentOptions(
        state_dir=Path(state_dir) if state_dir else default_state,
        max_rps=max_rps,
        burst_window=burst_window,
        poll_interval=poll_interval,
        backoff_cap=backoff_cap,
        event_namespace=event_namespace,
        from_start=not from_end,
        min_write_interval=min_write_interval,
        senders=senders or default_senders(len(logs)),
        prefetch=prefetch,
    )
    metrics = AgentMetrics()
    if metrics_port is not None:
        from prometheus_client import start_http_server

        server, _ = start_http_server(metrics_port, metrics_address, registry=metrics.registry)
        click.echo(
            f"rescue agent metrics on http://{metrics_address}:{server.server_port}/metrics",
            err=True,
        )
    api = _api(kubeconfig, context, max(4, options.senders))  # a connection per sender
    try:
        agent = XidAgent(logs, api, options, metrics=metrics)
    except (RuntimeError, ValueError) as err:
        raise click.ClickException(str(err)) from err
    rebooter = None
    if command:
        from blackstart.rescue.agent.host_reboot import HostRebooter

        rebooter = HostRebooter(api, logs[0].node, command, event_namespace=event_namespace)
        rebooter.start()
        click.echo(f"rebooting {logs[0].node} on request with: {reboot_command}", err=True)

    def _stop(signum: int, frame: FrameType | None) -> None:
        agent.stop_soon()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    click.echo(
        f"rescue agent serving {len(logs)} node(s) with {options.senders} sender(s), state in "
        f"{options.state_dir}; ready",
        err=True,
    )
    agent.run()
    if rebooter is not None:
        rebooter.stop()
    click.echo("rescue agent stopped; spooled Xids stay for the next start", err=True)


def _reboot_command(host_reboot: bool, reboot_command: str, logs: list[NodeLog]) -> tuple[str, ...]:
    """The --host-reboot command to run, or () without --host-reboot."""
    if not host_reboot:
        return ()
    if len(logs) != 1:
        raise click.UsageError(
            "--host-reboot reboots the host the agent runs on: give it one node (--kmsg, or "
            f"one --node), not {len(logs)}"
        )
    try:
        command = tuple(shlex.split(reboot_command))
    except ValueError as err:
        raise click.BadParameter(
            f"{reboot_command!r}: {err}", param_hint="--reboot-command"
        ) from None
    if not command:
        raise click.BadParameter("the command is empty", param_hint="--reboot-command")
    return command
