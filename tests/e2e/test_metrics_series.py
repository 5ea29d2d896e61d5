"""The series the metrics control samples exist on a real cluster, also when they are zero."""

import pytest

from blackstart.clusters.local.provider import LocalProvider
from blackstart.probes.apiserver import rate_429_query
from blackstart.probes.prometheus import run_query, sample_value

from .conftest import eventually, fresh_cluster

pytestmark = pytest.mark.e2e


def test_the_429_series_is_zero_not_missing_when_there_were_no_429s(local: LocalProvider) -> None:
    """Given a new cluster nobody throttled, the 429 rate is a sample of 0: the chart has a line."""
    with fresh_cluster(local, "e2e-metrics") as cluster:
        url = cluster.prometheus_url

        def zero_sample() -> bool:
            samples = run_query(url, rate_429_query("30s"))
            return len(samples) == 1 and sample_value(samples[0]) == 0.0

        eventually(zero_sample, 60, "a 429 sample of 0 from Prometheus")
        # the plain sum, which the chart was drawn from before, has nothing to draw
        assert run_query(url, 'sum(rate(apiserver_request_total{code="429"}[30s]))') == []
