"""The shipping contract between an agent and the manager (`POST /v1/agent/HOST/flows`):
how large a batch may be, and what a record must carry to be stored. Pure.

A batch is the complete lines of bytes [offset, end) of one of the agent's flow log files
(`file`: its identity, `flows.tail.FileId`), decoded; at most `MAX_RECORDS` records and
`MAX_BYTES` bytes of lines. The manager needs of a record only what it indexes: `time` (an
RFC 3339 time), `host` (the agent's own host, if present), and `workload`, `rule`, `action`
as strings if present; every other field is kept as it came (records grow fields, e.g.
connection records' counters).
"""

from __future__ import annotations

from collections.abc import Mapping

from hyperwall.flows.filter import time_us

MAX_RECORDS = 1000  # records in one batch
MAX_BYTES = 1024 * 1024  # bytes of JSON lines read into one batch
MAX_LINE = 64 * 1024  # a longer line is not a record: skipped (and counted) by the shipper
MAX_FILE_ID = 128


def record_problem(record: object, host: str) -> tuple[str, str] | None:
    """(field, why) if the manager cannot store `record` shipped by `host`; None if it can."""
    if not isinstance(record, Mapping):
        return "", "a record is a JSON object"
    when = record.get("time")
    if not isinstance(when, str):
        return "time", "missing or not a string (an RFC 3339 time)"
    try:
        time_us(when)
    except ValueError:
        return "time", f"{when[:40]!r} is not an RFC 3339 time"
    if "host" in record and record["host"] != host:
        return "host", f"a record of host {str(record['host'])[:63]!r} shipped by host {host!r}"
    for field in ("workload", "rule", "action"):
        if field in record and not isinstance(record[field], str | None):
            return field, "not a string"
    return None
