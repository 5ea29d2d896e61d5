"""The component steps the API server's rollback shares: pure logic over a provider."""

from __future__ import annotations

import logging
from typing import Any, cast

import pytest

from blackstart.actions._components import restart_exited_controllers
from blackstart.clusters.provider import ClusterError, ClusterProvider


class Components:
    """A provider's component calls: kube-scheduler's start fails as a lost Lease makes it."""

    def __init__(self, states: dict[str, str], failing: set[str]) -> None:
        self.states = states
        self.failing = failing
        self.started: list[str] = []

    def component_state(self, cluster: str, component: str) -> str:
        return self.states[component]

    def start_component(self, cluster: str, component: str) -> None:
        self.started.append(component)
        if component in self.failing:
            raise ClusterError(
                f'{component} of cluster {cluster} did not start: "Leaderelection lost"'
            )
        self.states[component] = "running"


def provider(fake: Components) -> ClusterProvider:
    return cast(ClusterProvider, fake)


def test_a_controller_that_exits_again_on_start_fails_no_rollback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # CI: start_apiserver, the rollback of an API server fault, raised because the
    # scheduler it started lost its new Lease at once; the supervisor restarts it anyway
    fake = Components({"kube-controller-manager": "stopped", "kube-scheduler": "stopped"},
                      failing={"kube-scheduler"})  # fmt: skip
    with caplog.at_level(logging.WARNING):
        started = restart_exited_controllers(provider(fake), "c1")
    assert started == ["kube-controller-manager"]
    assert fake.started == ["kube-controller-manager", "kube-scheduler"]
    assert "kube-scheduler" in caplog.text and "back-off" in caplog.text


def test_running_controllers_are_left_alone() -> None:
    states: dict[str, Any] = {"kube-controller-manager": "running", "kube-scheduler": "running"}
    fake = Components(states, failing=set())
    assert restart_exited_controllers(provider(fake), "c1") == []
    assert fake.started == []
