"""What every ``blackstart`` subcommand shares: the context, progress output, common options."""

import os
from pathlib import Path

import click

from blackstart.clusters.state import CLUSTER_ENV, DEFAULT_CLUSTER
from blackstart.paths import BIN_DIR_ENV


def progress(message: str) -> None:
    """Progress of long work, on stderr (stdout stays for what a command answers)."""
    click.echo(message, err=True)


class Context:
    """The root command's settings, handed to every subcommand."""

    def __init__(self, cache: Path):
        self.cache = cache


pass_context = click.make_pass_decorator(Context)

CLUSTER_NAME = click.option(
    "--name",
    default=lambda: os.environ.get(CLUSTER_ENV, DEFAULT_CLUSTER),
    show_default=f"${CLUSTER_ENV} or {DEFAULT_CLUSTER}",
    help="Name of the cluster.",
)

BIN_DIR = click.option(
    "--bin-dir",
    type=click.Path(file_okay=False),
    default=None,
    help=f"A folder of binaries you already have, used as they are (or ${BIN_DIR_ENV}).",
)
