"""Every provider implements the one ClusterProvider interface; actions go through it."""

import inspect
from pathlib import Path
from typing import Any

import pytest

from blackstart.clusters.kind_provider import KindProvider
from blackstart.clusters.local.provider import LocalProvider
from blackstart.clusters.provider import ClusterProvider

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("make", [LocalProvider, KindProvider], ids=["local", "kind"])
def test_each_provider_is_a_cluster_provider(tmp_path: Path, make: Any) -> None:
    provider = make(tmp_path)
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
