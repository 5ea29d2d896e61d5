"""The guard fails closed: a silent API server or Prometheus trips it unless the experiment
caused the outage (issue 11, scenario 21)."""

from __future__ import annotations

from blackstart.controls.guard_watch import Blindness
from blackstart.controls.metrics import FAULT_UNDONE_BY


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def blindness(clock: Clock) -> Blindness:
    return Blindness(30.0, FAULT_UNDONE_BY, clock=clock)


def test_a_source_silent_for_the_limit_trips_the_guard_naming_it() -> None:
    clock = Clock()
    blind = blindness(clock)
    blind.silent("the API server")
    clock.now += 29
    assert blind.verdict() is None
    clock.now += 1
    verdict = blind.verdict()
    assert verdict is not None
    assert verdict.startswith("the API server has not answered for 30 s")
    assert "fails closed" in verdict


def test_an_answer_resets_the_silence() -> None:
    clock = Clock()
    blind = blindness(clock)
    blind.silent("Prometheus")
    clock.now += 20
    blind.answered("Prometheus")
    blind.silent("Prometheus")
    clock.now += 20
    assert blind.verdict() is None


def test_an_outage_the_experiment_caused_is_expected_until_it_is_undone() -> None:
    clock = Clock()
    blind = blindness(clock)
    blind.opening("stop_apiserver")
    blind.closing("stop_apiserver")  # the fault itself ended: its outage goes on
    blind.silent("the API server")
    clock.now += 300
    assert blind.verdict() is None
    assert blind.expected == ["stop_apiserver"]

    blind.closing("start_apiserver")  # undone: the silence counts from now
    assert blind.expected == []
    assert blind.verdict() is None
    clock.now += 30
    assert blind.verdict() is not None


def test_an_activity_that_takes_nothing_away_opens_no_window() -> None:
    clock = Clock()
    blind = blindness(clock)
    blind.opening("inject_xid")
    blind.silent("the API server")
    clock.now += 31
    assert blind.verdict() is not None
