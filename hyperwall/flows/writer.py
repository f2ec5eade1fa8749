"""The agent's flow log file: JSON lines (`flows.record`) appended to `--flow-log PATH`,
rotated by size like `logging.handlers.RotatingFileHandler`.

Files, newest first: `PATH`, `PATH.1`, ..., `PATH.N` (N = `backups`). When a write would
take `PATH` past `max_bytes`, `PATH.N` is deleted, `PATH.K` renamed to `PATH.K+1` (from
N-1 down to 1), `PATH` renamed to `PATH.1`, and a new `PATH` created. Renaming keeps a
file's inode, so a reader that follows files by inode and offset (the shipper,
`flows.tail`) finds a rotated file under its new name and reads it to its end before it
moves on to the next newer one; the oldest file is gone only once `backups` newer ones are
full. Disk use is bounded: at most (`backups` + 1) * (`max_bytes` + one batch of lines).

Every write is whole lines, one `os.write` of a batch on a file opened for appending, so a
reader never sees a line of a record that is not complete unless the process dies inside
that write. If it did (the file does not end in a newline when it is opened again), the
writer first ends that torn line, so the next record starts on a line of its own: a
reader skips the torn line (`flows.record.decode` rejects it) and loses nothing else.
Lines reach the page cache, not the disk, at each write: a crash of the agent loses
nothing written, a crash of the machine may lose the last seconds.

Counterparts: `agent.flow_sink` (the agent's one writer, shared by `agent.flowlog` and
`agent.connection_log`), `flows.tail` (which lists and reads the files).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from hyperwall.flows.record import FlowRecord, encode

DEFAULT_PATH = Path("/var/log/hyperwall/flows.jsonl")  # the place `hyperwall agent --help` names
MAX_BYTES = 16 * 1024 * 1024
BACKUPS = 4


def rotated(path: Path, index: int) -> Path:
    """`PATH` for index 0, `PATH.K` for index K."""
    return path if index == 0 else path.with_name(f"{path.name}.{index}")


class FlowLogWriter:
    """Appends records to `path`, rotating it at `max_bytes` (keeps `backups` old files)."""

    def __init__(self, path: Path, max_bytes: int = MAX_BYTES, backups: int = BACKUPS) -> None:
        if max_bytes < 1 or backups < 0:
            raise ValueError(f"{path}: max_bytes must be positive and backups not negative")
        self.path = path
        self.max_bytes = max_bytes
        self.backups = backups
        self.lines = 0  # lines written by this writer
        self.rotations = 0
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = -1
        self._size = 0
        self._open()

    def _open(self) -> None:
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        self._size = os.fstat(self._fd).st_size
        if self._size and not _ends_with_newline(self.path, self._size):
            self._size += os.write(self._fd, b"\n")  # end a line torn by a crash

    def _rotate(self) -> None:
        os.close(self._fd)
        self._fd = -1
        if self.backups == 0:
            os.unlink(self.path)
        else:
            rotated(self.path, self.backups).unlink(missing_ok=True)
            for index in range(self.backups - 1, 0, -1):
                source = rotated(self.path, index)
                if source.exists():
                    source.rename(rotated(self.path, index + 1))
            self.path.rename(rotated(self.path, 1))
        self.rotations += 1
        self._open()

    def write_lines(self, lines: list[bytes]) -> None:
        """Append encoded lines (each ending in a newline), rotating first where the file
        would grow past `max_bytes`."""
        start = 0
        while start < len(lines):
            room = self.max_bytes - self._size
            end, used = start, 0
            while end < len(lines) and used + len(lines[end]) <= room:
                used += len(lines[end])
                end += 1
            if end == start:
                if self._size == 0:  # one line longer than a whole file: alone in one
                    end, used = start + 1, len(lines[start])
                else:
                    self._rotate()
                    continue
            self._size += _write_all(self._fd, b"".join(lines[start:end]))
            self.lines += end - start
            start = end

    def write(self, records: Iterable[FlowRecord]) -> None:
        self.write_lines([encode(r) for r in records])

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> FlowLogWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _write_all(fd: int, data: bytes) -> int:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
    return len(data)


def _ends_with_newline(path: Path, size: int) -> bool:
    with path.open("rb") as f:
        f.seek(size - 1)
        return f.read(1) == b"\n"
