"""The Xid parser: every kernel log form and Xid line form it must read, and junk it must skip."""

from __future__ import annotations

import random
import string

import pytest

from blackstart.rescue.wire.xid import XidEvent, XidParser, normalise_pci, parse_lines

UUID_01 = "GPU-6a9b3c1e-0f2d-4e7a-9c55-1b2d3e4f5a6b"
UUID_3B = "GPU-0b11d014-1685-04bd-26ed-5fc0bc1c44ae"


def parse_one(line: str | bytes) -> XidEvent:
    event = XidParser().feed(line)
    assert event is not None, f"no Xid parsed from {line!r}"
    return event


# --- Xid line forms -------------------------------------------------------------------------


def test_xid_62_with_a_bare_domain_address_and_a_channel() -> None:
    event = parse_one("NVRM: Xid (0000:03:00): 62, Channel 00000001")

    assert event.pci == "0000:03:00"
    assert event.xid == 62
    assert event.pid is None
    assert event.process_name is None
    assert event.message == "Channel 00000001"
    assert event.uuid is None


def test_xid_31_with_channel_engmask_and_intr() -> None:
    event = parse_one(
        "NVRM: Xid (PCI:0000:01:00): 31, Ch 00000009, engmask 00000101, intr 10000000"
    )

    assert event.pci == "0000:01:00"
    assert event.xid == 31
    assert event.pid is None
    assert event.message == "Ch 00000009, engmask 00000101, intr 10000000"


def test_xid_45_carries_the_pid_and_process_name_outside_the_message() -> None:
    event = parse_one("NVRM: Xid (PCI:0000:01:00): 45, pid=12542, name=python3, channel 0x00000002")

    assert event.xid == 45
    assert event.pid == 12542
    assert event.process_name == "python3"
    assert event.message == "channel 0x00000002"


def test_xid_79_with_an_unknown_pid_and_name_has_neither() -> None:
    event = parse_one(
        "NVRM: Xid (PCI:0000:3b:00): 79, pid='<unknown>', name=<unknown>, "
        "GPU has fallen off the bus."
    )

    assert event.pci == "0000:3b:00"
    assert event.xid == 79
    assert event.pid is None
    assert event.process_name is None
    assert event.message == "GPU has fallen off the bus."


def test_xid_79_without_process_fields() -> None:
    event = parse_one("NVRM: Xid (PCI:0000:2b:00): 79, GPU has fallen off the bus.")

    assert (event.xid, event.pid, event.message) == (79, None, "GPU has fallen off the bus.")


def test_xid_154_keeps_the_recovery_action_in_the_message() -> None:
    event = parse_one(
        "NVRM: Xid (PCI:0000:b3:00): 154, GPU recovery action changed from 0x0 (None) "
        "to 0x2 (Node Reboot Required)"
    )

    assert event.pci == "0000:b3:00"
    assert event.xid == 154
    assert event.message == (
        "GPU recovery action changed from 0x0 (None) to 0x2 (Node Reboot Required)"
    )
    assert event.to_json()["action"] == "reboot"


def test_xid_13_graphics_exception_with_parentheses_and_colons_in_the_message() -> None:
    event = parse_one(
        "NVRM: Xid (PCI:0000:01:00): 13, Graphics SM Warp Exception on (GPC 0, TPC 0): "
        "Out Of Range Address"
    )

    assert event.xid == 13
    assert event.message == ("Graphics SM Warp Exception on (GPC 0, TPC 0): Out Of Range Address")


def test_xid_13_from_a_newer_driver_with_unknown_process() -> None:
    event = parse_one(
        "NVRM: Xid (PCI:0000:cb:00): 13, pid='<unknown>', name=<unknown>, "
        "Graphics SM Warp Exception on (GPC 7, TPC 7, SM 0): Illegal Instruction Parameter"
    )

    assert (event.pci, event.xid, event.pid, event.process_name) == ("0000:cb:00", 13, None, None)
    assert event.message.startswith("Graphics SM Warp Exception on (GPC 7, TPC 7, SM 0)")


