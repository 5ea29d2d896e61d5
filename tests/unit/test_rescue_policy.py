"""RescuePolicy and WarmStandbyPolicy: parsing the objects, choosing the rule, the threshold
and the standby."""

from __future__ import annotations

import random
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest

from blackstart.rescue.crd.policy import (
    DEFAULT_MATCH,
    PRECONDITION_FAILURE,
    MatchedRule,
    NodeSelector,
    PolicyError,
    RescueAction,
    RescuePolicy,
    RescueRule,
    StandbyMatch,
    Threshold,
    ThresholdTracker,
    WarmStandbyPolicy,
    action_from_object,
    check_preconditions,
    choose_standby,
    policy_from_object,
    rescue_policy_from_object,
    select_rule,
    warm_standby_policy_from_object,
)

T0 = datetime(2026, 11, 23, 12, 0, 0, tzinfo=UTC)
GPU_DEMO = {"app": "demo", "env": "test", "nvidia.com/gpu.product": "A100"}


def rescue_policy(name: str, *rules: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "rescue.blackstart.dev/v1",
        "kind": "RescuePolicy",
        "metadata": {"name": name},
        "spec": {"rules": list(rules)},
    }


def standby_policy(name: str, *matches: tuple[dict[str, str], dict[str, str]]) -> dict[str, Any]:
    return {
        "apiVersion": "rescue.blackstart.dev/v1",
        "kind": "WarmStandbyPolicy",
        "metadata": {"name": name},
        "spec": {
            "matches": [
                {"originNode": {"labels": origin}, "targetNode": {"labels": target}}
                for origin, target in matches
            ]
        },
    }


def rule(
    priority: int, codes: list[Any] | None = None, *actions: str, **extra: Any
) -> dict[str, Any]:
    obj: dict[str, Any] = {"priority": priority, "actions": [{"name": a} for a in actions]}
    if codes is not None:
        obj["errorCode"] = codes
    obj.update(extra)
    return obj


VENDOR_DEMO = rescue_policy(
    "vendor-demo",
    {
        "priority": 10,
        "errorCode": ["62"],
        "nodeSelector": {"operator": "any", "labels": {"app": "demo", "env": "test"}},
        "actions": [
            {"name": "cordon"},
            {"name": "drain", "attribute": {"waittime": "20min"}},
            {"name": "reboot", "attribute": {"waittime": "20min", "unCordon": "true"}},
        ],
    },
)


def parse(obj: dict[str, Any]) -> RescuePolicy:
    return rescue_policy_from_object(obj)


def action_names(match: MatchedRule | None) -> list[str]:
    assert match is not None, "no rule applied"
    return [action.name for action in match.actions]


# --- parsing ------------------------------------------------------------------------------------


def test_the_vendor_demo_policy_parses_into_its_rule_and_actions() -> None:
    policy = parse(VENDOR_DEMO)

    (demo_rule,) = policy.rules
    assert policy.name == "vendor-demo"
    assert demo_rule.priority == 10
    assert demo_rule.error_codes == frozenset({62})
    assert demo_rule.node_selector == NodeSelector("any", {"app": "demo", "env": "test"})
    assert demo_rule.actions == (
        RescueAction("cordon"),
        RescueAction("drain", waittime=timedelta(minutes=20)),
        RescueAction("reboot", waittime=timedelta(minutes=20), uncordon=True),
    )
    assert demo_rule.threshold is None
    assert not demo_rule.is_global


def test_a_threshold_and_go_style_waittimes_parse() -> None:
    obj = rescue_policy(
        "p",
        rule(
            5,
            ["48"],
            threshold={"count": 3, "window": "1h30m"},
            actions=[{"name": "reboot", "attribute": {"waittime": "1day3h5min"}}],
        ),
    )

    (parsed,) = parse(obj).rules
    assert parsed.threshold == Threshold(count=3, window=timedelta(hours=1, minutes=30))
    assert parsed.actions[0].waittime == timedelta(days=1, hours=3, minutes=5)
    assert parsed.actions[0].uncordon is False


