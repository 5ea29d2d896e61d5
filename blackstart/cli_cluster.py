"""``blackstart cluster``: see ``blackstart cluster --help``."""

from __future__ import annotations

import json
import sys

import click

from blackstart.cli_common import BIN_DIR, CLUSTER_NAME, Context, pass_context
from blackstart.cli_common import progress as _progress
from blackstart.clusters.kind import KIND_DEFAULT_SPEC
from blackstart.clusters.kind_provider import KindProvider
from blackstart.clusters.local.provider import LocalProvider
from blackstart.clusters.processes import ProcessError
from blackstart.clusters.provider import ClusterError
from blackstart.clusters.spec import ClusterSpec, SpecError, load_spec
from blackstart.clusters.state import (
    ClusterNotFound,
    ClusterState,
    list_states,
    load_state,
    state_dir_for,
)
from blackstart.clusters.toolchain import resolve


@click.group()
def cluster() -> None:
    """Create, inspect and delete clusters (local processes + KWOK nodes, or kind)."""


def _local(ctx: Context, bin_dir: str | None = None) -> LocalProvider:
    tc, missing = resolve(ctx.cache, bin_dir)
    if missing:
        names = ", ".join(n for _, n in missing)
        raise click.ClickException(
            f"missing binaries: {names}; run `blackstart toolchain install` first"
        )
    return LocalProvider(ctx.cache, tc, progress=_progress)


@cluster.command("up")
@click.option(
    "--spec",
    "spec_path",
    default=None,
    help="Cluster spec file (default: the packaged clusters/gpu-fleet.yaml, or "
    "clusters/kind-gpu.yaml with --provider kind).",
)
@CLUSTER_NAME
@click.option(
    "--provider",
    type=click.Choice(["local", "kind"]),
    default="local",
    show_default=True,
    help="local: real control plane as processes with KWOK nodes; kind: needs Docker.",
)
@click.option(
    "--prometheus-port", type=int, default=None, help="Port for Prometheus (default: a free port)."
)
@click.option(
    "--dns-port", type=int, default=None, help="Loopback port for CoreDNS (default: a free port)."
)
@click.option(
    "--timeout",
    type=float,
    default=600.0,
    show_default=True,
    help="Seconds to wait for the fleet to be Ready.",
)
@click.option(
    "--with-rescue",
    is_flag=True,
    help="Also start the GPU self-heal controller and the Xid agent for the fleet: as "
    "processes (local), or built as images and installed with the Helm chart (kind).",
)
@BIN_DIR
@pass_context
def cluster_up(
    ctx: Context,
    spec_path: str | None,
    name: str,
    provider: str,
    prometheus_port: int | None,
    dns_port: int | None,
    timeout: float,
    with_rescue: bool,
    bin_dir: str | None,
) -> None:
    """Bring up a GPU fleet from a spec and wait until every node is Ready."""
    if provider == "kind" and spec_path is None:
        spec_path = KIND_DEFAULT_SPEC
    try:
        spec = load_spec(spec_path)
    except SpecError as err:
        raise click.ClickException(str(err)) from err
    if provider == "kind":
        _kind_up(ctx, spec, name, timeout, with_rescue)
        return
    local = _local(ctx, bin_dir)
    try:
        local.up(
            spec, name=name, prometheus_port=prometheus_port, dns_port=dns_port, timeout=timeout
        )
        if with_rescue:
            _progress(f"[{name}] starting the rescue controller and Xid agent")
            local.start_rescue(name)
    except (ClusterError, ProcessError) as err:
        raise click.ClickException(str(err)) from err
    _print_status(local, name)


def _kind_up(ctx: Context, spec: ClusterSpec, name: str, timeout: float, rescue: bool) -> None:
    from blackstart.clusters.engine import EngineError
    from blackstart.clusters.kind_provider import KindProvider

    provider = KindProvider(ctx.cache, progress=_progress, ready_timeout=timeout)
    try:
        state = provider.up(spec, name)
    except (ClusterError, EngineError) as err:
        raise click.ClickException(str(err)) from err
    if rescue:
        _install_rescue_on_kind(ctx, state, "is up")
    _print_kind_status(provider, name)