def test_xid_48_double_bit_error_in_the_framebuffer() -> None:
    event = parse_one(
        "NVRM: Xid (PCI:0000:01:00): 48, An uncorrectable double bit error (DBE) has been "
        "detected on GPU in the framebuffer at partition 6, subpartition 0."
    )

    assert event.xid == 48
    assert event.message == (
        "An uncorrectable double bit error (DBE) has been detected on GPU in the framebuffer "
        "at partition 6, subpartition 0."
    )


def test_xid_63_row_remapper_event_with_only_a_pid() -> None:
    event = parse_one(
        "NVRM: Xid (PCI:0000:10:1c): 63, pid=1896, Row Remapper: New row marked for "
        "remapping, reset gpu to activate."
    )

    assert event.pci == "0000:10:1c"
    assert event.xid == 63
    assert event.pid == 1896
    assert event.process_name is None
    assert event.message == "Row Remapper: New row marked for remapping, reset gpu to activate."


def test_xid_64_row_remapper_failure_with_unknown_process() -> None:
    event = parse_one(
        "NVRM: Xid (PCI:0000:b3:00): 64, pid='<unknown>', name=<unknown>, Row Remapper: "
        "Failed to remap row, remapping resources exhausted."
    )

    assert (event.xid, event.pid, event.process_name) == (64, None, None)
    assert event.message.startswith("Row Remapper: Failed to remap row")


def test_xid_109_with_a_pid_and_a_process_name() -> None:
    event = parse_one(
        "NVRM: Xid (PCI:0000:cb:00): 109, pid=1797828, name=pt_main_thread, Ch 00000008, "
        "errorString CTX SWITCH TIMEOUT, Info 0x58005"
    )

    assert (event.xid, event.pid, event.process_name) == (109, 1797828, "pt_main_thread")
    assert event.message == "Ch 00000008, errorString CTX SWITCH TIMEOUT, Info 0x58005"


def test_an_xid_with_nothing_after_the_comma_has_an_empty_message() -> None:
    assert parse_one("NVRM: Xid (PCI:0000:01:00): 62,").message == ""


# --- PCI addresses --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("written", "normalised"),
    [
        ("0000:03:00", "0000:03:00"),
        ("PCI:0000:01:00", "0000:01:00"),
        ("03:00", "0000:03:00"),
        ("0000:3B:00.0", "0000:3b:00"),
        ("00000000:3B:00.0", "0000:3b:00"),
        ("0001:b3:1", "0001:b3:01"),
    ],
)
def test_pci_addresses_are_normalised_to_domain_bus_device_lowercase(
    written: str, normalised: str
) -> None:
    assert normalise_pci(written) == normalised


@pytest.mark.parametrize("written", ["", "03", "zz:00", "0000:03:00:00", "PCI:", "0000:03:00.9"])
def test_anything_else_is_not_a_pci_address(written: str) -> None:
    assert normalise_pci(written) is None


@pytest.mark.parametrize(
    "line",
    [
        "NVRM: Xid (03:00): 62, Channel 00000001",
        "NVRM: Xid (PCI:0000:03:00.0): 62, Channel 00000001",
        "NVRM: Xid (PCI:0000:03:00): 62, Channel 00000001",
    ],
)
def test_an_xid_address_with_or_without_domain_or_function_reads_the_same(line: str) -> None:
    assert parse_one(line).pci == "0000:03:00"


# --- log line forms -------------------------------------------------------------------------


def test_a_kmsg_record_gives_seconds_from_microseconds_and_the_sequence_number() -> None:
    event = parse_one("4,1185,1843308145,-;NVRM: Xid (PCI:0000:01:00): 62, Channel 00000001")

    assert event.timestamp == "1843.308145"
    assert event.seq == 1185
    assert event.xid == 62
    assert event.raw == "4,1185,1843308145,-;NVRM: Xid (PCI:0000:01:00): 62, Channel 00000001"