def test_policy_from_object_goes_by_kind() -> None:
    assert isinstance(policy_from_object(VENDOR_DEMO), RescuePolicy)
    standby = policy_from_object(standby_policy("w", ({"gpu": "a100"}, {"pool": "standby"})))
    assert standby == WarmStandbyPolicy("w", (StandbyMatch({"gpu": "a100"}, {"pool": "standby"}),))
    with pytest.raises(PolicyError, match="kind must be RescuePolicy or WarmStandbyPolicy"):
        policy_from_object({"kind": "Node", "metadata": {"name": "gpu-1"}})


def test_an_action_object_round_trips_through_the_plan_shape() -> None:
    obj = {"name": "reboot", "attribute": {"waittime": "1day3h5min", "unCordon": "true"}}

    action = action_from_object(obj)
    assert action.to_object() == obj
    assert action_from_object({"name": "cordon"}).to_object() == {"name": "cordon"}


@pytest.mark.parametrize(
    ("bad_rule", "field", "says"),
    [
        (
            rule(1, ["62"], actions=[{"name": "cordon", "attribute": {"waittime": "10min"}}]),
            "spec.rules[0].actions[0].attribute.waittime",
            "only allowed on the drain and reboot actions",
        ),
        (
            rule(1, ["62"], actions=[{"name": "drain", "attribute": {"unCordon": "true"}}]),
            "spec.rules[0].actions[0].attribute.unCordon",
            "only allowed on the reboot action",
        ),
        (
            rule(1, ["62"], actions=[{"name": "reboot", "attribute": {"unCordon": True}}]),
            "spec.rules[0].actions[0].attribute.unCordon",
            'must be "true" or "false"',
        ),
        (
            rule(1, ["62"], actions=[{"name": "drain", "attribute": {"waittime": "10 min"}}]),
            "spec.rules[0].actions[0].attribute.waittime",
            "'10 min' is not a duration",
        ),
        (
            # fits the CRD's pattern and length; before the bound it broke the controller's
            # intake when the plan's actions were written out
            rule(
                1, ["62"], actions=[{"name": "drain", "attribute": {"waittime": "999999d999999d"}}]
            ),
            "spec.rules[0].actions[0].attribute.waittime",
            "longer than the longest allowed, 365day",
        ),
        (rule(1, ["62"], "cordon", "explode"), "spec.rules[0].actions[1].name", "'explode'"),
        (rule(0, ["62"], "cordon"), "spec.rules[0].errorCode", "absent when priority is 0"),
        (
            rule(0, None, "cordon", nodeSelector={"operator": "all", "labels": {"a": "b"}}),
            "spec.rules[0].nodeSelector",
            "absent when priority is 0",
        ),
        (rule(3, None, "cordon"), "spec.rules[0].errorCode", "required when priority is above 0"),
        (rule(3, [], "cordon"), "spec.rules[0].errorCode", "must hold 1 to 64 items"),
        (rule(3, ["1234"], "cordon"), "spec.rules[0].errorCode", "'1234' is not an Xid code"),
        (rule(3, [62], "cordon"), "spec.rules[0].errorCode", "write codes as strings"),
        (rule(3, ["62", "62"], "cordon"), "spec.rules[0].errorCode", "more than once"),
        (rule(-1, None, "cordon"), "spec.rules[0].priority", "from 0 to"),
        (rule(True, ["62"], "cordon"), "spec.rules[0].priority", "whole number"),
        ({"errorCode": ["62"], "actions": [{"name": "cordon"}]}, "spec.rules[0].priority", ""),
        (rule(3, ["62"]), "spec.rules[0].actions", "must hold 1 to 5 items"),
        ({"priority": 3, "errorCode": ["62"]}, "spec.rules[0].actions", "required"),
        (rule(3, ["62"], "cordon", "cordon"), "spec.rules[0].actions", "cordon appears more"),
        (
            rule(3, ["62"], "enableWarmStandby", "unCordon"),
            "spec.rules[0].actions",
            f"{PRECONDITION_FAILURE} enableWarmStandby",
        ),
        (
            rule(3, ["62"], "cordon", nodeSelector={"operator": "some", "labels": {"a": "b"}}),
            "spec.rules[0].nodeSelector.operator",
            "any or all",
        ),
        (
            rule(3, ["62"], "cordon", nodeSelector={"operator": "any", "labels": {}}),
            "spec.rules[0].nodeSelector.labels",
            "must hold 1 to 64 labels",
        ),
        (
            rule(3, ["62"], "cordon", nodeSelector={"operator": "any", "labels": {"gpu": 1}}),
            "spec.rules[0].nodeSelector.labels",
            "must be strings",
        ),
        (
            rule(3, ["62"], "cordon", threshold={"count": 0, "window": "1h"}),
            "spec.rules[0].threshold.count",
            "from 1 to",
        ),
        (
            rule(3, ["62"], "cordon", threshold={"count": 2, "window": "0s"}),
            "spec.rules[0].threshold.window",
            "longer than zero",
        ),
        (
            rule(3, ["62"], "cordon", threshold={"count": 2}),
            "spec.rules[0].threshold.window",
            "required",
        ),
    ],
)
def test_a_malformed_rule_is_refused_naming_the_policy_and_the_field(
    bad_rule: dict[str, Any], field: str, says: str
) -> None:
    with pytest.raises(PolicyError) as caught:
        parse(rescue_policy("broken", bad_rule))

    message = str(caught.value)
    assert message.startswith(f"RescuePolicy broken: {field}"), message
    assert says in message


