"""When a watch of the GPU pool's schedulable share may end early (pure logic)."""

from __future__ import annotations

import pytest
from chaoslib.exceptions import ActivityFailed

from blackstart.probes import fleet


def test_a_pool_whole_again_for_the_settle_time_after_a_dip_has_settled() -> None:
    assert fleet._settled([1.0, 0.75, 0.8, 1.0, 1.0, 1.0], interval_s=0.5, settled_s=1.5)


@pytest.mark.parametrize(
    "seen",
    [
        [1.0, 1.0, 1.0, 1.0],  # never dipped: the wave has not begun
        [1.0, 0.75, 1.0, 1.0],  # whole again, but for less than the settle time
        [1.0, 0.75, 1.0, 1.0, 1.0, 0.9],  # a second wave took nodes out
        [],
    ],
)
def test_a_pool_that_never_dipped_or_is_not_whole_long_enough_has_not(seen: list[float]) -> None:
    assert not fleet._settled(seen, interval_s=0.5, settled_s=1.5)


def test_without_a_settle_time_the_watch_runs_its_whole_duration() -> None:
    assert not fleet._settled([1.0, 0.5, 1.0, 1.0, 1.0, 1.0], interval_s=0.5, settled_s=0.0)


def test_a_settle_time_that_is_not_seconds_is_refused_naming_it() -> None:
    with pytest.raises(ActivityFailed, match="settled_s must be seconds"):
        fleet.watch_schedulable_share(duration_s=1, settled_s="soon")  # type: ignore[arg-type]
