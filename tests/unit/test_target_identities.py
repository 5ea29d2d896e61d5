"""A kind cluster blackstart made carries the non-admin identities a local one has."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from chaoslib.exceptions import ActivityFailed

from blackstart.clusters.state import ClusterState, state_dir_for
from blackstart.target import Target, resolve_target


def kind_state(cache: Path, name: str, identities: dict[str, str]) -> ClusterState:
    folder = state_dir_for(name, cache)
    state = ClusterState(
        name=name,
        provider="kind",
        state_dir=str(folder),
        spec_path="clusters/kind-gpu.yaml",
        kubeconfig=str(folder / "kubeconfig"),
        context=f"kind-{name}",
        kernel_log_dir=str(folder / "kmsg"),
        nodes=3,
        created_at=0.0,
        identities=identities,
    )
    state.save()
    return state


def identity_kubeconfig(path: Path, user: str) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:41234"}}],
                "users": [{"name": user, "user": {"token": "not-a-real-token"}}],
                "contexts": [{"name": "c", "context": {"cluster": "c", "user": user}}],
                "current-context": "c",
            }
        )
    )
    return path


def test_a_kind_target_reaches_the_identity_its_cluster_was_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BLACKSTART_CACHE_DIR", str(tmp_path))
    path = identity_kubeconfig(tmp_path / "coredns.kubeconfig", "blackstart:coredns")
    kind_state(tmp_path, "gd", {"blackstart:coredns": str(path)})
    target = resolve_target({"blackstart_cluster": "gd"})
    assert target.provider == "kind"
    api = target.identity_api("blackstart:coredns")
    assert api.configuration.host == "https://127.0.0.1:41234"
    with pytest.raises(ActivityFailed, match="no kubeconfig for blackstart:telemetry"):
        target.identity_api("blackstart:telemetry")


def test_a_kind_cluster_made_before_identities_says_to_recreate_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BLACKSTART_CACHE_DIR", str(tmp_path))
    kind_state(tmp_path, "old", {})
    target = resolve_target({"blackstart_cluster": "old"})
    with pytest.raises(ActivityFailed, match="recreate it"):
        target.identity_api("blackstart:coredns")


def test_a_cluster_of_your_own_has_no_blackstart_identity() -> None:
    target = Target(provider="context", kubeconfig="/nonexistent", context="staging")
    with pytest.raises(ActivityFailed, match="the identity blackstart:coredns needs"):
        target.identity_api("blackstart:coredns")
