"""The ``blackstart`` command line."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import click

from blackstart import __version__
from blackstart.clusters.kind_provider import KindProvider
from blackstart.clusters.local.provider import LocalProvider
from blackstart.clusters.processes import ProcessError
from blackstart.clusters.provider import ClusterError
from blackstart.clusters.spec import ClusterSpec, SpecError, load_spec
from blackstart.clusters.state import (
    CLUSTER_ENV,
    DEFAULT_CLUSTER,
    ClusterNotFound,
    list_states,
    load_state,
    state_dir_for,
)
from blackstart.clusters.toolchain import ToolchainError, install, resolve
from blackstart.paths import BIN_DIR_ENV, CACHE_DIR_ENV
from blackstart.paths import cache_dir as resolve_cache_dir
from blackstart.rescue.cli import rescue_group, xid_group

KIND_DEFAULT_SPEC = "kind-gpu.yaml"


def _progress(message: str) -> None:
    click.echo(message, err=True)


class Context:
    def __init__(self, cache: Path):
        self.cache = cache


pass_context = click.make_pass_decorator(Context)

CLUSTER_NAME = click.option(
    "--name",
    default=lambda: os.environ.get(CLUSTER_ENV, DEFAULT_CLUSTER),
    show_default=f"${CLUSTER_ENV} or {DEFAULT_CLUSTER}",
    help="Name of the cluster.",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="blackstart")
@click.option(
    "--cache-dir",
    type=click.Path(file_okay=False),
    default=None,
    help=f"Where binaries and clusters live (default ${CACHE_DIR_ENV} or ~/.cache/blackstart).",
)
@click.pass_context
def main(ctx: click.Context, cache_dir: str | None) -> None:
    """blackstart: rehearse the failures that take a GPU Kubernetes fleet down.

    Bring up a real local control plane with simulated GPU nodes, inject
    faults with Chaos Toolkit experiments, and run the GPU self-heal
    controller that is meant to bring the fleet back.
    """
    ctx.obj = Context(resolve_cache_dir(cache_dir))


# ------------------------------------------------------------------ toolchain
@main.group()
def toolchain() -> None:
    """The real binaries blackstart runs: etcd, Kubernetes, KWOK, CoreDNS, kind, Prometheus."""


BIN_DIR = click.option(
    "--bin-dir",
    type=click.Path(file_okay=False),
    default=None,
    help=f"A folder of binaries you already have, used as they are (or ${BIN_DIR_ENV}).",
)


@toolchain.command("install")
@BIN_DIR
@click.option("--mirror", default=None, help="Release mirror base URL to download binaries from.")
@click.option(
    "--go", "go_binary", default=None, help="The go binary to build with (default: go on PATH)."
)
@pass_context
def toolchain_install(
    ctx: Context, bin_dir: str | None, mirror: str | None, go_binary: str | None
) -> None:
    """Make every pinned binary available, building missing ones from their Go modules.

    Binaries from --bin-dir are used as they are; missing ones are downloaded
    from --mirror when given, else built with `go build` through the Go
    module proxy (a cold build takes about 15 minutes on 2 cores). With
    everything present it returns at once.
    """
    started = time.monotonic()
    try:
        tc = install(ctx.cache, bin_dir=bin_dir, mirror=mirror, go=go_binary, progress=_progress)
    except ToolchainError as err:
        raise click.ClickException(str(err)) from err
    for name in sorted(tc.paths):
        click.echo(f"{name:<24} {tc.versions[name]:<10} {tc.sources[name]:<18} {tc.paths[name]}")
    _progress(f"toolchain ready in {time.monotonic() - started:.1f} s ({tc.path_dir})")


@toolchain.command("status")
@BIN_DIR
@pass_context
def toolchain_status(ctx: Context, bin_dir: str | None) -> None:
    """Show which pinned binaries are present and where they come from; exit 1 if any is missing."""
    try:
        tc, missing = resolve(ctx.cache, bin_dir)
    except ToolchainError as err:
        raise click.ClickException(str(err)) from err
    for name in sorted(tc.paths):
        click.echo(f"{name:<24} {tc.versions[name]:<10} {tc.sources[name]:<18} {tc.paths[name]}")
    for comp, name in missing:
        click.echo(f"{name:<24} {comp.version or comp.apt_package:<10} {'MISSING':<18}")
    if missing:
        sys.exit(1)


# --------------------------------------------------------------------- engine
@main.group()
def engine() -> None:
    """The Docker engine kind clusters run on (started here when none answers)."""


@engine.command("up")
@click.option(
    "--confine",
    is_flag=True,
    help="Also install the egress firewall on an engine blackstart did not start (CI runners).",
)
@pass_context
def engine_up(ctx: Context, confine: bool) -> None:
    """Use the Docker engine that answers, or start Debian's dockerd (needs root).

    A started dockerd keeps its data and log under the cache folder, gets
    the egress firewall (no packet from a container leaves this machine)
    before it starts, and a runtime that drops capabilities the host cannot
    grant when the capability bounding set lacks some.
    """
    from blackstart.clusters.engine import EngineError, ensure_engine
    from blackstart.clusters.firewall import FirewallError

    try:
        status = ensure_engine(ctx.cache, progress=_progress, confine=confine)
    except (EngineError, FirewallError) as err:
        raise click.ClickException(str(err)) from err
    owner = "started by blackstart" if status.owned else "not started by blackstart, used as is"
    click.echo(f"docker engine {status.version} answers ({owner})")


@engine.command("status")
@pass_context
def engine_status_cmd(ctx: Context) -> None:
    """Show whether an engine answers, who started it, its runtime and firewall; exit 1 if none."""
    from blackstart.clusters.engine import engine_status
    from blackstart.clusters.firewall import FirewallError, check_rules

    status = engine_status(ctx.cache)
    if not status.answers:
        click.echo("no Docker engine answers (start one with `blackstart engine up`)")
        sys.exit(1)
    click.echo(f"version   {status.version}")
    owner = f"blackstart (pid {status.pid})" if status.owned else "not blackstart"
    click.echo(f"owner     {owner}")
    if status.owned:
        click.echo(f"runtime   {status.runtime}")
        click.echo(f"log       {status.log}")
    try:
        check_rules(engine_running=True)
        click.echo("firewall  container egress confined to this machine")
    except FirewallError as err:
        click.echo(f"firewall  {'BROKEN' if status.owned else 'not installed'}: {err}")
        if status.owned:
            sys.exit(1)


@engine.command("down")
@click.option("--force", is_flag=True, help="Stop it even while containers run (they die).")
@pass_context
def engine_down(ctx: Context, force: bool) -> None:
    """Stop the dockerd blackstart started; an engine it did not start is never stopped."""
    from blackstart.clusters.engine import EngineError, stop_engine

    try:
        stopped = stop_engine(ctx.cache, progress=_progress, force=force)
    except EngineError as err:
        raise click.ClickException(str(err)) from err
    click.echo("dockerd stopped" if stopped else "no engine started by blackstart runs")


@toolchain.command("node-image")
@click.option("--force", is_flag=True, help="Rebuild even when the cached image is current.")
@click.option(
    "--binaries-only",
    is_flag=True,
    help="Only build the node's Go binaries (no root needed); the image needs root.",
)
@pass_context
def toolchain_node_image(ctx: Context, force: bool, binaries_only: bool) -> None:
    """Build the kind node image blackstart/kind-node:<version> offline (cached).

    Debian bookworm (mmdebstrap, from this machine's apt sources) with
    systemd, containerd, runc and the CNI plugins; kubelet, kubeadm, kubectl
    and crictl built from their Go modules; and, preloaded in the node's
    containerd, every image kubeadm names (kube-apiserver, etcd, CoreDNS,
    pause, ...) assembled from locally built binaries. Nothing is pulled.
    Starts the Docker engine when none answers. Rebuilt only when a pin in
    clusters/toolchain.toml or a node file changes; a cold build takes about
    15 minutes on 2 cores (most of it Go), a warm check seconds.
    """
    from blackstart.clusters.engine import EngineError
    from blackstart.clusters.node_image import NodeImageError, build_node_image
    from blackstart.clusters.toolchain import NODE_IMAGE_GROUP

    if binaries_only:
        try:
            built = install(ctx.cache, progress=_progress, group=NODE_IMAGE_GROUP)
        except ToolchainError as err:
            raise click.ClickException(str(err)) from err
        for name in sorted(built.paths):
            click.echo(f"{name:<24} {built.versions[name]:<10} {built.paths[name]}")
        return
    try:
        result = build_node_image(ctx.cache, progress=_progress, force=force)
    except (NodeImageError, EngineError, ToolchainError) as err:
        raise click.ClickException(str(err)) from err
    how = "cached, inputs unchanged" if result.cached else f"built in {result.seconds:.0f} s"
    click.echo(f"{result.tag} ({how}, {result.size_bytes / 2**20:.0f} MiB)")


# -------------------------------------------------------------------- cluster
@main.group()
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
    help="Also start the GPU self-heal controller and the Xid agent for the fleet (local).",
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
        _kind_up(ctx, spec, name, timeout)
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


def _kind_up(ctx: Context, spec: ClusterSpec, name: str, timeout: float) -> None:
    from blackstart.clusters.engine import EngineError
    from blackstart.clusters.kind_provider import KindProvider

    provider = KindProvider(ctx.cache, progress=_progress, ready_timeout=timeout)
    try:
        provider.up(spec, name)
    except (ClusterError, EngineError) as err:
        raise click.ClickException(str(err)) from err
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
    click.echo(f"kernel logs {state.kernel_log_dir}")
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
    """Stop every process of the cluster and delete its state; leaves nothing running."""
    if _provider_of(ctx, name) == "kind":
        try:
            removed = KindProvider(ctx.cache, progress=_progress).down(name)
        except ClusterError as err:
            raise click.ClickException(str(err)) from err
        click.echo(f"kind cluster {name} deleted; removed: {', '.join(removed) or 'nothing left'}")
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


# -------------------------------------------------------------------- reports
@main.command("report")
@click.argument("journals", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    default=None,
    help="File to write (one journal), or folder for the pages and an index.html "
    "(several journals). Default: beside each journal, <journal>.html.",
)
@click.option(
    "--junit",
    "junit_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write JUnit XML here: one test case per journal (a deviation is a failure).",
)
@click.option("--title", default="Chaos Toolkit journals", help="Title of the index page.")
def report(
    journals: tuple[Path, ...], output: Path | None, junit_path: Path | None, title: str
) -> None:
    """Render Chaos Toolkit journals as self-contained HTML pages.

    Any journal written by `chaos run --journal-path` works, also ones that
    blackstart did not make; blackstart's metrics, fault windows and rescue
    plans are shown when the journal carries them. Each page is one HTML
    file: no network, no JavaScript needed.

    \b
    Exit codes: 0 written; 2 a journal could not be read (the message names
    the file and what is wrong with it).
    """
    from blackstart.reports.pages import ReportError, render_journals

    try:
        written = render_journals(list(journals), output, junit_path, title)
    except ReportError as err:
        for line in str(err).splitlines():
            click.echo(f"Error: {line}", err=True)
        sys.exit(2)
    for line in written:
        click.echo(line)


@main.command("gameday")
@click.option(
    "--suite",
    "suite_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("experiments/gameday.yaml"),
    show_default=True,
    help="The suite file: experiments, per-entry variables, timeout and expected outcome.",
)
@click.option(
    "--provider",
    type=click.Choice(["local", "kind"]),
    default="local",
    show_default=True,
    help="Cluster to bring up: local (processes + KWOK nodes, no Docker) or kind (Docker).",
)
@click.option(
    "--context",
    default=None,
    help="Run every experiment on an existing cluster through this kubeconfig context "
    "($KUBECONFIG), whatever cluster the experiments name; nothing is created or deleted. "
    "The context must be in $BLACKSTART_ALLOWED_CONTEXTS.",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Output folder (default: ./gameday-<UTC timestamp>/).",
)
@click.option(
    "--only",
    multiple=True,
    metavar="NAME",
    help="Run only this suite entry (repeatable).",
)
@click.option("--keep", is_flag=True, help="Leave the cluster running afterwards.")
@click.option(
    "--spec",
    "spec_path",
    default=None,
    help="Cluster spec to bring up (default: the packaged clusters/gpu-fleet.yaml).",
)
@click.option(
    "--name",
    "cluster_name",
    default="gameday",
    show_default=True,
    help="Name of the cluster the game day brings up (a running, healthy one is reused).",
)
@click.option(
    "--rollback-grace",
    type=click.FloatRange(min=1),
    default=180.0,
    show_default=True,
    help="Seconds to wait for rollbacks after a timeout or Ctrl-C before stopping chaos.",
)
@click.option("-v", "--verbose", is_flag=True, help="Show every line Chaos Toolkit logs.")
@pass_context
def gameday(
    ctx: Context,
    suite_path: Path,
    provider: str,
    context: str | None,
    out_dir: Path | None,
    only: tuple[str, ...],
    keep: bool,
    spec_path: str | None,
    cluster_name: str,
    rollback_grace: float,
    verbose: bool,
) -> None:
    """Run a game day: every experiment of a suite, with reports and JUnit XML.

    Brings the cluster up (local by default), starts the rescue controller
    and its agents, runs each experiment with `chaos run` (progress on the
    terminal), writes a page per experiment, index.html and junit.xml into
    the output folder, and tears the cluster down unless --keep. Ctrl-C
    interrupts the running experiment (its rollbacks run) and tears down.

    \b
    Exit codes:
      0    every experiment ended as its suite entry expects
      1    at least one did not (deviated, failed, timed out, ...)
      2    usage error, or a wrong suite or experiment file; nothing was run
      3    the cluster or the rescue controller could not be brought up, or the
           --context cannot be reached or is not in $BLACKSTART_ALLOWED_CONTEXTS
      130  interrupted (Ctrl-C or SIGTERM); rollbacks ran, cluster torn down
    """
    from blackstart.gameday import (
        ContextSession,
        Gameday,
        GamedayOptions,
        KindSession,
        LocalSession,
        chaos_binary,
        default_out_dir,
    )
    from blackstart.suite import SuiteError, load_suite

    try:
        suite = load_suite(suite_path, only=only)
        if spec_path and not context:
            load_spec(spec_path)
    except (SuiteError, SpecError) as err:
        click.echo(f"Error: {err}", err=True)
        sys.exit(2)
    chaos = chaos_binary()
    if chaos is None:
        click.echo(
            "Error: the `chaos` command (chaostoolkit) was not found beside this Python or on "
            "PATH; install blackstart with its dependencies (`make setup`)",
            err=True,
        )
        sys.exit(2)
    if context:
        if spec_path:
            _progress("[gameday] --spec is ignored with --context (the cluster exists already)")
        session: ContextSession | LocalSession | KindSession = ContextSession(context)
    elif provider == "kind":
        session = KindSession(ctx.cache, cluster_name, spec_path, _progress)
    else:
        session = LocalSession(ctx.cache, cluster_name, spec_path, _progress)
    options = GamedayOptions(
        suite=suite,
        out_dir=(out_dir or default_out_dir()).resolve(),
        session=session,
        chaos=chaos,
        keep=keep,
        rollback_grace=rollback_grace,
        verbose=verbose,
    )
    sys.exit(Gameday(options, echo=_progress, out=click.echo).run())


# The rescue commands live beside the controller they run (blackstart.rescue.cli).
main.add_command(xid_group)
main.add_command(rescue_group)


if __name__ == "__main__":
    main()