def test_a_policy_without_rules_or_name_is_refused() -> None:
    with pytest.raises(PolicyError, match=r"RescuePolicy p: spec\.rules must hold 1 to 64"):
        parse(rescue_policy("p"))
    with pytest.raises(PolicyError, match=r"RescuePolicy: metadata\.name is missing"):
        parse({"kind": "RescuePolicy", "spec": {"rules": [rule(0, None, "cordon")]}})
    with pytest.raises(PolicyError, match="RescuePolicy p: spec must be an object"):
        parse({"kind": "RescuePolicy", "metadata": {"name": "p"}})


@pytest.mark.parametrize(
    ("match", "field"),
    [
        ({"originNode": {"labels": {}}, "targetNode": {"labels": {"a": "b"}}}, "originNode"),
        ({"originNode": {"labels": {"a": "b"}}}, "targetNode"),
        ({"originNode": {"labels": {"a": "b"}}, "targetNode": {"labels": {"a": 1}}}, "targetNode"),
    ],
)
def test_a_malformed_warm_standby_match_is_refused_naming_the_field(
    match: dict[str, Any], field: str
) -> None:
    obj = {"kind": "WarmStandbyPolicy", "metadata": {"name": "w"}, "spec": {"matches": [match]}}

    with pytest.raises(PolicyError, match=rf"WarmStandbyPolicy w: spec.matches\[0\]\.{field}"):
        warm_standby_policy_from_object(obj)


def test_actions_built_in_code_are_held_to_the_same_rules() -> None:
    with pytest.raises(PolicyError, match=r"attribute\.waittime is only allowed"):
        RescueAction("cordon", waittime=timedelta(minutes=1))
    with pytest.raises(PolicyError, match=r"attribute\.unCordon is only allowed"):
        RescueAction("drain", uncordon=True)
    with pytest.raises(PolicyError, match="unknown action 'explode'"):
        RescueAction(cast(Any, "explode"))


# --- choosing the rule ----------------------------------------------------------------------------


def test_with_no_policy_at_all_the_default_is_to_cordon() -> None:
    match = select_rule([], 62, GPU_DEMO)

    assert match is DEFAULT_MATCH
    assert match.is_default
    assert action_names(match) == ["cordon"]


