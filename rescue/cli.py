"""``blackstart xid`` and ``blackstart rescue``: the Xid tools and the self-heal processes.

``xid_group`` is a click group the main CLI mounts as ``blackstart xid``:

- ``xid parse FILE|-`` prints one JSON line per Xid error found in a kernel log;
- ``xid catalogue [CODE...]`` prints what each Xid means and what to do about it.

``rescue_group`` is mounted as ``blackstart rescue``:

- ``rescue agent`` runs the GPU Xid node agent (:mod:`blackstart.rescue.agent.cli`);
- ``rescue controller`` runs the self-heal controller and ``rescue install`` puts its
  CRDs and RBAC on a cluster (:mod:`blackstart.rescue.controller.cli`);
- ``rescue image`` builds the agent and controller images (:mod:`blackstart.rescue.image`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import IO, Any

import click

from blackstart.cli_common import Context, pass_context, progress
from blackstart.rescue.wire.catalogue import CATALOGUE, XidInfo, describe
from blackstart.rescue.wire.xid import XidParser

__all__ = ["rescue_group", "xid_group"]

_MAX_LINE_BYTES = 64 * 1024  # kernel log records are far shorter; junk lines are cut here


@click.group(name="xid")
def xid_group() -> None:
    """Triage NVIDIA Xid errors: find them in kernel logs, look up what they mean.

    Xid errors are the NVIDIA driver's reports of GPU faults ("NVRM: Xid ...")
    in the kernel log. These commands work offline, on a copy of the log.
    """


@click.group(name="rescue")
def rescue_group() -> None:
    """Run the GPU self-heal controller and its Xid node agent as processes.

    Both work against any kubeconfig, the local cluster's included; on a real
    cluster they run from the manifests in rescue/deploy/.
    """


@xid_group.command(name="parse")
@click.argument(
    "source",
    metavar="FILE|-",
    type=click.Path(dir_okay=False, allow_dash=True, path_type=str),
)
def parse_command(source: str) -> None:
    """Print every Xid error in a kernel log FILE ("-" reads standard input).

    The log can be raw /dev/kmsg records, dmesg output (plain, -T or -x),
    syslog or journalctl output, or a mix. Each Xid found prints as one JSON
    line with the GPU's PCI address, the Xid code, the GPU UUID (when a
    "NVRM: GPU at" line for that address came earlier), the pid and process
    name, the driver's message, the timestamp as logged, and from the built-in
    catalogue the meaning and the recommended action (ignore, restart-app,
    reset-gpu, reboot, power-cycle or contact-support). Other lines are
    skipped.

    \b
    Examples:
      dmesg | blackstart xid parse -
      journalctl -k -o short-iso | blackstart xid parse -
      blackstart xid parse /var/log/kern.log | jq -r 'select(.action == "reboot") | .pci'
    """
    parser = XidParser()
    for line in _read_lines(source):
        event = parser.feed(line)
        if event is not None:
            click.echo(json.dumps(event.to_json()))


@xid_group.command(name="catalogue")
@click.argument("codes", metavar="[CODE]...", nargs=-1, type=int)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array instead of a table.")
def catalogue_command(codes: tuple[int, ...], as_json: bool) -> None:
    """Print the built-in Xid catalogue, or the entries for the given CODEs.

    For each Xid: its meaning, the action NVIDIA recommends (as the
    self-heal controller names it), the severity, and NVIDIA's own
    resolution bucket from its Xid Catalog. A code the catalogue does not
    list prints as "Unknown Xid".

    \b
    Examples:
      blackstart xid catalogue
      blackstart xid catalogue 48 79 --json
    """
    infos = [describe(code) for code in codes] if codes else list(CATALOGUE.values())
    if as_json:
        click.echo(json.dumps([info.to_json() for info in infos], indent=2))
        return
    for row in _table(infos):
        click.echo(row)


def _read_lines(source: str) -> Iterator[bytes]:
    """The lines of ``source`` ("-" is stdin) as bytes; the parser decodes them, bad bytes too."""
    try:
        with click.open_file(source, "rb") as stream:
            yield from _lines_of(stream)
    except OSError as error:
        raise click.FileError(source, hint=error.strerror or str(error)) from error


def _lines_of(stream: IO[Any]) -> Iterator[bytes]:
    """The lines of ``stream``, each cut to ``_MAX_LINE_BYTES``; memory stays flat.

    Reading line by line also lets ``tail -f kern.log | blackstart xid parse -`` stream.
    """
    while True:
        line: bytes = stream.readline(_MAX_LINE_BYTES)
        if not line:
            return
        if len(line) == _MAX_LINE_BYTES and not line.endswith(b"\n"):
            # Skip the rest of an overlong line, so its tail is not read as lines of its own.
            rest: bytes = stream.readline(_MAX_LINE_BYTES)
            while len(rest) == _MAX_LINE_BYTES and not rest.endswith(b"\n"):
                rest = stream.readline(_MAX_LINE_BYTES)
        yield line


def _table(infos: list[XidInfo]) -> list[str]:
    header = ("XID", "ACTION", "SEVERITY", "NVIDIA ACTION", "MEANING")
    rows = [
        (str(info.code), info.action, info.severity, info.nvidia_action or "-", info.meaning)
        for info in infos
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header) - 1)]
    lines = []
    for row in [header, *rows]:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        lines.append("  ".join([*cells, row[-1]]))
    return lines


@rescue_group.command(name="image")
@click.option("--force", is_flag=True, help="Rebuild even when the images are current.")
@click.option(
    "--kind-cluster",
    metavar="NAME",
    default=None,
    help="Also load both images into the nodes of this kind cluster (kind load docker-image).",
)
@pass_context
def image_command(ctx: Context, force: bool, kind_cluster: str | None) -> None:
    """Build the agent and controller images offline: blackstart/rescue-{agent,controller}.

    Each is Debian bookworm's Python (mmdebstrap from this machine's apt sources)
    with blackstart installed by pip into /opt/blackstart/site: the agent without
    extras (no Chaos Toolkit, kopf or report stack), the controller with
    [rescue]. Nothing is pulled from a registry. Starts the Docker engine when
    none answers; needs root for the Debian layer. An image whose sources did
    not change is not rebuilt. Prints each image's tag and size.
    """
    from blackstart.clusters.engine import EngineError
    from blackstart.rescue.image import RescueImageError, build_images

    try:
        images = build_images(ctx.cache, progress=progress, force=force, kind_cluster=kind_cluster)
    except (RescueImageError, EngineError) as err:
        raise click.ClickException(str(err)) from err
    for image in images:
        how = "cached, sources unchanged" if image.cached else "built"
        click.echo(f"{image.tag} ({how}, {image.size_bytes / 2**20:.0f} MiB)")


def _add_rescue_commands() -> None:
    from blackstart.rescue.agent.cli import agent_command
    from blackstart.rescue.controller.cli import controller_command, install_command

    rescue_group.add_command(agent_command)
    rescue_group.add_command(controller_command)
    rescue_group.add_command(install_command)


_add_rescue_commands()
