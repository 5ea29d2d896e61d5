"""``blackstart engine``: see ``blackstart engine --help``."""

from __future__ import annotations

import sys

import click

from blackstart.cli_common import Context, pass_context
from blackstart.cli_common import progress as _progress


@click.group()
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
