"""The manager's flow store: SQLite schema and synchronous operations on one connection.

Counterpart of `flow_store`, which runs these on its worker thread. A separate database
file (not the document store: etcd is no log store, and flow writes must not contend with
revisions). One row per record: its JSON as received, and the columns the filters need,
indexed by time, tenant, workload and rule. Rows get increasing ids in commit order: a
`--follow` cursor is the last id seen.

Shipping is exactly-once per host: every batch names the agent's file and the byte range
its records came from, and `flow_positions` keeps, per host, the file and end offset of the
last batch stored, in the same transaction as the rows. A batch that starts before that end
in the same file was stored already (the agent crashed before it saved its cursor): it is
not stored again, and the answer tells the agent where to go on from.

Retention (`expire`): rows older than the age limit, then the oldest rows until the pages
in use fit the size limit; freed pages go back to the file system (incremental vacuum).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hyperwall.flows.filter import PROVIDER, FlowFilter, tenant_of, time_us

SCHEMA_VERSION = 1
WAL_LIMIT = 4 * 1024 * 1024  # bytes the write-ahead log keeps after a checkpoint

_DDL = """
CREATE TABLE flows (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    t        INTEGER NOT NULL,          -- record time, microseconds since the epoch
    host     TEXT NOT NULL,             -- the agent that shipped it
    tenant   TEXT NOT NULL,             -- tenant of the workload, '' for provider or none
    workload TEXT NOT NULL,             -- '' if the record names none
    rule     TEXT NOT NULL,
    action   TEXT NOT NULL,
    record   TEXT NOT NULL              -- the JSON object as shipped
);
CREATE INDEX flows_t ON flows (t);
CREATE INDEX flows_tenant ON flows (tenant, t);
CREATE INDEX flows_workload ON flows (workload, t);
CREATE INDEX flows_rule ON flows (rule, t);
CREATE TABLE flow_positions (
    host   TEXT PRIMARY KEY,
    file   TEXT NOT NULL,               -- the agent's file identity (flows.tail.FileId)
    offset INTEGER NOT NULL             -- end of the last batch stored from it
);
CREATE TABLE flow_meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


@dataclass(frozen=True, slots=True)
class Position:
    """Where a host's shipping stands: a file of its flow log and an offset in it."""

    file: str
    offset: int


@dataclass(frozen=True, slots=True)
class Stored:
    """What a batch did: rows stored (0 for a replay) and the host's position after it."""

    stored: int
    position: Position


@dataclass(frozen=True, slots=True)
class Page:
    """Records of a query, oldest first, and the cursor to follow on from."""

    records: list[dict[str, Any]]
    cursor: int