def _install_rescue_on_kind(ctx: Context, state: ClusterState, done: str) -> None:
    from blackstart.rescue.kind_chart import ChartError, install_on_kind

    try:
        install_on_kind(ctx.cache, state, progress=_progress)
    except ChartError as err:
        raise click.ClickException(
            f"kind cluster {state.name} {done}, but the rescue chart did not install: {err}"
        ) from err


@cluster.command("adopt")
@click.option(
    "--spec",
    "spec_path",
    default=KIND_DEFAULT_SPEC,
    show_default=True,
    help="The spec the cluster's workers play, in order: one worker per spec node.",
)
@CLUSTER_NAME
@click.option(
    "--with-rescue",
    is_flag=True,
    help="Also build the controller and agent images, load them and install the Helm chart.",
)
@pass_context
def cluster_adopt(ctx: Context, spec_path: str, name: str, with_rescue: bool) -> None:
    """Take over a kind cluster that blackstart did not create, so experiments can run on it.

    \b
    The cluster is one made with plain `kind create cluster` from blackstart's node
    image (`blackstart toolchain node-image` prints its tag), one worker per node of --spec:
        kind create cluster --name staging --image <node image> --config staging.yaml
        blackstart cluster adopt --name staging --with-rescue
        BLACKSTART_ALLOWED_CONTEXTS=kind-staging blackstart gameday --context kind-staging

    Adoption labels, cordons and taints the workers as the spec says, advertises
    nvidia.com/gpu on the GPU workers, gives each worker a kernel-log file for
    fake Xids, signs blackstart's non-admin identities with the cluster's CA (the
    storms' system traffic) and publishes CoreDNS on a NodePort for the DNS probes. Experiments
    through the cluster's own kubeconfig context still need that context
    allow-listed. `blackstart cluster down --name NAME` forgets it again and
    leaves its containers running.
    """
    from blackstart.clusters.engine import EngineError

    try:
        spec = load_spec(spec_path)
    except SpecError as err:
        raise click.ClickException(str(err)) from err
    provider = KindProvider(ctx.cache, progress=_progress)
    try:
        state = provider.adopt(spec, name)
    except (ClusterError, EngineError) as err:
        raise click.ClickException(str(err)) from err
    if with_rescue:
        _install_rescue_on_kind(ctx, state, "was adopted")
    _print_kind_status(provider, name)


def _print_kind_status(provider: KindProvider, name: str) -> bool:
    state = load_state(name, provider.cache)
    statuses = provider.status(name)
    click.echo(
        f"cluster     {state.name} (provider kind, {state.nodes} nodes, spec {state.spec_path})"
    )
    click.echo(f"kubeconfig  {state.kubeconfig} (context {state.context})")
    click.echo(f"apiserver   {state.apiserver_url}")
    click.echo(f"node image  {state.extra.get('node_image', '')}")
    logs = state.kernel_log_dir or "in each worker's /var volume (an adopted cluster)"
    click.echo(f"kernel logs {logs}")
    click.echo("")
    click.echo(f"{'COMPONENT':<32} {'PID':>8}  {'STATE':<8} {'HEALTH':<7} ENDPOINT")
    for s in statuses:
        health = "ok" if s.healthy else "FAIL"
        click.echo(f"{s.name:<32} {s.pid or '-':>8}  {s.state:<8} {health:<7} {s.endpoint}")
    return all(s.healthy for s in statuses)


