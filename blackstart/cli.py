"""The ``blackstart`` command line."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from blackstart import __version__
from blackstart.cli_cluster import cluster
from blackstart.cli_common import Context, pass_context
from blackstart.cli_common import progress as _progress
from blackstart.cli_engine import engine
from blackstart.cli_toolchain import toolchain
from blackstart.clusters.spec import SpecError, load_spec
from blackstart.extras import extra_for, missing_extra_message
from blackstart.paths import CACHE_DIR_ENV
from blackstart.paths import cache_dir as resolve_cache_dir
from blackstart.rescue.cli import rescue_group, xid_group


class _Commands(click.Group):
    """The top-level group: a command whose optional part is not installed names its extra."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except ModuleNotFoundError as err:
            extra = extra_for(err.name)
            if extra is None or err.name is None:
                raise
            raise click.ClickException(missing_extra_message(err.name, extra)) from err


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
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

    existing = ContextSession(context) if context else None
    try:
        suite = load_suite(
            suite_path, only=only, provider=existing.suite_provider if existing else provider
        )
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
    if existing is not None:
        if spec_path:
            _progress("[gameday] --spec is ignored with --context (the cluster exists already)")
        session: ContextSession | LocalSession | KindSession = existing
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


main.add_command(toolchain)
main.add_command(engine)
main.add_command(cluster)
main.add_command(xid_group)
main.add_command(rescue_group)


if __name__ == "__main__":
    main()