def test_a_kmsg_record_early_in_boot_keeps_leading_zero_microseconds() -> None:
    event = parse_one("4,7,42,c;NVRM: Xid (PCI:0000:01:00): 62, Channel 00000001")

    assert event.timestamp == "0.000042"
    assert event.seq == 7


def test_kmsg_continuation_lines_with_key_value_pairs_are_skipped() -> None:
    parser = XidParser()

    assert parser.feed(" SUBSYSTEM=pci") is None
    assert parser.feed(" DEVICE=+pci:0000:01:00.0") is None


def test_a_dmesg_line_gives_seconds_since_boot() -> None:
    event = parse_one("[ 1843.308145] NVRM: Xid (PCI:0000:01:00): 79, GPU has fallen off the bus.")

    assert event.timestamp == "1843.308145"
    assert event.seq is None
    assert event.xid == 79


def test_a_dmesg_ctime_line_gives_the_wall_clock_string() -> None:
    event = parse_one("[Mon Nov 23 12:00:01 2026] NVRM: Xid (0000:03:00): 62, Channel 00000001")

    assert event.timestamp == "Mon Nov 23 12:00:01 2026"
    assert (event.pci, event.xid) == ("0000:03:00", 62)


def test_a_dmesg_ctime_line_with_a_space_padded_day() -> None:
    event = parse_one("[Fri Apr  7 00:04:33 2023] NVRM: Xid (0000:03:00): 62, Channel 00000001")

    assert event.timestamp == "Fri Apr  7 00:04:33 2023"


def test_a_dmesg_line_with_facility_and_level_prefix() -> None:
    event = parse_one("kern  :warn  : [ 1843.308145] NVRM: Xid (0000:03:00): 62, Channel 00000001")

    assert (event.timestamp, event.xid) == ("1843.308145", 62)


def test_a_syslog_line_gives_the_syslog_time() -> None:
    event = parse_one(
        "Nov 23 12:00:01 host kernel: NVRM: Xid (PCI:0000:01:00): 45, pid=12542, "
        "name=python3, channel 0x00000002"
    )

    assert event.timestamp == "Nov 23 12:00:01"
    assert (event.xid, event.pid, event.process_name) == (45, 12542, "python3")


def test_a_syslog_line_with_a_kernel_stamp_keeps_the_syslog_time() -> None:
    event = parse_one("Nov 23 12:00:01 host kernel: [ 1843.3] NVRM: Xid (0000:03:00): 62, Ch 01")

    assert event.timestamp == "Nov 23 12:00:01"
    assert (event.pci, event.xid, event.message) == ("0000:03:00", 62, "Ch 01")


def test_a_syslog_line_with_a_single_digit_day() -> None:
    event = parse_one("Jan  8 11:38:05 localhost kernel: NVRM: Xid (0000:01:00): 62, Ch 01")

    assert event.timestamp == "Jan  8 11:38:05"


def test_an_iso_timestamped_journal_line_gives_the_iso_time() -> None:
    event = parse_one(
        "2026-11-23T12:00:01.123456+00:00 host kernel: NVRM: Xid (PCI:0000:3b:00): 79, "
        "pid='<unknown>', name=<unknown>, GPU has fallen off the bus."
    )

    assert event.timestamp == "2026-11-23T12:00:01.123456+00:00"
    assert (event.pci, event.xid, event.pid) == ("0000:3b:00", 79, None)


def test_journalctl_short_iso_without_fraction_or_colon_in_the_offset() -> None:
    event = parse_one("2026-11-23T12:00:01+0000 host kernel: NVRM: Xid (0000:03:00): 62, Ch 01")

    assert event.timestamp == "2026-11-23T12:00:01+0000"


