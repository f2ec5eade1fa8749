"""Flow records from local flow log files (the lab agents' own), filtered and merged by
time: what `hyperwall lab logs` prints.

Counterpart of `flows.writer` (which writes the files: PATH and its rotated PATH.1..N),
`flows.tail` (which lists them, oldest first, and decodes their lines) and `flows.filter`
(the same predicate `GET /v1/flows` applies). Lines that are not records (a line torn by
a crash, or without a readable `time`) are skipped and counted. A file rotated while it is
being read may be missed or read twice: these are a lab's local files, read once.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from hyperwall.flows.filter import FlowFilter, time_us
from hyperwall.flows.tail import decode_lines, log_files


def read_local(
    paths: Iterable[Path], flt: FlowFilter, limit: int | None = None
) -> tuple[list[dict[str, Any]], int]:
    """(the records of the flow logs at `paths` that `flt` matches, oldest first, at most
    the newest `limit`; how many lines were skipped)."""
    found: list[tuple[int, int, dict[str, Any]]] = []
    skipped = 0
    for path in paths:
        for file in log_files(path):
            try:
                data = file.read_bytes()
            except FileNotFoundError:  # rotated out between listing and reading
                continue
            records, bad = decode_lines(data)
            skipped += bad
            for record in records:
                when = record.get("time")
                try:
                    us = time_us(when) if isinstance(when, str) else None
                except ValueError:
                    us = None
                if us is None:
                    skipped += 1
                elif flt.matches(record):
                    found.append((us, len(found), record))
    found.sort(key=lambda item: (item[0], item[1]))  # by time; stable within a time
    records_out = [record for _, _, record in found]
    if limit is not None:
        records_out = records_out[-limit:] if limit else []
    return records_out, skipped
