"""Reading kernel logs incrementally: cursors, truncation, rotation, partial lines, kmsg records."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from blackstart.rescue.agent.kmsg import (
    Cursor,
    KmsgReader,
    LogRecord,
    TextLogReader,
    parse_kmsg_record,
    record_id,
    resume_file_cursor,
    resume_kmsg_cursor,
    split_lines,
)

XID_62 = "NVRM: Xid (0000:03:00): 62, Channel 00000001"


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def reader(
    path: Path, cursor: Cursor | None = None, boot: str = "boot-a", **kw: object
) -> TextLogReader:
    return TextLogReader(path, cursor, boot_id=lambda: boot, **kw)  # type: ignore[arg-type]


def texts(records: list[LogRecord]) -> list[str]:
    return [r.text for r in records]


# ----------------------------------------------------------------- split_lines
def test_complete_lines_are_cut_at_newlines_with_their_offsets() -> None:
    lines, consumed = split_lines(b"one\ntwo\n", start=100)
    assert lines == [(100, b"one"), (104, b"two")]
    assert consumed == 8


def test_a_trailing_line_without_newline_waits_for_the_next_read() -> None:
    lines, consumed = split_lines(b"one\ntw", start=0)
    assert lines == [(0, b"one")]
    assert consumed == 4


def test_a_trailing_line_is_taken_when_the_writer_went_quiet() -> None:
    lines, consumed = split_lines(b"one\ntw", start=0, take_partial=True)
    assert lines == [(0, b"one"), (4, b"tw")]
    assert consumed == 6


def test_an_overlong_line_is_cut_to_the_limit_and_consumed_whole() -> None:
    lines, consumed = split_lines(b"x" * 50 + b"\nok\n", start=0, max_line=10)
    assert lines == [(0, b"x" * 10), (51, b"ok")]
    assert consumed == 54


# ----------------------------------------------------------------- cursors
def test_a_file_cursor_continues_in_the_same_file() -> None:
    saved = Cursor(kind="file", boot_id="a", position=120, inode=7, base=0)
    assert resume_file_cursor(saved, inode=7, size=200, boot_id="a") == saved


def test_a_truncated_file_is_read_from_its_start_with_offsets_counting_on() -> None:
    saved = Cursor(kind="file", boot_id="a", position=120, inode=7, base=0)
    resumed = resume_file_cursor(saved, inode=7, size=30, boot_id="a")
    assert (resumed.position, resumed.base, resumed.inode) == (120, 120, 7)


def test_a_rotated_file_is_read_from_its_start() -> None:
    saved = Cursor(kind="file", boot_id="a", position=120, inode=7, base=0)
    resumed = resume_file_cursor(saved, inode=8, size=500, boot_id="a")
    assert (resumed.position, resumed.base, resumed.inode) == (120, 120, 8)


def test_a_reboot_does_not_move_a_file_cursor_but_becomes_its_boot() -> None:
    saved = Cursor(kind="file", boot_id="a", position=120, inode=7, base=0)
    resumed = resume_file_cursor(saved, inode=7, size=200, boot_id="b")
    assert (resumed.position, resumed.boot_id) == (120, "b")


def test_a_kmsg_cursor_holds_within_its_boot_only() -> None:
    saved = Cursor(kind="kmsg", boot_id="a", position=41)
    assert resume_kmsg_cursor(saved, "a") == saved
    assert resume_kmsg_cursor(saved, "b") == Cursor(kind="kmsg", boot_id="b", position=-1)
    assert resume_kmsg_cursor(None, "a").position == -1


def test_a_cursor_survives_a_json_round_trip() -> None:
    cursor = Cursor(kind="file", boot_id="a", position=9, inode=3, base=4)
    assert Cursor.from_json(cursor.to_json()) == cursor


@pytest.mark.parametrize(
    "data", [{"kind": "tape"}, {"kind": "file"}, {"kind": "kmsg", "bootId": "a", "position": "x"}]
)
def test_a_malformed_cursor_is_refused(data: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        Cursor.from_json(data)


def test_a_record_id_is_boot_and_position() -> None:
    assert record_id("3f1c", 1184) == "3f1c:1184"
    assert record_id("", 5) == "unknown:5"


# ----------------------------------------------------------------- kmsg records
def test_a_kmsg_record_gives_its_sequence_and_first_line() -> None:
    record = f"4,1184,1843308145,-;{XID_62}\n SUBSYSTEM=pci\n DEVICE=+pci:0000:03:00.0\n".encode()
    assert parse_kmsg_record(record) == (1184, f"4,1184,1843308145,-;{XID_62}")


@pytest.mark.parametrize("record", [b"", b"garbage", b"4,x,1,-;msg", b"4,1;msg", b"\xff\xfe"])
def test_a_malformed_kmsg_record_is_none(record: bytes) -> None:
    assert parse_kmsg_record(record) is None


def test_kmsg_records_at_or_before_the_cursor_are_skipped(tmp_path: Path) -> None:
    device = tmp_path / "kmsg"
    device.write_bytes(b"")
    saved = Cursor(kind="kmsg", boot_id="a", position=11)
    kmsg = KmsgReader(saved, "a", path=device, clock=Clock())
    try:
        records = kmsg.accept(
            [
                b"6,10,1,-;old",
                b"6,11,2,-;old too",
                b"6,12,3,-;new",
                b"junk",
                b"4,13,4,-;" + XID_62.encode(),
            ]
        )
    finally:
        kmsg.close()
    assert [(r.position, r.text.split(";", 1)[1]) for r in records] == [(12, "new"), (13, XID_62)]
    assert [r.id for r in records] == ["a:12", "a:13"]
    assert kmsg.cursor.position == 13


def test_after_a_reboot_kmsg_is_read_from_its_first_record(tmp_path: Path) -> None:
    device = tmp_path / "kmsg"
    device.write_bytes(b"")
    kmsg = KmsgReader(Cursor(kind="kmsg", boot_id="old", position=500), "new", path=device)
    try:
        records = kmsg.accept([b"6,0,1,-;first of the new boot"])
    finally:
        kmsg.close()
    assert [r.id for r in records] == ["new:0"]


def test_an_unreadable_kmsg_device_names_the_path_and_the_remedy(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match=r"cannot open .*missing.*read access"):
        KmsgReader(None, "a", path=tmp_path / "missing")


# ----------------------------------------------------------------- text logs
def test_new_lines_are_read_once_each_with_their_offsets(tmp_path: Path) -> None:
    log = tmp_path / "gpu-0.log"
    log.write_text("boot line\n")
    r = reader(log)
    first = r.read()
    with log.open("a") as f:
        f.write(XID_62 + "\n")
    second = r.read()
    assert texts(first) == ["boot line"]
    assert texts(second) == [XID_62]
    assert second[0].id == "boot-a:10"
    assert r.read() == []
    assert r.cursor.position == log.stat().st_size


def test_a_reader_from_a_saved_cursor_neither_repeats_nor_skips(tmp_path: Path) -> None:
    log = tmp_path / "gpu-0.log"
    log.write_text("a\nb\n")
    first = reader(log)
    assert texts(first.read()) == ["a", "b"]
    saved = first.cursor
    with log.open("a") as f:
        f.write("c\n")  # written while the agent was down
    restarted = reader(log, saved)
    assert texts(restarted.read()) == ["c"]


def test_a_truncated_log_is_read_again_from_its_start_with_new_ids(tmp_path: Path) -> None:
    log = tmp_path / "gpu-0.log"
    log.write_text("first line of the old file\n")
    r = reader(log)
    old = r.read()
    log.write_text("new\n")  # truncated and rewritten: shorter than the cursor
    new = r.read()
    assert texts(new) == ["new"]
    assert new[0].position == old[0].position + len("first line of the old file\n")
    assert new[0].id != old[0].id


def test_a_rotated_log_is_read_from_the_new_files_start(tmp_path: Path) -> None:
    log = tmp_path / "gpu-0.log"
    log.write_text("x" * 10 + "\n")
    r = reader(log)
    r.read()
    os.rename(log, tmp_path / "gpu-0.log.1")
    log.write_text("after rotation, a longer first line\n")
    assert texts(r.read()) == ["after rotation, a longer first line"]


def test_a_line_without_newline_is_read_once_the_file_stops_growing(tmp_path: Path) -> None:
    log = tmp_path / "gpu-0.log"
    clock = Clock()
    r = reader(log, partial_grace=1.0, clock=clock)
    log.write_bytes(XID_62.encode())
    assert r.read() == []
    clock.now += 0.5
    with log.open("ab") as f:
        f.write(b" more")
    assert r.read() == []  # still growing
    clock.now += 0.9
    assert r.read() == []
    clock.now += 0.2
    assert texts(r.read()) == [XID_62 + " more"]
    assert r.read() == []


def test_from_end_skips_what_a_log_already_holds(tmp_path: Path) -> None:
    log = tmp_path / "gpu-0.log"
    log.write_text(XID_62 + "\n")
    r = reader(log, from_end=True)
    assert r.read() == []
    with log.open("a") as f:
        f.write("later\n")
    assert texts(r.read()) == ["later"]


def test_from_end_is_the_end_when_the_reader_is_made_not_at_its_first_read(
    tmp_path: Path,
) -> None:
    """The agent says "ready" once its readers exist: a line logged after that, before the
    reader's first poll, is new and must be read, not skipped as old."""
    log = tmp_path / "gpu-0.log"
    log.write_text(XID_62 + "\n")
    r = reader(log, from_end=True)
    with log.open("a") as f:
        f.write("logged after ready\n")
    assert texts(r.read()) == ["logged after ready"]