def test_a_bare_message_has_no_timestamp() -> None:
    event = parse_one("NVRM: Xid (0000:03:00): 62, Channel 00000001")

    assert (event.timestamp, event.seq) == (None, None)


def test_trailing_newlines_are_not_part_of_the_line() -> None:
    event = parse_one("[ 1.000000] NVRM: Xid (0000:03:00): 62, Channel 00000001\r\n")

    assert event.message == "Channel 00000001"
    assert event.raw == "[ 1.000000] NVRM: Xid (0000:03:00): 62, Channel 00000001"


def test_bytes_are_decoded_and_bad_bytes_replaced() -> None:
    event = parse_one(b"[ 1.000000] NVRM: Xid (0000:03:00): 62, Channel \xff\xfe01\n")

    assert event.xid == 62
    assert event.message == "Channel \ufffd\ufffd01"


# --- GPU UUIDs ------------------------------------------------------------------------------


def test_given_a_gpu_at_line_when_an_xid_lands_on_that_gpu_then_it_carries_the_uuid() -> None:
    parser = XidParser()

    assert parser.feed(f"NVRM: GPU at PCI:0000:01:00: {UUID_01}") is None
    event = parser.feed("NVRM: Xid (PCI:0000:01:00): 79, GPU has fallen off the bus.")

    assert event is not None
    assert event.uuid == UUID_01


def test_the_gpu_at_form_with_a_function_number_maps_the_same_gpu() -> None:
    parser = XidParser()
    parser.feed(f"[    4.120010] NVRM: GPU at 0000:3B:00.0: {UUID_3B}")

    event = parser.feed("[ 9.1] NVRM: Xid (PCI:0000:3b:00): 62, Channel 00000001")

    assert event is not None
    assert event.uuid == UUID_3B
    assert parser.uuid_for("0000:3b:00.0") == UUID_3B
    assert dict(parser.gpus) == {"0000:3b:00": UUID_3B}


def test_an_xid_on_another_gpu_has_no_uuid() -> None:
    parser = XidParser()
    parser.feed(f"NVRM: GPU at PCI:0000:01:00: {UUID_01}")

    event = parser.feed("NVRM: Xid (PCI:0000:02:00): 62, Channel 00000001")

    assert event is not None
    assert event.uuid is None


def test_an_xid_before_its_gpu_at_line_has_no_uuid() -> None:
    events = list(
        parse_lines(
            [
                "NVRM: Xid (PCI:0000:01:00): 62, Channel 00000001",
                f"NVRM: GPU at PCI:0000:01:00: {UUID_01}",
                "NVRM: Xid (PCI:0000:01:00): 62, Channel 00000001",
            ]
        )
    )

    assert [event.uuid for event in events] == [None, UUID_01]


def test_a_later_gpu_at_line_for_the_same_address_wins() -> None:
    parser = XidParser()
    parser.feed(f"NVRM: GPU at PCI:0000:01:00: {UUID_01}")
    parser.feed(f"NVRM: GPU at PCI:0000:01:00: {UUID_3B}")

    assert parser.uuid_for("0000:01:00") == UUID_3B


def test_the_uuid_map_is_bounded_and_forgets_the_oldest_gpu() -> None:
    parser = XidParser(max_gpus=2)
    for bus in ("01", "02", "03"):
        parser.feed(f"NVRM: GPU at PCI:0000:{bus}:00: {UUID_01}")

    assert sorted(parser.gpus) == ["0000:02:00", "0000:03:00"]


def test_a_gpu_at_line_without_a_full_uuid_is_ignored() -> None:
    parser = XidParser()
    parser.feed("NVRM: GPU at PCI:0000:01:00: GPU-6a9b3c1e-0f2d")

    assert parser.gpus == {}


# --- MIG instances and records with nothing after the code (issue 11, scenario 23) ---------