def test_the_vendor_demo_rule_applies_to_62_on_a_demo_node_only() -> None:
    policies = [parse(VENDOR_DEMO)]

    assert action_names(select_rule(policies, 62, GPU_DEMO)) == ["cordon", "drain", "reboot"]
    assert select_rule(policies, 48, GPU_DEMO) is None
    assert select_rule(policies, 62, {"app": "other"}) is None


def test_operator_any_needs_one_label_and_all_needs_every_label() -> None:
    labels = {"app": "demo", "env": "test"}
    any_policy = parse(
        rescue_policy(
            "any", rule(5, ["62"], "cordon", nodeSelector={"operator": "any", "labels": labels})
        )
    )
    all_policy = parse(
        rescue_policy(
            "all", rule(5, ["62"], "cordon", nodeSelector={"operator": "all", "labels": labels})
        )
    )
    only_app = {"app": "demo"}
    wrong_value = {"app": "demo", "env": "prod"}

    assert select_rule([any_policy], 62, only_app) is not None
    assert select_rule([any_policy], 62, {"app": "prod", "env": "prod"}) is None
    assert select_rule([all_policy], 62, GPU_DEMO) is not None
    assert select_rule([all_policy], 62, only_app) is None
    assert select_rule([all_policy], 62, wrong_value) is None


def test_a_rule_without_a_node_selector_applies_to_every_node() -> None:
    policy = parse(rescue_policy("p", rule(5, ["79"], "cordon", "reboot")))

    assert action_names(select_rule([policy], 79, {})) == ["cordon", "reboot"]


def test_the_highest_priority_rule_that_applies_wins() -> None:
    policy = parse(
        rescue_policy(
            "p",
            rule(0, None, "cordon"),
            rule(10, ["62", "48"], "cordon", "drain"),
            rule(20, ["62"], "cordon", "reboot"),
            rule(30, ["62"], "unCordon", nodeSelector={"operator": "all", "labels": {"x": "y"}}),
        )
    )

    match = select_rule([policy], 62, GPU_DEMO)
    assert match is not None
    assert (match.policy_name, match.rule_index, match.rule.priority) == ("p", 2, 20)
    assert action_names(select_rule([policy], 48, GPU_DEMO)) == ["cordon", "drain"]


def test_the_global_rule_is_the_fallback_for_any_code_on_any_node() -> None:
    policy = parse(rescue_policy("p", rule(10, ["62"], "reboot"), rule(0, None, "cordon")))

    match = select_rule([policy], 13, {"anything": "at all"})
    assert match is not None
    assert match.rule.is_global
    assert match.rule_index == 1
    assert action_names(match) == ["cordon"]


def test_with_policies_but_no_rule_that_applies_nothing_is_done() -> None:
    policy = parse(rescue_policy("p", rule(10, ["62"], "reboot")))

    assert select_rule([policy], 13, GPU_DEMO) is None


def test_a_rule_in_another_policy_competes_on_priority() -> None:
    low = parse(rescue_policy("a-low", rule(5, ["62"], "cordon")))
    high = parse(rescue_policy("z-high", rule(50, ["62"], "cordon", "drain")))

    match = select_rule([low, high], 62, GPU_DEMO)
    assert match is not None and match.policy_name == "z-high"


def test_a_tie_goes_to_the_policy_name_sorting_first_then_the_earlier_rule() -> None:
    beta = parse(rescue_policy("beta", rule(7, ["62"], "drain")))
    alpha = parse(
        rescue_policy(
            "alpha", rule(7, ["48"], "reboot"), rule(7, ["62"], "cordon"), rule(7, ["62"], "drain")
        )
    )

    for order in ([beta, alpha], [alpha, beta]):
        match = select_rule(order, 62, GPU_DEMO)
        assert match is not None
        assert (match.policy_name, match.rule_index) == ("alpha", 1)