def test_from_end_on_a_log_that_does_not_exist_yet_reads_all_it_will_hold(
    tmp_path: Path,
) -> None:
    log = tmp_path / "gpu-0.log"
    r = reader(log, from_end=True)
    log.write_text("first line of a new log\n")
    assert texts(r.read()) == ["first line of a new log"]


def test_from_end_does_not_apply_when_a_cursor_was_saved(tmp_path: Path) -> None:
    log = tmp_path / "gpu-0.log"
    log.write_text("a\nb\n")
    saved = Cursor(kind="file", boot_id="boot-a", position=2, inode=log.stat().st_ino)
    assert texts(reader(log, saved, from_end=True).read()) == ["b"]


def test_a_missing_log_reads_as_empty_until_it_appears(tmp_path: Path) -> None:
    log = tmp_path / "later.log"
    r = reader(log)
    assert r.read() == []
    log.write_text("hello\n")
    assert texts(r.read()) == ["hello"]


def test_the_boot_id_of_new_lines_follows_the_node(tmp_path: Path) -> None:
    log = tmp_path / "gpu-0.log"
    boots = ["boot-a"]
    r = TextLogReader(log, None, boot_id=lambda: boots[0])
    log.write_text("before\n")
    before = r.read()
    boots[0] = "boot-b"
    with log.open("a") as f:
        f.write("after\n")
    after = r.read()
    assert [x.id for x in before + after] == ["boot-a:0", "boot-b:7"]