def test_an_xid_on_a_mig_gpu_instance_keeps_the_instance() -> None:
    event = parse_one(
        "[ 5.0] NVRM: Xid (PCI:0000:c1:00 GPU-I:07): 43, pid=3351, name=python3, Ch 00000010"
    )

    assert (event.xid, event.pci, event.gpu_instance, event.compute_instance) == (
        43,
        "0000:c1:00",
        "07",
        None,
    )
    assert (event.pid, event.process_name, event.message) == (3351, "python3", "Ch 00000010")


def test_an_xid_on_a_mig_compute_instance_keeps_both_instances() -> None:
    event = parse_one("NVRM: Xid (PCI:0000:c1:00 GPU-I:07 GPU-CI:00): 43, Ch 00000010")

    assert (event.xid, event.gpu_instance, event.compute_instance) == (43, "07", "00")
    assert event.to_json()["gpu_instance"] == "07"
    assert event.to_json()["compute_instance"] == "00"


def test_an_xid_record_with_nothing_after_the_code_is_an_xid_with_an_empty_message() -> None:
    event = parse_one("4,1190,1843400000,-;NVRM: Xid (PCI:0000:c1:00): 45")

    assert (event.xid, event.pci, event.message, event.pid) == (45, "0000:c1:00", "", None)
    assert event.seq == 1190


def test_a_gpu_at_uuid_reaches_an_xid_on_a_mig_instance_of_that_gpu() -> None:
    parser = XidParser()
    parser.feed(f"NVRM: GPU at PCI:0000:c1:00: {UUID_01}")

    event = parser.feed("NVRM: Xid (PCI:0000:c1:00 GPU-I:02): 31, Ch 00000009")

    assert event is not None and event.uuid == UUID_01


# --- what is skipped ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "line",
    [
        "",
        "\n",
        "   ",
        "[ 1901.442017] eth0: renamed from veth4f2a1c9",
        "Nov 23 12:00:07 gpu-node-7 systemd[1]: Started kubelet.service.",
        "NVRM: GPU 0000:3b:00.0: GPU has fallen off the bus.",
        "NVRM: GPU at 0000:01:00.0 has fallen off the bus.",
        "NVRM: Xid (PCI:0000:01:",
        "NVRM: Xid (PCI:0000:01:00): , Channel 00000001",
        "NVRM: Xid (PCI:zz:01:00): 13, Channel 00000001",
        "NVRM: Xid (): 13, Channel",
        'containerd[998]: msg="NVRM: Xid is a kernel message"',
        "4,1185,1843308145,-;",
        "\x00\x01\x02\x1b[31m",
    ],
)
def test_lines_that_are_not_xid_errors_give_nothing(line: str) -> None:
    assert XidParser().feed(line) is None


def test_an_xid_code_in_unicode_digits_is_not_an_xid() -> None:
    assert XidParser().feed("NVRM: Xid (0000:03:00): \u0666\u0662, Channel 00000001") is None


def test_a_pid_in_unicode_digits_is_no_pid() -> None:
    event = parse_one("NVRM: Xid (0000:03:00): 45, pid=\u00b2\u00b3, name=x, Channel 1")

    assert event.pid is None
    assert event.process_name == "x"


def test_parse_lines_yields_the_xids_of_a_stream_in_order() -> None:
    lines: list[str | bytes] = [
        f"6,1,100,-;NVRM: GPU at PCI:0000:01:00: {UUID_01}",
        " SUBSYSTEM=pci",
        "4,2,200,-;NVRM: Xid (PCI:0000:01:00): 48, An uncorrectable double bit error",
        "[ 0.3] eth0: link up",
        b"4,3,300,-;NVRM: Xid (PCI:0000:01:00): 63, pid=1, Row Remapper: New row",
    ]

    events = list(parse_lines(lines))

    assert [(event.xid, event.seq, event.uuid) for event in events] == [
        (48, 2, UUID_01),
        (63, 3, UUID_01),
    ]


