"""The ``blackstart`` command line."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import click

from blackstart import __version__
from blackstart.clusters.kind import KindError, KindProvider
from blackstart.clusters.local.provider import LocalProvider
from blackstart.clusters.processes import ProcessError
from blackstart.clusters.provider import ClusterError
from blackstart.clusters.spec import ClusterSpec, SpecError, load_spec
from blackstart.clusters.state import (
    CLUSTER_ENV,
    DEFAULT_CLUSTER,
    ClusterNotFound,
    list_states,
    state_dir_for,
)
from blackstart.clusters.toolchain import ToolchainError, install, resolve
from blackstart.paths import BIN_DIR_ENV, CACHE_DIR_ENV
from blackstart.paths import cache_dir as resolve_cache_dir
from blackstart.rescue.cli import rescue_group, xid_group


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
    help="Cluster spec file (default: the packaged clusters/gpu-fleet.yaml).",
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
    try:
        spec = load_spec(spec_path)
    except SpecError as err:
        raise click.ClickException(str(err)) from err
    if provider == "kind":
        _kind_up(ctx, spec, name, bin_dir)
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


def _kind_up(ctx: Context, spec: ClusterSpec, name: str, bin_dir: str | None) -> None:
    # Needs a Docker engine: not exercised on machines without one (see README).
    tc, _ = resolve(ctx.cache, bin_dir)
    provider = KindProvider(
        kind_binary=str(tc.paths.get("kind", "kind")),
        kubectl_binary=str(tc.paths.get("kubectl", "kubectl")),
    )
    try:
        plan = provider.up(spec, name, state_dir_for(name, ctx.cache))
    except KindError as err:
        raise click.ClickException(str(err)) from err
    click.echo(f"kind cluster {name} is up; kubeconfig {plan.kubeconfig_path}")


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
    kind_map = state_dir_for(name, ctx.cache) / "kind-nodes.json"
    if kind_map.exists():
        try:
            KindProvider().down(name)
        except KindError as err:
            raise click.ClickException(str(err)) from err
        click.echo(f"kind cluster {name} deleted")
        return
    local = LocalProvider(ctx.cache, resolve(ctx.cache)[0], progress=_progress)
    try:
        stopped = local.down(name)
    except ClusterError as err:
        raise click.ClickException(str(err)) from err
    click.echo(f"cluster {name} deleted; stopped: {', '.join(stopped) or 'nothing was running'}")


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
    help="Run against an existing cluster through this kubeconfig context instead "
    "(nothing is created or deleted).",
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
      3    the cluster or the rescue controller could not be brought up
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
