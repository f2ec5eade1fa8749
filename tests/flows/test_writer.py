"""The flow log writer: whole lines, rotation to PATH.1..N by size, bounded disk use, and a
line torn by a crash ended on reopening."""

from __future__ import annotations

from pathlib import Path

import pytest

from hyperwall.flows.record import FlowRecord, decode, encode
from hyperwall.flows.tail import log_files
from hyperwall.flows.writer import FlowLogWriter, rotated


def _records(n: int, start: int = 0) -> list[FlowRecord]:
    return [FlowRecord(time=i, rule=f"acme/p/r{i}", action="drop") for i in range(start, start + n)]


def _read_all(path: Path) -> list[FlowRecord]:
    out = []
    for f in log_files(path):
        out += [decode(line) for line in f.read_bytes().splitlines()]
    return out


def test_rotation_keeps_order_and_bounds_disk(tmp_path: Path) -> None:
    path = tmp_path / "hv1" / "flows.jsonl"
    line = len(encode(_records(1)[0]))
    with FlowLogWriter(path, max_bytes=10 * line + 5, backups=2) as writer:
        for chunk in range(10):
            writer.write(_records(7, chunk * 7))
        assert writer.lines == 70
    files = log_files(path)
    assert files == [rotated(path, 2), rotated(path, 1), path]
    assert not rotated(path, 3).exists()
    sizes = [f.stat().st_size for f in files]
    assert all(s <= 10 * line + 5 for s in sizes)
    kept = _read_all(path)
    assert [r.time for r in kept] == list(range(70 - len(kept), 70))  # the newest, in order
    assert len(kept) >= 20


def test_a_rotated_file_keeps_its_inode(tmp_path: Path) -> None:
    path = tmp_path / "flows.jsonl"
    line = len(encode(_records(1)[0]))
    writer = FlowLogWriter(path, max_bytes=3 * line, backups=1)
    writer.write(_records(3))
    inode = path.stat().st_ino
    writer.write(_records(1, 3))
    assert rotated(path, 1).stat().st_ino == inode
    assert path.stat().st_ino != inode
    assert writer.rotations == 1
    writer.close()


def test_reopening_appends_and_ends_a_torn_line(tmp_path: Path) -> None:
    path = tmp_path / "flows.jsonl"
    with FlowLogWriter(path) as writer:
        writer.write(_records(2))
    with path.open("ab") as f:
        f.write(b'{"time": "2026-12-')  # the agent died inside a write
    with FlowLogWriter(path) as writer:
        writer.write(_records(1, 2))
    lines = path.read_bytes().splitlines()
    assert len(lines) == 4
    assert decode(lines[3]).time == 2
    with pytest.raises(ValueError):
        decode(lines[2])


def test_no_backups_and_bad_sizes(tmp_path: Path) -> None:
    path = tmp_path / "flows.jsonl"
    line = len(encode(_records(1)[0]))
    with FlowLogWriter(path, max_bytes=2 * line, backups=0) as writer:
        writer.write(_records(5))
    assert [decode(x).time for x in path.read_bytes().splitlines()] == [4]
    with pytest.raises(ValueError, match=r"flows\.jsonl"):
        FlowLogWriter(path, max_bytes=0)


def test_a_line_longer_than_a_file_is_written_alone(tmp_path: Path) -> None:
    path = tmp_path / "flows.jsonl"
    with FlowLogWriter(path, max_bytes=10, backups=1) as writer:
        writer.write(_records(2))
    assert len(path.read_bytes().splitlines()) == 1
    assert len(rotated(path, 1).read_bytes().splitlines()) == 1
