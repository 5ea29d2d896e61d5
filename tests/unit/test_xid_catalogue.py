"""The Xid catalogue: what each listed Xid means and which action NVIDIA recommends."""

from __future__ import annotations

import dataclasses

import pytest

from blackstart.rescue.wire.catalogue import (
    ACTIONS,
    CATALOGUE,
    SEVERITIES,
    XidInfo,
    action_for,
    describe,
    recovery_action_154,
)

LISTED = (13, 31, 43, 45, 48, 61, 62, 63, 64, 68, 69, 74, 79, 92, 94, 95, 109, 119, 120, 121,
          140, 143, 154)  # fmt: skip


def test_the_catalogue_lists_exactly_the_supported_codes() -> None:
    assert sorted(CATALOGUE) == list(LISTED)


@pytest.mark.parametrize("code", LISTED)
def test_every_entry_is_complete_and_uses_a_known_action_and_severity(code: int) -> None:
    info = CATALOGUE[code]

    assert info.code == code
    assert info.known
    assert info.meaning
    assert info.mnemonic.isupper()
    assert info.nvidia_action
    assert info.action in ACTIONS
    assert info.severity in SEVERITIES
    assert info.escalation is None or info.escalation in ACTIONS


@pytest.mark.parametrize(
    ("code", "meaning", "action", "nvidia_action"),
    [
        (13, "Graphics Engine Exception", "restart-app", "RESTART_APP"),
        (31, "GPU memory page fault", "restart-app", "RESTART_APP"),
        (43, "GPU stopped processing", "ignore", "IGNORE"),
        (48, "Double Bit ECC Error", "reset-gpu", "WORKFLOW_XID_48"),
        (62, "Internal micro-controller halt", "reset-gpu", "RESET_GPU"),
        (63, "GPU memory remapping event", "ignore", "IGNORE"),
        (64, "GPU memory remapping failure", "reset-gpu", "RESET_GPU"),
        (74, "NVLink Error", "reset-gpu", "WORKFLOW_NVLINK_ERR"),
        (79, "GPU has fallen off the bus", "reboot", "RESTART_BM"),
        (92, "High single-bit ECC error rate", "ignore", "IGNORE"),
        (94, "Contained memory error", "restart-app", "RESTART_APP"),
        (95, "Uncontained memory error", "reset-gpu", "RESET_GPU"),
        (119, "GSP RPC Timeout", "reset-gpu", "RESET_GPU"),
        (140, "ECC Unrecovered Error", "reset-gpu", "RESET_GPU"),
    ],
)
def test_entries_follow_nvidias_immediate_action(
    code: int, meaning: str, action: str, nvidia_action: str
) -> None:
    info = describe(code)

    assert (info.meaning, info.action, info.nvidia_action) == (meaning, action, nvidia_action)


def test_node_level_actions_are_critical_and_ignored_xids_are_info() -> None:
    assert describe(79).severity == "critical"
    assert describe(48).severity == "critical"
    assert describe(13).severity == "warning"
    assert describe(43).severity == "info"


def test_gsp_errors_escalate_to_a_power_cycle_when_a_reset_does_not_help() -> None:
    assert describe(119).escalation == "power-cycle"
    assert describe(120).escalation == "power-cycle"


def test_an_unlisted_code_is_an_unknown_xid_for_a_person_to_look_at() -> None:
    info = describe(99999)

    assert info.code == 99999
    assert not info.known
    assert info.meaning == "Unknown Xid 99999"
    assert info.action == "contact-support"


@pytest.mark.parametrize("code", [0, -1, 2**64])
def test_describe_never_raises_on_odd_integers(code: int) -> None:
    assert describe(code).known is False


def test_describe_never_raises_on_a_value_that_is_not_a_code() -> None:
    odd: object = ["48"]

    info = describe(odd)  # type: ignore[arg-type]

    assert (info.code, info.known) == (-1, False)


def test_entries_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        CATALOGUE[79].action = "ignore"  # type: ignore[misc]


def test_the_catalogue_mapping_is_read_only() -> None:
    with pytest.raises(TypeError):
        CATALOGUE[1] = describe(1)  # type: ignore[index]


def test_to_json_has_every_field() -> None:
    assert describe(79).to_json() == {
        "code": 79,
        "mnemonic": "ROBUST_CHANNEL_GPU_HAS_FALLEN_OFF_THE_BUS",
        "meaning": "GPU has fallen off the bus",
        "action": "reboot",
        "severity": "critical",
        "nvidia_action": "RESTART_BM",
        "escalation": "contact-support",
        "note": describe(79).note,
        "known": True,
    }
    assert isinstance(describe(79), XidInfo)


# --- Xid 154: the action is in the message ---------------------------------------------------


@pytest.mark.parametrize(
    ("message", "action"),
    [
        ("GPU recovery action changed from 0x0 (None) to 0x2 (Node Reboot Required)", "reboot"),
        ("GPU recovery action changed from 0x0 (None) to 0x1 (GPU Reset Required)", "reset-gpu"),
        ("GPU recovery action changed from 0x0 (None) to 0x4 (Drain and Reset)", "reset-gpu"),
        ("GPU recovery action changed from 0x1 (GPU Reset Required) to 0x0 (None)", "ignore"),
        ("GPU recovery action changed from 0x0 (None) to 0x3 (Drain P2P)", "contact-support"),
        ("GPU recovery action changed from 0x0 to 0x2", "reboot"),
        ("GPU recovery action changed from 0x0 (None) to 0x7 (Something New)", "reboot"),
        ("GPU recovery action changed from 0x0 (None) to 0x2a (Newer)", "contact-support"),
    ],
)
def test_xid_154_takes_its_action_from_the_recovery_action_it_changed_to(
    message: str, action: str
) -> None:
    assert recovery_action_154(message) == action
    assert action_for(154, message) == action


@pytest.mark.parametrize("message", ["", "GPU recovery action changed", "to", "to ()"])
def test_an_undecodable_xid_154_falls_back_to_the_catalogue(message: str) -> None:
    assert recovery_action_154(message) is None
    assert action_for(154, message) == describe(154).action == "contact-support"


def test_other_xids_ignore_the_message_for_their_action() -> None:
    assert action_for(79, "to 0x0 (None)") == "reboot"
    assert action_for(12345) == "contact-support"
