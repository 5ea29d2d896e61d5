"""``blackstart xid``: parse a real-looking mixed kernel log, and print the catalogue."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from blackstart.rescue.cli import xid_group
from blackstart.rescue.wire.catalogue import CATALOGUE

FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "kernel-mixed.log"
UUID_01 = "GPU-6a9b3c1e-0f2d-4e7a-9c55-1b2d3e4f5a6b"
UUID_3B = "GPU-0b11d014-1685-04bd-26ed-5fc0bc1c44ae"
UUID_B3 = "GPU-1f2e3d4c-5b6a-7980-a1b2-c3d4e5f6a7b8"


def json_lines(output: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in output.splitlines() if line.strip()]


def test_the_group_is_named_xid() -> None:
    assert xid_group.name == "xid"
    assert set(xid_group.commands) == {"parse", "catalogue"}


def test_given_a_mixed_kernel_log_when_parsed_then_every_xid_prints_as_one_json_line() -> None:
    result = CliRunner().invoke(xid_group, ["parse", str(FIXTURE)])

    assert result.exit_code == 0, result.output
    events = json_lines(result.stdout)
    assert [(event["xid"], event["pci"], event["uuid"]) for event in events] == [
        (31, "0000:01:00", UUID_01),
        (45, "0000:01:00", UUID_01),
        (79, "0000:3b:00", UUID_3B),
        (62, "0000:03:00", None),
        (48, "0000:b3:00", UUID_B3),
        (154, "0000:b3:00", UUID_B3),
        (63, "0000:b3:00", UUID_B3),
        (64, "0000:b3:00", UUID_B3),
        (13, "0000:01:00", UUID_01),  # a record with nothing after the code, as drivers print
    ]


def test_each_json_line_has_the_event_fields_and_the_catalogue_meaning_and_action() -> None:
    result = CliRunner().invoke(xid_group, ["parse", str(FIXTURE)])
    events = {event["xid"]: event for event in json_lines(result.stdout)}

    assert events[45] == {
        "pci": "0000:01:00",
        "xid": 45,
        "uuid": UUID_01,
        "pid": 12542,
        "process_name": "python3",
        "message": "channel 0x00000002",
        "timestamp": "1843.309002",
        "seq": 1186,
        "gpu_instance": None,
        "compute_instance": None,
        "meaning": "Preemptive cleanup, due to previous errors",
        "action": "ignore",
    }
    assert events[79]["timestamp"] == "1987.550113"
    assert events[79]["action"] == "reboot"
    assert events[62]["timestamp"] == "Mon Nov 23 12:00:01 2026"
    assert events[48]["timestamp"] == "Nov 23 12:00:06"
    assert events[48]["action"] == "reset-gpu"
    assert events[154]["action"] == "reboot"
    assert events[63]["timestamp"] == "2026-11-23T12:00:09.123456+00:00"
    assert events[63]["pid"] == 1896


def test_a_log_on_standard_input_is_read_with_a_dash() -> None:
    result = CliRunner().invoke(xid_group, ["parse", "-"], input=FIXTURE.read_bytes())

    assert result.exit_code == 0, result.output
    assert len(json_lines(result.stdout)) == 9


def test_a_log_with_invalid_utf8_still_parses(tmp_path: Path) -> None:
    log = tmp_path / "kern.log"
    log.write_bytes(
        b"\xff\xfe\x00 binary junk\n[ 5.0] NVRM: Xid (PCI:0000:01:00): 62, Channel \xc3\x28\n"
    )

    result = CliRunner().invoke(xid_group, ["parse", str(log)])

    assert result.exit_code == 0, result.output
    [event] = json_lines(result.stdout)
    assert event["xid"] == 62
    assert event["message"] == "Channel \ufffd("


def test_a_log_without_xids_prints_nothing() -> None:
    result = CliRunner().invoke(xid_group, ["parse", "-"], input="[ 1.0] eth0: link up\n")

    assert result.exit_code == 0
    assert result.stdout == ""


def test_a_missing_file_is_an_error_naming_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-kern.log"

    result = CliRunner().invoke(xid_group, ["parse", str(missing)])

    assert result.exit_code != 0
    assert str(missing) in result.output
    assert "No such file or directory" in result.output
    assert "Traceback" not in result.output


def test_a_directory_is_an_error_naming_the_path(tmp_path: Path) -> None:
    result = CliRunner().invoke(xid_group, ["parse", str(tmp_path)])

    assert result.exit_code != 0
    assert str(tmp_path) in result.output


def test_parse_help_tells_users_what_it_reads_and_prints() -> None:
    result = CliRunner().invoke(xid_group, ["parse", "--help"])

    assert result.exit_code == 0
    assert "FILE|-" in result.output
    assert "JSON line" in result.output
    assert "dmesg" in result.output


def test_the_catalogue_prints_as_a_table_with_one_row_per_xid() -> None:
    result = CliRunner().invoke(xid_group, ["catalogue"])

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split()[:3] == ["XID", "ACTION", "SEVERITY"]
    assert len(lines) == 1 + len(CATALOGUE)
    row_79 = next(line for line in lines if line.startswith("79 "))
    assert "reboot" in row_79
    assert "RESTART_BM" in row_79
    assert "GPU has fallen off the bus" in row_79


def test_the_catalogue_as_json_is_an_array_of_entries() -> None:
    result = CliRunner().invoke(xid_group, ["catalogue", "--json"])

    assert result.exit_code == 0, result.output
    entries = json.loads(result.stdout)
    assert [entry["code"] for entry in entries] == sorted(CATALOGUE)
    assert {entry["action"] for entry in entries} <= {
        "ignore",
        "restart-app",
        "reset-gpu",
        "reboot",
        "power-cycle",
        "contact-support",
    }


def test_the_catalogue_can_look_up_single_codes_including_unknown_ones() -> None:
    result = CliRunner().invoke(xid_group, ["catalogue", "48", "4242", "--json"])

    assert result.exit_code == 0, result.output
    entries = json.loads(result.stdout)
    assert [(entry["code"], entry["known"]) for entry in entries] == [(48, True), (4242, False)]


def test_an_overlong_junk_line_is_cut_and_the_xid_after_it_still_found(tmp_path: Path) -> None:
    log = tmp_path / "kern.log"
    log.write_bytes(
        b"x" * 300_000 + b" NVRM: Xid (PCI:0000:09:00): 13, hidden in the tail\n"
        b"[ 5.0] NVRM: Xid (PCI:0000:01:00): 62, Channel 00000001\n"
    )

    result = CliRunner().invoke(xid_group, ["parse", str(log)])

    assert result.exit_code == 0, result.output
    assert [(event["xid"], event["pci"]) for event in json_lines(result.stdout)] == [
        (62, "0000:01:00")
    ]


REAL = Path("/work/shared/testdata/xid-real")


def test_the_61_real_xid_records_are_found_exactly() -> None:
    if not (REAL / "xid-real.log").exists():
        pytest.skip(f"the real Xid captures are not on this machine ({REAL})")
    expected = [line for line in (REAL / "xid-real.expected").read_text().splitlines() if line]

    result = CliRunner().invoke(xid_group, ["parse", str(REAL / "xid-real.log")])

    assert result.exit_code == 0, result.output
    assert [f"{e['xid']} {e['pci']}" for e in json_lines(result.stdout)] == expected