# --- preconditions --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "names",
    [
        ["cordon"],
        ["enableWarmStandby", "cordon"],
        ["drain", "enableWarmStandby"],
        ["reboot", "enableWarmStandby", "unCordon"],
        [],
    ],
)
def test_actions_that_can_go_together_meet_their_preconditions(names: list[str]) -> None:
    assert check_preconditions(names) is None


def test_a_warm_standby_alone_fails_its_preconditions_with_the_vendor_message() -> None:
    failure = check_preconditions([RescueAction("enableWarmStandby"), RescueAction("unCordon")])

    assert failure is not None
    assert failure.startswith("Failures to meet preconditions enableWarmStandby")


# --- threshold ------------------------------------------------------------------------------------


def thresholded(count: int, window: str) -> MatchedRule:
    policy = parse(
        rescue_policy("p", rule(5, ["48"], "cordon", threshold={"count": count, "window": window}))
    )
    match = select_rule([policy], 48, {})
    assert match is not None
    return match


def test_a_rule_without_a_threshold_acts_on_the_first_xid() -> None:
    tracker = ThresholdTracker()

    assert tracker.should_act("gpu-1", DEFAULT_MATCH, T0)
    assert tracker.pending("gpu-1", DEFAULT_MATCH, T0) == 0


def test_a_threshold_of_three_in_ten_minutes_acts_on_the_third_xid() -> None:
    tracker = ThresholdTracker()
    three_in_10 = thresholded(3, "10min")

    assert not tracker.should_act("gpu-1", three_in_10, T0)
    assert not tracker.should_act("gpu-1", three_in_10, T0 + timedelta(minutes=4))
    assert tracker.pending("gpu-1", three_in_10, T0 + timedelta(minutes=4)) == 2
    assert tracker.should_act("gpu-1", three_in_10, T0 + timedelta(minutes=9))


def test_xids_that_slid_out_of_the_window_do_not_count() -> None:
    tracker = ThresholdTracker()
    three_in_10 = thresholded(3, "10min")

    assert not tracker.should_act("gpu-1", three_in_10, T0)
    assert not tracker.should_act("gpu-1", three_in_10, T0 + timedelta(minutes=6))
    # T0 is exactly ten minutes old now, so out of the window.
    assert not tracker.should_act("gpu-1", three_in_10, T0 + timedelta(minutes=10))
    assert tracker.should_act("gpu-1", three_in_10, T0 + timedelta(minutes=11))


def test_acting_starts_the_count_again() -> None:
    tracker = ThresholdTracker()
    two_in_1h = thresholded(2, "1h")

    assert not tracker.should_act("gpu-1", two_in_1h, T0)
    assert tracker.should_act("gpu-1", two_in_1h, T0 + timedelta(seconds=1))
    assert not tracker.should_act("gpu-1", two_in_1h, T0 + timedelta(seconds=2))
    assert tracker.should_act("gpu-1", two_in_1h, T0 + timedelta(seconds=3))


def test_nodes_are_counted_apart_and_can_be_forgotten() -> None:
    tracker = ThresholdTracker()
    two_in_1h = thresholded(2, "1h")

    assert not tracker.should_act("gpu-1", two_in_1h, T0)
    assert not tracker.should_act("gpu-2", two_in_1h, T0)
    tracker.forget("gpu-1")
    assert not tracker.should_act("gpu-1", two_in_1h, T0 + timedelta(seconds=1))
    assert tracker.should_act("gpu-2", two_in_1h, T0 + timedelta(seconds=1))


def test_an_xid_arriving_late_still_counts_within_the_window() -> None:
    tracker = ThresholdTracker()
    two_in_10 = thresholded(2, "10min")

    assert not tracker.should_act("gpu-1", two_in_10, T0 + timedelta(minutes=5))
    assert tracker.should_act("gpu-1", two_in_10, T0)


def test_the_tracker_forgets_the_least_recently_seen_node_past_its_bound() -> None:
    tracker = ThresholdTracker(max_keys=2)
    two_in_1h = thresholded(2, "1h")

    for node in ("gpu-1", "gpu-2", "gpu-3"):
        assert not tracker.should_act(node, two_in_1h, T0)
    assert tracker.pending("gpu-1", two_in_1h, T0) == 0
    assert tracker.pending("gpu-3", two_in_1h, T0) == 1


