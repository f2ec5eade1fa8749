"""Tailing the flow log files: complete lines only, oldest file first across rotations,
a saved position survives a restart, a file rotated out is counted as lost, bad lines are
skipped and counted, a reused inode is not mistaken for the file it replaced."""

from __future__ import annotations

import json
import os
from pathlib import Path

from hyperwall.flows.tail import Position, Tailer, file_id, log_files


def line(n: int) -> bytes:
    return json.dumps({"time": f"2026-12-03T07:00:00.{n:06d}Z", "n": n}).encode() + b"\n"


def append(path: Path, *ns: int) -> None:
    with open(path, "ab") as f:
        for n in ns:
            f.write(line(n))


def rotate(path: Path, keep: int) -> None:
    """What RotatingFileHandler does: PATH.i -> PATH.i+1 (the oldest dropped), PATH -> PATH.1."""
    for i in range(keep - 1, 0, -1):
        src = path.with_name(f"{path.name}.{i}")
        if src.exists():
            os.replace(src, path.with_name(f"{path.name}.{i + 1}"))
    os.replace(path, path.with_name(path.name + ".1"))


def drain(t: Tailer, max_records: int = 1000) -> list[int]:
    """Read everything, saving after each chunk as the shipper does."""
    got: list[int] = []
    while (chunk := t.read(max_records, 1 << 20)) is not None:
        got += [r["n"] for r in chunk.records]
        t.save(Position(chunk.file, chunk.end))
    return got


def test_complete_lines_only_and_restart(tmp_path: Path) -> None:
    log = tmp_path / "flows.jsonl"
    cursor = tmp_path / "cursor.json"
    t = Tailer(log, cursor)
    assert t.read(10, 1 << 20) is None  # no file yet
    append(log, 1, 2)
    with open(log, "ab") as f:
        f.write(line(3)[:10])  # the writer is in the middle of a line
    assert drain(t, 1) == [1, 2]
    with open(log, "ab") as f:
        f.write(line(3)[10:])
    append(log, 4)
    again = Tailer(log, cursor)  # a restarted agent
    assert drain(again) == [3, 4]
    assert drain(Tailer(log, cursor)) == []


def test_rotation_is_followed_oldest_first(tmp_path: Path) -> None:
    log = tmp_path / "flows.jsonl"
    t = Tailer(log, tmp_path / "cursor.json")
    append(log, 1, 2)
    assert drain(t) == [1, 2]
    append(log, 3)
    rotate(log, 3)  # 1,2,3 now in .1
    append(log, 4)
    rotate(log, 3)  # .2: 1-3, .1: 4
    append(log, 5)
    assert [p.name for p in log_files(log)] == ["flows.jsonl.2", "flows.jsonl.1", "flows.jsonl"]
    assert drain(t) == [3, 4, 5]
    assert t.lost_files == 0


def test_a_file_rotated_out_unread_is_counted_lost(tmp_path: Path) -> None:
    log = tmp_path / "flows.jsonl"
    t = Tailer(log, tmp_path / "cursor.json")
    append(log, 1)
    chunk = t.read(1, 1 << 20)
    assert chunk is not None
    t.save(Position(chunk.file, 0))  # nothing shipped yet
    for n in (2, 3, 4):  # three rotations keeping two rotated files: the first is gone
        rotate(log, 2)
        append(log, n)
    assert drain(t) == [2, 3, 4]
    assert t.lost_files == 1
    assert drain(t) == [] and t.lost_files == 1


def test_bad_lines_are_skipped_and_counted(tmp_path: Path) -> None:
    log = tmp_path / "flows.jsonl"
    append(log, 1)
    with open(log, "ab") as f:
        f.write(b"not json\n[1, 2]\n" + b"x" * 300 + b"\n")
    append(log, 2)
    t = Tailer(log, tmp_path / "cursor.json")
    got: list[int] = []
    while (chunk := t.read(1000, 128)) is not None:  # the long line is longer than a batch
        got += [r["n"] for r in chunk.records]
        t.save(Position(chunk.file, chunk.end))
    assert got == [1, 2]
    assert t.unreadable == 3


def test_identity_is_inode_and_first_line(tmp_path: Path) -> None:
    log = tmp_path / "flows.jsonl"
    assert file_id(log) is None
    log.write_bytes(line(1)[:5])
    assert file_id(log) is None  # no complete first line yet
    append(log, 2)
    first = file_id(log)
    assert first is not None and first.startswith(f"{os.stat(log).st_ino}-")
    os.replace(log, tmp_path / "moved")
    assert file_id(tmp_path / "moved") == first  # a rename keeps it
    log.write_bytes(line(7))
    assert file_id(log) != first


def test_an_unreadable_cursor_starts_from_the_oldest_file(tmp_path: Path) -> None:
    log = tmp_path / "flows.jsonl"
    cursor = tmp_path / "cursor.json"
    append(log, 1, 2)
    cursor.write_text("{torn")
    assert drain(Tailer(log, cursor)) == [1, 2]
    assert json.loads(cursor.read_text())["offset"] == len(line(1)) + len(line(2))
