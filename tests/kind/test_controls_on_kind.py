"""The cluster control on kind: the rescue controller there is the Helm chart's pods, never
host processes of the local provider."""

from __future__ import annotations

import pytest
from chaoslib.exceptions import InterruptExecution

from blackstart.clusters.state import ClusterState
from blackstart.controls import cluster as cluster_control
from blackstart.paths import cache_dir
from blackstart.rescue.kind_chart import uninstall

pytestmark = pytest.mark.kind


def test_an_experiment_that_needs_the_rescue_controller_is_stopped_when_kind_has_none(
    kind_cluster: ClusterState,
) -> None:
    uninstall(cache_dir(), kind_cluster, missing_ok=True)  # no chart on the cluster
    configuration = {"blackstart_cluster": kind_cluster.name}
    cluster_control.configure_control(configuration=configuration)
    with pytest.raises(InterruptExecution, match="runs on kind as the Helm chart's pods"):
        cluster_control.before_experiment_control(
            {"title": "t"}, configuration=configuration, create=False, rescue=True
        )
    # nothing was started on the host for it (the local provider's pid files)
    pids = cache_dir() / "clusters" / kind_cluster.name / "pids"
    assert not (pids / "rescue-controller.pid").exists()
    assert not (pids / "rescue-agent.pid").exists()
    cluster_control.cleanup_control()
