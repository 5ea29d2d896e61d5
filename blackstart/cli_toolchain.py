"""``blackstart toolchain``: see ``blackstart toolchain --help``."""

from __future__ import annotations

import sys
import time

import click

from blackstart.cli_common import BIN_DIR, Context, pass_context
from blackstart.cli_common import progress as _progress
from blackstart.clusters.toolchain import ToolchainError, install, resolve


@click.group()
def toolchain() -> None:
    """The real binaries blackstart runs: etcd, Kubernetes, KWOK, CoreDNS, kind, Helm, Prometheus"""


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
