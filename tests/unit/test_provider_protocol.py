"""Every provider implements the one ClusterProvider interface; actions go through it."""

import inspect
from pathlib import Path

from blackstart.clusters.local.provider import LocalProvider
from blackstart.clusters.provider import ClusterProvider

REPO = Path(__file__).resolve().parents[2]


def test_the_local_provider_is_a_cluster_provider(tmp_path: Path) -> None:
    provider = LocalProvider(tmp_path)
    assert isinstance(provider, ClusterProvider)
    for name, member in inspect.getmembers(ClusterProvider, inspect.isfunction):
        if name.startswith("_"):
            continue
        ours = inspect.signature(getattr(provider, name))
        theirs = inspect.signature(member)
        assert list(ours.parameters)[: len(theirs.parameters) - 1] == list(theirs.parameters)[1:], (
            name
        )


def test_no_action_or_probe_names_a_provider_class() -> None:
    for folder in ("actions", "probes"):
        for path in (REPO / folder).glob("*.py"):
            text = path.read_text()
            assert "KindProvider" not in text, path
            assert "clusters.kind" not in text, path