def test_to_json_has_the_event_fields_and_the_catalogue_meaning_and_action() -> None:
    event = parse_one(
        "4,1185,1843308145,-;NVRM: Xid (PCI:0000:3b:00): 79, pid='<unknown>', "
        "name=<unknown>, GPU has fallen off the bus."
    )

    assert event.to_json() == {
        "pci": "0000:3b:00",
        "xid": 79,
        "uuid": None,
        "pid": None,
        "process_name": None,
        "message": "GPU has fallen off the bus.",
        "timestamp": "1843.308145",
        "seq": 1185,
        "gpu_instance": None,
        "compute_instance": None,
        "meaning": "GPU has fallen off the bus",
        "action": "reboot",
    }


# --- fuzz -----------------------------------------------------------------------------------

REAL_LINES = [
    "4,1185,1843308145,-;NVRM: Xid (PCI:0000:01:00): 31, Ch 00000009, engmask 00000101",
    " SUBSYSTEM=pci",
    f"6,1183,1022004117,-;NVRM: GPU at PCI:0000:01:00: {UUID_01}",
    f"[ 1902.118230] NVRM: GPU at 0000:3b:00.0: {UUID_3B}",
    "[ 1987.550113] NVRM: Xid (PCI:0000:3b:00): 79, pid='<unknown>', name=<unknown>, "
    "GPU has fallen off the bus.",
    "[Mon Nov 23 12:00:01 2026] NVRM: Xid (0000:03:00): 62, Channel 00000001",
    "Nov 23 12:00:06 gpu-node-7 kernel: [ 2044.301877] NVRM: Xid (PCI:0000:b3:00): 48, "
    "An uncorrectable double bit error (DBE) has been detected on GPU",
    "2026-11-23T12:00:09.123456+00:00 gpu-node-7 kernel: NVRM: Xid (PCI:0000:b3:00): 154, "
    "GPU recovery action changed from 0x0 (None) to 0x2 (Node Reboot Required)",
    "NVRM: Xid (PCI:0000:01:00): 45, pid=12542, name=python3, channel 0x00000002",
]
ALPHABET = string.printable + "\x00\x1b\u00e9\u0662\u00b2\ufffd()[]:,;='<>-"


def mutate(line: str, rng: random.Random) -> str:
    chars = list(line)
    for _ in range(rng.randint(1, 6)):
        if not chars:
            break
        position = rng.randrange(len(chars))
        operation = rng.choice(("delete", "insert", "replace", "truncate", "duplicate"))
        if operation == "delete":
            del chars[position]
        elif operation == "insert":
            chars.insert(position, rng.choice(ALPHABET))
        elif operation == "replace":
            chars[position] = rng.choice(ALPHABET)
        elif operation == "truncate":
            del chars[position:]
        else:
            chars[position:position] = chars[position : position + rng.randint(1, 20)]
    return "".join(chars)


def test_fuzzed_bytes_strings_and_mutated_real_lines_never_raise() -> None:
    rng = random.Random(20261123)
    parser = XidParser(max_gpus=8)
    for _ in range(3000):
        kind = rng.randrange(4)
        line: str | bytes
        if kind == 0:
            line = rng.randbytes(rng.randint(0, 300))
        elif kind == 1:
            line = "".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, 300)))
        elif kind == 2:
            line = mutate(rng.choice(REAL_LINES), rng)
        else:
            line = mutate(rng.choice(REAL_LINES), rng).encode("utf-8", errors="replace")
            line = line[: rng.randint(0, len(line))]
        event = parser.feed(line)
        if event is not None:
            assert normalise_pci(event.pci) == event.pci
            assert event.xid >= 0
            assert isinstance(event.to_json(), dict)
    assert len(parser.gpus) <= 8


def test_a_huge_line_is_read_without_trouble() -> None:
    line = "[ 1.0] NVRM: Xid (0000:03:00): 62, " + "A" * 1_000_000

    event = parse_one(line)

    assert event.xid == 62
    assert len(event.raw) > 1_000_000
