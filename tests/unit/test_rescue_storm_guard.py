"""The storm guard's arithmetic (rescue/storm_guard.py). Pure logic."""

from __future__ import annotations

import datetime as dt

import pytest

from blackstart.rescue.controller.storm_guard import StormGuard, parse_reboot_cap

NOW = dt.datetime(2026, 11, 24, 12, 0, tzinfo=dt.UTC)


def test_half_the_fleet_reporting_xids_gets_only_its_share_remediated() -> None:
    guard = StormGuard(max_concurrent_plans=100, max_unavailable_share=0.25)
    held = 0
    admitted = 0
    for _ in range(24):  # 24 of 48 GPU nodes report Xid 48
        if guard.admit(active_plans=held, held_matching=held, matching_nodes=48) is None:
            held += 1
            admitted += 1
    assert admitted == 12


def test_the_share_limit_rounds_down_but_never_below_one() -> None:
    guard = StormGuard(max_unavailable_share=0.2)
    assert guard.share_limit(48) == 9
    assert guard.share_limit(50) == 10
    assert guard.share_limit(3) == 1
    assert guard.share_limit(0) == 1


def test_max_concurrent_plans_binds_first_with_the_vendors_message() -> None:
    guard = StormGuard(max_concurrent_plans=3, max_unavailable_share=1.0)
    assert guard.admit(2, 0, 48) is None
    refusal = guard.admit(3, 0, 48)
    assert refusal is not None
    assert refusal.reason == "max-concurrent-plans"
    assert refusal.api_message == "Exceed the maximum plans limit 3"


def test_the_share_refusal_names_the_numbers() -> None:
    refusal = StormGuard(max_unavailable_share=0.25).admit(0, 12, 48)
    assert refusal is not None
    assert refusal.reason == "max-unavailable-share"
    assert refusal.limit == 12
    assert "12 of the 48 matching nodes" in refusal.detail
    assert refusal.api_message == "Exceed the maximum plans limit 12"


def test_the_reboot_cap_counts_only_reboots_inside_the_window() -> None:
    guard = StormGuard(reboot_cap=2, reboot_window=dt.timedelta(hours=1))
    old = NOW - dt.timedelta(hours=2)
    recent = [NOW - dt.timedelta(minutes=50), NOW - dt.timedelta(minutes=5)]
    assert guard.reboot_allowed([old, recent[0]], NOW) is None
    refusal = guard.reboot_allowed([old, *recent], NOW)
    assert refusal is not None and "rebooted 2 times in the last 1h" in refusal


@pytest.mark.parametrize(
    ("text", "count", "window"),
    [
        ("3/1day", 3, dt.timedelta(days=1)),
        ("2/30min", 2, dt.timedelta(minutes=30)),
        ("1/1h30m", 1, dt.timedelta(minutes=90)),
    ],
)
def test_reboot_caps_parse(text: str, count: int, window: dt.timedelta) -> None:
    assert parse_reboot_cap(text) == (count, window)


@pytest.mark.parametrize("text", ["3", "0/1h", "x/1h", "3/", "3/soon", "3/0s"])
def test_malformed_reboot_caps_say_how_to_write_them(text: str) -> None:
    with pytest.raises(ValueError, match="reboot cap"):
        parse_reboot_cap(text)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_concurrent_plans": 0},
        {"max_unavailable_share": 0.0},
        {"max_unavailable_share": 1.5},
        {"reboot_cap": 0},
    ],
)
def test_nonsense_limits_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        StormGuard(**kwargs)  # type: ignore[arg-type]