def connect(path: str) -> sqlite3.Connection:
    """Open (and create) the flow database; WAL, so readers never block the writer."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    conn.execute("PRAGMA auto_vacuum = INCREMENTAL")  # only takes effect on a new file
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute(f"PRAGMA journal_size_limit = {WAL_LIMIT}")
    conn.execute("BEGIN IMMEDIATE")
    try:
        exists = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'flow_meta'"
        ).fetchone()
        if exists is None:
            for statement in _DDL.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute("INSERT INTO flow_meta VALUES ('schema', ?)", (SCHEMA_VERSION,))
        else:
            row = conn.execute("SELECT value FROM flow_meta WHERE key = 'schema'").fetchone()
            if row is None or row[0] != SCHEMA_VERSION:
                raise RuntimeError(f"{path}: flow database schema {row} != {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        conn.close()
        raise
    return conn


def _row(host: str, record: dict[str, Any]) -> tuple[object, ...]:
    workload = record.get("workload")
    return (
        time_us(str(record["time"])),
        host,
        tenant_of(workload) or "",
        workload if isinstance(workload, str) else "",
        str(record.get("rule") or ""),
        str(record.get("action") or ""),
        json.dumps(record, separators=(",", ":"), ensure_ascii=False),
    )


def position(conn: sqlite3.Connection, host: str) -> Position | None:
    row = conn.execute("SELECT file, offset FROM flow_positions WHERE host = ?", (host,)).fetchone()
    return Position(row[0], row[1]) if row else None


def store_batch(
    conn: sqlite3.Connection,
    host: str,
    file: str,
    offset: int,
    end: int,
    records: Sequence[dict[str, Any]],
) -> Stored:
    """Store a batch read from bytes [offset, end) of the host's file `file`, unless the
    host's position shows it stored already; one transaction with the new position.
    Records must be valid (their `time` parses: the route checks)."""
    rows = [_row(host, r) for r in records]
    conn.execute("BEGIN IMMEDIATE")
    try:
        known = position(conn, host)
        if known is not None and known.file == file and offset < known.offset:
            conn.execute("COMMIT")
            return Stored(0, known)
        conn.executemany(
            "INSERT INTO flows (t, host, tenant, workload, rule, action, record)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        conn.execute(
            "INSERT INTO flow_positions (host, file, offset) VALUES (?, ?, ?)"
            " ON CONFLICT (host) DO UPDATE SET file = excluded.file, offset = excluded.offset",
            (host, file, end),
        )
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return Stored(len(rows), Position(file, end))


def _where(flt: FlowFilter) -> tuple[str, list[object]]:
    """The SQL condition selecting exactly what `flt.matches` accepts."""
    parts: list[str] = []
    args: list[object] = []
    if flt.tenant is not None:
        parts.append("tenant = ?")
        args.append("" if flt.tenant == PROVIDER else flt.tenant)
    if flt.workload is not None:
        if "/" in flt.workload:
            parts.append("workload = ?")
            args.append(flt.workload)
        else:  # the name in any tenant: 'acme/db-1' ends with '/db-1'
            parts.append("(workload = ? OR substr(workload, -?) = ?)")
            args += [flt.workload, len(flt.workload) + 1, "/" + flt.workload]
    if flt.rule is not None:  # the rule, or a rule under it ('/' + 1 == '0')
        parts.append("(rule = ? OR (rule > ? AND rule < ?))")
        args += [flt.rule, flt.rule + "/", flt.rule + "0"]
    if flt.action is not None:
        parts.append("action = ?")
        args.append(flt.action)
    if flt.since is not None:
        parts.append("t >= ?")
        args.append(flt.since)
    if flt.until is not None:
        parts.append("t < ?")
        args.append(flt.until)
    return (" AND ".join(parts) or "1"), args


def query(conn: sqlite3.Connection, flt: FlowFilter, limit: int, after: int | None) -> Page:
    """Without `after`: the newest `limit` matching records (by time), oldest first, and
    the newest id as the cursor. With `after`: matching records stored after that id, in
    the order they were stored; the cursor is the last id looked at."""
    where, args = _where(flt)
    conn.execute("BEGIN")  # one snapshot for the rows and the cursor
    try:
        top = conn.execute("SELECT COALESCE(MAX(id), 0) FROM flows").fetchone()[0]
        if after is None:
            rows = conn.execute(
                f"SELECT id, record FROM flows WHERE {where} AND id <= ?"
                " ORDER BY t DESC, id DESC LIMIT ?",
                [*args, top, limit],
            ).fetchall()
            rows.reverse()
            cursor = top
        else:
            rows = conn.execute(
                f"SELECT id, record FROM flows WHERE {where} AND id > ? AND id <= ?"
                " ORDER BY id LIMIT ?",
                [*args, after, top, limit],
            ).fetchall()
            cursor = rows[-1][0] if len(rows) == limit else max(after, top)
    finally:
        conn.execute("COMMIT")
    return Page([json.loads(r[1]) for r in rows], cursor)


def used_bytes(conn: sqlite3.Connection) -> int:
    """Bytes of the file's pages in use (the file's size without its free pages)."""
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    free = conn.execute("PRAGMA freelist_count").fetchone()[0]
    size = conn.execute("PRAGMA page_size").fetchone()[0]
    return int((pages - free) * size)


def count(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT COUNT(*) FROM flows").fetchone()[0])


def expire(conn: sqlite3.Connection, older_than: int | None, max_bytes: int | None) -> int:
    """Delete rows with time before `older_than` (µs), then the oldest rows (by time) in
    steps until the pages in use fit `max_bytes`; return the rows deleted."""
    deleted = 0
    if older_than is not None:
        deleted += _delete(conn, "DELETE FROM flows WHERE t < ?", (older_than,))
    if max_bytes is not None:
        for _ in range(1000):  # each step deletes at least 1/16 of the rows
            if used_bytes(conn) <= max_bytes:
                break
            rows = count(conn)
            if rows == 0:
                break
            step = max(1, rows // 16)
            deleted += _delete(
                conn,
                "DELETE FROM flows WHERE id IN (SELECT id FROM flows ORDER BY t, id LIMIT ?)",
                (step,),
            )
    return deleted


def _delete(conn: sqlite3.Connection, sql: str, args: tuple[object, ...]) -> int:
    conn.execute("BEGIN IMMEDIATE")
    try:
        n = conn.execute(sql, args).rowcount
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    if n:
        conn.execute("PRAGMA incremental_vacuum")
    return int(n)