# --- warm standby ---------------------------------------------------------------------------------

A100 = {"nvidia.com/gpu.product": "A100"}
H100 = {"nvidia.com/gpu.product": "H100"}
STANDBYS: Mapping[str, Mapping[str, str]] = {
    "spare-a100-1": {**A100, "pool": "standby"},
    "spare-a100-2": {**A100, "pool": "standby"},
    "spare-h100-1": {**H100, "pool": "standby"},
}
BY_PRODUCT = warm_standby_policy_from_object(
    standby_policy(
        "by-product",
        (A100, {**A100, "pool": "standby"}),
        (H100, {**H100, "pool": "standby"}),
    )
)


def test_a_standby_matching_the_failed_node_is_chosen() -> None:
    rng = random.Random(1)
    chosen = {choose_standby(H100, STANDBYS, [BY_PRODUCT], rng) for _ in range(20)}

    assert chosen == {"spare-h100-1"}


def test_the_choice_among_matching_standbys_is_random() -> None:
    rng = random.Random(7)
    chosen = {choose_standby(A100, STANDBYS, [BY_PRODUCT], rng) for _ in range(50)}

    assert chosen == {"spare-a100-1", "spare-a100-2"}


def test_with_no_match_any_standby_may_be_chosen() -> None:
    rng = random.Random(3)
    v100 = {"nvidia.com/gpu.product": "V100"}
    chosen = {choose_standby(v100, STANDBYS, [BY_PRODUCT], rng) for _ in range(100)}

    assert chosen == set(STANDBYS)
    assert choose_standby(A100, STANDBYS, [], random.Random(0)) in STANDBYS


def test_a_match_with_no_fitting_standby_falls_back_to_all_standbys() -> None:
    only_h100 = {"spare-h100-1": STANDBYS["spare-h100-1"]}

    assert choose_standby(A100, only_h100, [BY_PRODUCT], random.Random(0)) == "spare-h100-1"


def test_no_standby_means_none() -> None:
    assert choose_standby(A100, {}, [BY_PRODUCT], random.Random(0)) is None


def test_a_seeded_choice_does_not_depend_on_the_order_of_standbys() -> None:
    reversed_standbys = dict(reversed(list(STANDBYS.items())))

    first = choose_standby(A100, STANDBYS, [BY_PRODUCT], random.Random(42))
    second = choose_standby(A100, reversed_standbys, [BY_PRODUCT], random.Random(42))
    assert first == second


def test_a_rule_built_in_code_matches_like_a_parsed_one() -> None:
    built = RescueRule(
        priority=4,
        actions=(RescueAction("cordon"),),
        error_codes=frozenset({62}),
        node_selector=NodeSelector("all", {"app": "demo"}),
    )

    assert built.matches(62, GPU_DEMO)
    assert not built.matches(62, {"app": "other"})
    assert not built.matches(48, GPU_DEMO)


def test_a_threshold_counts_each_xid_code_apart() -> None:
    # 13, 31, 43 and 45 are often one job's fault: one of each is not a GPU repeating itself
    policy = parse(
        rescue_policy(
            "p", rule(5, ["13", "43"], "cordon", threshold={"count": 2, "window": "10min"})
        )
    )
    app_errors = select_rule([policy], 13, {})
    assert app_errors is not None
    tracker = ThresholdTracker()

    assert not tracker.should_act("gpu-1", app_errors, T0, xid=13)
    assert not tracker.should_act("gpu-1", app_errors, T0 + timedelta(minutes=1), xid=43)
    assert tracker.pending("gpu-1", app_errors, T0 + timedelta(minutes=1), xid=13) == 1
    assert tracker.should_act("gpu-1", app_errors, T0 + timedelta(minutes=2), xid=13)
