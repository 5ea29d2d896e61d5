"""Sizing the control plane for an experiment: what ``limit_control_plane`` refuses.

What it does to a real control plane is tested where there is one: the kind game
day runs ``telemetry-storm`` on a limited control-plane node container and checks
the limit is lifted afterwards (tests/kind/test_gameday_on_kind.py); the local
catalogue runs it keeping the spec's size (tests/e2e/test_experiments.py).
"""

from __future__ import annotations

import pytest
from chaoslib.exceptions import ActivityFailed

from blackstart.actions.control_plane import limit_control_plane


@pytest.mark.parametrize(
    ("cpus", "memory", "message"),
    [
        (2, "", r"give both cpus and memory.*cpus=2, memory=''"),
        (0, "1Gi", r"give both cpus and memory.*cpus=0, memory='1Gi'"),
        (2, "lots", r"memory: 'lots' is not a memory quantity"),
        (2, "100Mi", r"memory: '100Mi' is less than a control plane needs"),
        (-1, "1Gi", r"cpus"),
    ],
)
def test_a_half_given_or_impossible_size_is_refused_naming_what_was_wrong(
    cpus: float, memory: str, message: str
) -> None:
    with pytest.raises(ActivityFailed, match=message):
        limit_control_plane(cpus=cpus, memory=memory, configuration={"blackstart_cluster": "x"})
