"""Reading an agent's flow log files from a saved position: the shipper's side of the
flow log writer's files.

The writer (`flows.writer`) appends JSON lines to PATH and rotates by size like
`logging.handlers.RotatingFileHandler`: PATH becomes PATH.1, PATH.1 becomes PATH.2, ...,
the oldest beyond PATH.N is deleted. A rename keeps a file's inode, so a position is
(`FileId`, byte offset), where the identity is the inode and a hash of the file's first
line (an inode may be reused after a delete; a reused one starts with another first line).

`Tailer.read` returns the next complete lines after the position, oldest file first, at
most `max_records` lines and `max_bytes` bytes; `Tailer.save` persists a position (write to
a temporary file, fsync, rename: a crash leaves the old or the new one, never a torn one).
Nothing is kept in memory between calls but the position: the files are the buffer.

Losses and repeats, by construction: a file rotated out (deleted) before it was read is
lost, and counted in `lost_files`; a line that is not a JSON object (a torn last line
after a crash of the writer, or a line over `MAX_LINE`) is skipped and counted in
`unreadable`. Repeats are the shipper's concern (`agent.flow_shipper`): the manager keeps
where each host's shipping stands and tells a restarted agent to go on from there.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hyperwall.flows.batch import MAX_LINE

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Position:
    file: str  # FileId of the file being read
    offset: int  # bytes of it already shipped


@dataclass(frozen=True, slots=True)
class Chunk:
    """Complete lines [offset, end) of one file, decoded; `records` may be empty when only
    unreadable lines were read (the position still moves on)."""

    file: str
    offset: int
    end: int
    records: list[dict[str, Any]]
    unreadable: int


def log_files(path: Path) -> list[Path]:
    """PATH's rotated files and PATH, oldest first: PATH.N, ..., PATH.1, PATH."""
    numbered = re.compile(re.escape(path.name) + r"\.(\d+)")
    rotated: list[tuple[int, Path]] = []
    try:
        for entry in os.scandir(path.parent):
            match = numbered.fullmatch(entry.name)
            if match:
                rotated.append((int(match.group(1)), Path(entry.path)))
    except FileNotFoundError:
        return []
    files = [p for _, p in sorted(rotated, reverse=True)]
    return [*files, path] if path.exists() else files


def file_id(path: Path) -> str | None:
    """`INODE-HASH` of the file's first line; None while it has no complete line (or is
    gone)."""
    try:
        with open(path, "rb") as f:
            inode = os.fstat(f.fileno()).st_ino
            first = f.readline(MAX_LINE)
    except FileNotFoundError:
        return None
    if not first.endswith(b"\n"):
        return (
            None if len(first) < MAX_LINE else f"{inode}-{hashlib.sha256(first).hexdigest()[:16]}"
        )
    return f"{inode}-{hashlib.sha256(first).hexdigest()[:16]}"


def decode_lines(data: bytes) -> tuple[list[dict[str, Any]], int]:
    """The JSON objects of complete lines, and how many lines were not one."""
    records: list[dict[str, Any]] = []
    bad = 0
    for line in data.splitlines():
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except ValueError:
            bad += 1
            continue
        if isinstance(value, dict):
            records.append(value)
        else:
            bad += 1
    return records, bad


@dataclass
class Tailer:
    """Reads PATH and its rotated files from `position`, persisted in `cursor_path`."""

    path: Path
    cursor_path: Path
    position: Position | None = None
    lost_files: int = 0
    unreadable: int = 0
    _loaded: bool = field(default=False, repr=False)

    def load(self) -> Position | None:
        """The saved position (None: none, or unreadable: start at the oldest file)."""
        try:
            saved = json.loads(self.cursor_path.read_text())
            self.position = Position(str(saved["file"]), int(saved["offset"]))
        except FileNotFoundError:
            self.position = None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning(
                "flow shipping: unreadable cursor %s (%s): from the oldest file",
                self.cursor_path,
                exc,
            )
            self.position = None
        self._loaded = True
        return self.position

    def save(self, position: Position) -> None:
        tmp = self.cursor_path.with_name(self.cursor_path.name + ".tmp")
        data = json.dumps({"file": position.file, "offset": position.offset}).encode()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.cursor_path)
        self.position = position

    def _start(self, files: list[tuple[Path, str]]) -> tuple[int, int]:
        """(index into files, offset) where reading resumes."""
        pos = self.position
        if pos is not None:
            for i, (_, fid) in enumerate(files):
                if fid == pos.file:
                    return i, pos.offset
            self.lost_files += 1
            log.warning("flow shipping: %s rotated out before it was shipped", pos.file)
            self.position = Position(files[0][1], 0)
        return 0, 0

    def read(self, max_records: int, max_bytes: int) -> Chunk | None:
        """The next lines after the position (not saved: `save` once shipped); None when
        there is nothing new."""
        if not self._loaded:
            self.load()
        files: list[tuple[Path, str]] = []
        for p in log_files(self.path):
            fid = file_id(p)
            if fid is None:  # no complete first line yet: nothing after it either
                break
            files.append((p, fid))
        if not files:
            return None
        index, offset = self._start(files)
        while index < len(files):
            path, fid = files[index]
            newest = index == len(files) - 1
            chunk = self._read_file(path, fid, offset, max_records, max_bytes, newest)
            if chunk is not None:
                return chunk
            if newest:
                return None
            index, offset = index + 1, 0  # this one is done: the next newer file
            self.position = Position(files[index][1], 0)
        return None

    def _read_file(
        self, path: Path, fid: str, offset: int, max_records: int, max_bytes: int, newest: bool
    ) -> Chunk | None:
        try:
            with open(path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                if offset > size:  # not the file we knew (truncated): from its start
                    offset = 0
                f.seek(offset)
                data = f.read(max_bytes)
        except FileNotFoundError:  # rotated out between listing and reading
            return None
        cut = _cut(data, max_records)
        if cut == 0:
            if len(data) >= max_bytes:  # one line longer than a whole batch: skip it
                return self._skip_long_line(path, fid, offset)
            if not newest and data:  # a torn last line in a file no longer written
                self.unreadable += 1
                return Chunk(fid, offset, offset + len(data), [], 1)
            return None
        records, bad = decode_lines(data[:cut])
        self.unreadable += bad
        return Chunk(fid, offset, offset + cut, records, bad)

    def _skip_long_line(self, path: Path, fid: str, offset: int) -> Chunk | None:
        with open(path, "rb") as f:
            f.seek(offset)
            skipped = 0
            while True:
                block = f.read(MAX_LINE)
                if not block:
                    return None  # still being written
                at = block.find(b"\n")
                if at >= 0:
                    self.unreadable += 1
                    return Chunk(fid, offset, offset + skipped + at + 1, [], 1)
                skipped += len(block)


def _cut(data: bytes, max_records: int) -> int:
    """Bytes of `data` up to and including the newline ending its `max_records`-th line
    (or its last complete line)."""
    end = 0
    for _ in range(max_records):
        at = data.find(b"\n", end)
        if at < 0:
            break
        end = at + 1
    return end
