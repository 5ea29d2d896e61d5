"""Which provider runs a cluster: the one place that maps a saved state to its provider."""

from pathlib import Path

from blackstart.clusters.local.provider import LocalProvider
from blackstart.clusters.provider import ClusterError, ClusterProvider, Progress
from blackstart.clusters.state import ClusterState
from blackstart.clusters.toolchain import resolve


def provider_for(
    state: ClusterState, cache: Path, progress: Progress = lambda _message: None
) -> ClusterProvider:
    """The provider that created cluster ``state`` (``state.provider``)."""
    if state.provider == "local":
        return LocalProvider(cache, resolve(cache)[0], progress=progress)
    if state.provider == "kind":
        from blackstart.clusters.kind_provider import KindProvider

        return KindProvider(cache, progress=progress)
    raise ClusterError(
        f"cluster {state.name!r} was made by the {state.provider!r} provider, which this "
        "blackstart cannot drive; recreate it with `blackstart cluster up`"
    )