def _print_status(local: LocalProvider, name: str) -> bool:
    state = local.state(name)
    statuses = local.status(name)
    click.echo(
        f"cluster     {state.name} (provider {state.provider}, {state.nodes} nodes, "
        f"spec {state.spec_path})"
    )
    click.echo(f"kubeconfig  {state.kubeconfig} (context {state.context})")
    click.echo(f"apiserver   {state.apiserver_url}")
    click.echo(f"coredns     {state.dns_address} (zone cluster.local)")
    click.echo(f"prometheus  {state.prometheus_url}")
    click.echo(f"kernel logs {state.kernel_log_dir}")
    size = local.control_plane_info(name)
    if size:
        how = f"cgroup {size['cgroup']}" if size.get("limited") else "not limited (no cgroups)"
        click.echo(f"control plane {size.get('cpus')} CPU, {size.get('memory')} memory, {how}")
    click.echo("")
    click.echo(
        f"{'COMPONENT':<25} {'PID':>8}  {'STATE':<8} {'HEALTH':<7} {'RESTARTS':>8}  ENDPOINT"
    )
    for s in statuses:
        health = "ok" if s.healthy else "FAIL"
        click.echo(
            f"{s.name:<25} {s.pid or '-':>8}  {s.state:<8} {health:<7} {s.restarts:>8}  "
            f"{s.endpoint}"
        )
    return all(s.healthy for s in statuses)


@cluster.command("status")
@CLUSTER_NAME
@click.option("--json", "as_json", is_flag=True, help="Print the saved cluster state as JSON.")
@pass_context
def cluster_status(ctx: Context, name: str, as_json: bool) -> None:
    """Print each component's pid, endpoint and health, the kubeconfig and the addresses.

    Exits 1 when any component is unhealthy.
    """
    if _provider_of(ctx, name) == "kind":
        kind = KindProvider(ctx.cache, progress=_progress)
        try:
            if as_json:
                from dataclasses import asdict

                data = asdict(load_state(name, ctx.cache))
                data["components"] = [asdict(s) for s in kind.status(name)]
                click.echo(json.dumps(data, indent=2))
                return
            if not _print_kind_status(kind, name):
                sys.exit(1)
        except ClusterError as err:
            raise click.ClickException(str(err)) from err
        return
    local = LocalProvider(ctx.cache, resolve(ctx.cache)[0], progress=_progress)
    try:
        if as_json:
            from dataclasses import asdict

            state = local.state(name)
            data = asdict(state)
            data["components"] = [asdict(s) for s in local.status(name)]
            click.echo(json.dumps(data, indent=2))
            return
        healthy = _print_status(local, name)
    except ClusterNotFound as err:
        raise click.ClickException(str(err)) from err
    if not healthy:
        sys.exit(1)


@cluster.command("down")
@CLUSTER_NAME
@pass_context
def cluster_down(ctx: Context, name: str) -> None:
    """Stop every process of the cluster and delete its state; leaves nothing running.

    An adopted kind cluster (`cluster adopt`) is only forgotten: its nodes keep running.
    """
    if _provider_of(ctx, name) == "kind":
        kind = KindProvider(ctx.cache, progress=_progress)
        adopted = kind.adopted(name)
        try:
            removed = kind.down(name)
        except ClusterError as err:
            raise click.ClickException(str(err)) from err
        done = "forgotten (adopted: its nodes keep running)" if adopted else "deleted"
        click.echo(f"kind cluster {name} {done}; removed: {', '.join(removed) or 'nothing left'}")
        return
    local = LocalProvider(ctx.cache, resolve(ctx.cache)[0], progress=_progress)
    try:
        stopped = local.down(name)
    except ClusterError as err:
        raise click.ClickException(str(err)) from err
    click.echo(f"cluster {name} deleted; stopped: {', '.join(stopped) or 'nothing was running'}")


def _provider_of(ctx: Context, name: str) -> str:
    """The provider that made cluster ``name`` (its saved state; kind if only kind files remain)."""
    try:
        return load_state(name, ctx.cache).provider
    except ClusterNotFound:
        kind_map = state_dir_for(name, ctx.cache) / "kind-nodes.json"
        return "kind" if kind_map.exists() else "local"


@cluster.command("list")
@pass_context
def cluster_list(ctx: Context) -> None:
    """List the clusters blackstart created on this machine."""
    for state in list_states(ctx.cache):
        click.echo(
            f"{state.name:<20} {state.provider:<6} {state.nodes:>6} nodes  {state.kubeconfig}"
        )
