"""The SQLite store's schema and its synchronous operations on one connection.

Counterpart of `store.sqlite`, which runs these on its worker thread. Documents are kept
MVCC-style: a row per version, alive from `created_rev` until `deleted_rev` (NULL = current),
so a snapshot at revision r is one indexed query and a revision's diff is the rows created or
deleted at it. Every commit is one `BEGIN IMMEDIATE` transaction: the current revision is read
under the write lock, so several processes on one file serialize and never reuse a number.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from hyperwall.store.base import (
    Compacted,
    Conflict,
    DocKey,
    InvalidDocument,
    LedgerEntry,
    Resync,
    Revision,
    RevisionInfo,
    Snapshot,
    StoreError,
    TokenRecord,
    UnknownRevision,
    summarize,
)
from hyperwall.store.changes import BodyChange, Prepared, canonical, decode, plan
from hyperwall.store.ledger import GENESIS, entry, entry_of_revision

SCHEMA_VERSION = 3  # 2: tokens.expires; 3: the audit ledger

_LEDGER_DDL = """
CREATE TABLE ledger (
    number INTEGER PRIMARY KEY,         -- the revision's number, never compacted
    body   TEXT NOT NULL,               -- canonical JSON record (store.ledger)
    hash   TEXT NOT NULL                -- SHA-256 of body, the next record's prev
)
"""

_DDL = (
    """
CREATE TABLE revisions (
    number  INTEGER PRIMARY KEY,
    author  TEXT NOT NULL,
    time    REAL NOT NULL,
    message TEXT NOT NULL
);
CREATE TABLE documents (
    kind        TEXT NOT NULL,
    tenant      TEXT NOT NULL,          -- '' = provider scope
    name        TEXT NOT NULL,
    body        TEXT NOT NULL,          -- canonical JSON
    created_rev INTEGER NOT NULL,
    deleted_rev INTEGER,                -- NULL = current version
    PRIMARY KEY (kind, tenant, name, created_rev)
);
CREATE UNIQUE INDEX documents_current ON documents (kind, tenant, name)
    WHERE deleted_rev IS NULL;
CREATE INDEX documents_created ON documents (created_rev);
CREATE INDEX documents_deleted ON documents (deleted_rev) WHERE deleted_rev IS NOT NULL;
CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT INTO meta (key, value) VALUES ('floor', 0);
CREATE TABLE tokens (
    id          TEXT PRIMARY KEY,
    sha256_hash TEXT NOT NULL UNIQUE,
    role        TEXT NOT NULL,
    tenant      TEXT,
    host        TEXT,
    created     REAL NOT NULL,
    expires     REAL                    -- NULL = never
);
CREATE TABLE statuses (host TEXT PRIMARY KEY, body TEXT NOT NULL);
CREATE TABLE inventory (host TEXT PRIMARY KEY, body TEXT NOT NULL);
"""
    + _LEDGER_DDL
)


def connect(path: str) -> sqlite3.Connection:
    """Open (creating if needed) the store file: WAL, synchronous=FULL, schema checked."""
    conn = sqlite3.connect(path, timeout=30.0, isolation_level=None)
    mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    if str(mode).lower() != "wal":
        conn.close()
        raise StoreError(f"{path}: cannot switch to WAL journal mode (got {mode})")
    conn.execute("PRAGMA synchronous=FULL")
    with _write(conn):
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version == 0:
            for statement in _DDL.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        elif version in (1, 2):
            if version == 1:  # version 2 added token expiry
                conn.execute("ALTER TABLE tokens ADD COLUMN expires REAL")
            _add_ledger(conn)  # version 3 added the audit ledger
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        elif version != SCHEMA_VERSION:
            raise StoreError(f"{path}: schema version {version}, this code knows {SCHEMA_VERSION}")
    return conn


def _add_ledger(conn: sqlite3.Connection) -> None:
    """The ledger of a file from before it: records for the revisions still kept, chained
    from the oldest (in the migration's transaction: all or nothing)."""
    conn.execute(_LEDGER_DDL)
    prev = GENESIS
    low, current = max(_floor(conn), 1), _current(conn)
    while low <= current:
        high = min(current, low + 99)
        for revision in _revisions(conn, low, high):
            made = entry_of_revision(revision, prev)
            _put_ledger(conn, made)
            prev = made.hash
        low = high + 1


def _put_ledger(conn: sqlite3.Connection, made: LedgerEntry) -> None:
    conn.execute(
        "INSERT INTO ledger (number, body, hash) VALUES (?, ?, ?)",
        (made.number, made.body, made.hash),
    )


@contextmanager
def _read(conn: sqlite3.Connection) -> Iterator[None]:
    """One read transaction: every query inside sees the same committed state."""
    conn.execute("BEGIN")
    try:
        yield
    finally:
        conn.execute("COMMIT")


@contextmanager
def _write(conn: sqlite3.Connection) -> Iterator[None]:
    """One write transaction, holding the database write lock from its first statement."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _current(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT COALESCE(MAX(number), 0) FROM revisions").fetchone()
    return int(row[0])


def _floor(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT value FROM meta WHERE key = 'floor'").fetchone()[0])


def _key(kind: str, tenant: str, name: str) -> DocKey:
    return DocKey(kind, tenant or None, name)


def _check(conn: sqlite3.Connection, revision: int, lowest: int = 0) -> int:
    """Raise unless `revision` is kept; returns the current revision."""
    current = _current(conn)
    if revision < lowest or revision > current:
        raise UnknownRevision(f"no revision {revision} (current is {current})")
    floor = _floor(conn)
    if revision < floor:
        raise Compacted(revision, floor)
    return current


# -- documents ------------------------------------------------------------------------------


def current_revision(conn: sqlite3.Connection) -> int:
    return _current(conn)


def commit(
    conn: sqlite3.Connection,
    prepared: Prepared,
    author: str,
    message: str,
    expect_revision: int | None,
    now: float,
) -> Revision | None:
    with _write(conn):
        current = _current(conn)
        if expect_revision is not None and expect_revision != current:
            raise Conflict(expect_revision, current)
        bodies: dict[DocKey, str] = {}
        for key in prepared.touched:
            row = conn.execute(
                "SELECT body FROM documents WHERE kind = ? AND tenant = ? AND name = ?"
                " AND deleted_rev IS NULL",
                (key.kind, key.tenant or "", key.name),
            ).fetchone()
            if row is not None:
                bodies[key] = row[0]
        changes = plan(prepared, bodies)
        if not changes:
            return None
        number = current + 1
        conn.execute(
            "INSERT INTO revisions (number, author, time, message) VALUES (?, ?, ?, ?)",
            (number, author, now, message),
        )
        row = conn.execute("SELECT hash FROM ledger WHERE number = ?", (current,)).fetchone()
        _put_ledger(conn, entry(number, author, now, message, changes, row[0] if row else GENESIS))
        for change in changes:
            k = (change.key.kind, change.key.tenant or "", change.key.name)
            if change.before is not None:
                conn.execute(
                    "UPDATE documents SET deleted_rev = ? WHERE kind = ? AND tenant = ?"
                    " AND name = ? AND deleted_rev IS NULL",
                    (number, *k),
                )
            if change.after is not None:
                conn.execute(
                    "INSERT INTO documents (kind, tenant, name, body, created_rev)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (*k, change.after, number),
                )
    decoded = tuple(c.decoded() for c in changes)
    return Revision(summarize(number, author, now, message, decoded), decoded)


def snapshot(conn: sqlite3.Connection, revision: int | None) -> Snapshot:
    with _read(conn):
        if revision is None:  # the common case: only current versions, via their index
            at = _current(conn)
            rows = conn.execute(
                "SELECT kind, tenant, name, body FROM documents WHERE deleted_rev IS NULL"
            ).fetchall()
        else:
            at = revision
            _check(conn, at)
            rows = conn.execute(
                "SELECT kind, tenant, name, body FROM documents WHERE created_rev <= ?"
                " AND (deleted_rev IS NULL OR deleted_rev > ?)",
                (at, at),
            ).fetchall()
    return Snapshot(at, {_key(k, t, n): decode(body) for k, t, n, body in rows})


def _revisions(conn: sqlite3.Connection, low: int, high: int) -> list[Revision]:
    """The kept revisions numbered low..high with their diffs, oldest first."""
    heads = conn.execute(
        "SELECT number, author, time, message FROM revisions WHERE number BETWEEN ? AND ?"
        " ORDER BY number",
        (low, high),
    ).fetchall()
    sides: dict[int, dict[DocKey, list[str | None]]] = {row[0]: {} for row in heads}
    rows = conn.execute(
        "SELECT kind, tenant, name, body, created_rev, deleted_rev FROM documents"
        " WHERE created_rev BETWEEN ?1 AND ?2 OR deleted_rev BETWEEN ?1 AND ?2",
        (low, high),
    ).fetchall()
    for kind, tenant, name, body, created, deleted in rows:
        key = _key(kind, tenant, name)
        if created in sides:
            sides[created].setdefault(key, [None, None])[1] = body
        if deleted in sides:
            sides[deleted].setdefault(key, [None, None])[0] = body
    out = []
    for number, author, time, message in heads:
        by_key = sides[number]
        changes = tuple(
            BodyChange(k, by_key[k][0], by_key[k][1]).decoded()
            for k in sorted(by_key, key=DocKey.sort_key)
        )
        out.append(Revision(summarize(number, author, time, message, changes), changes))
    return out


def history(conn: sqlite3.Connection, limit: int, before: int | None) -> list[RevisionInfo]:
    if limit <= 0:
        return []
    with _read(conn):
        below = _current(conn) + 1 if before is None else before
        numbers = [
            int(row[0])
            for row in conn.execute(
                "SELECT number FROM revisions WHERE number < ? ORDER BY number DESC LIMIT ?",
                (below, limit),
            )
        ]
        if not numbers:
            return []
        revisions = _revisions(conn, min(numbers), max(numbers))
    return [r.info for r in reversed(revisions)]


def revision_info(conn: sqlite3.Connection, number: int) -> Revision:
    with _read(conn):
        _check(conn, number, lowest=1)
        return _revisions(conn, number, number)[0]


def revisions(conn: sqlite3.Connection, low: int, high: int) -> list[Revision]:
    with _read(conn):
        return _revisions(conn, low, high)


def ledger(conn: sqlite3.Connection, low: int, high: int | None) -> list[LedgerEntry]:
    rows = conn.execute(
        "SELECT number, body, hash FROM ledger WHERE number >= ? AND number <= ? ORDER BY number",
        (low, 2**63 - 1 if high is None else high),
    ).fetchall()
    return [LedgerEntry(int(n), body, digest) for n, body, digest in rows]


def read_after(conn: sqlite3.Connection, position: int, limit: int) -> Resync | list[Revision]:
    """Up to `limit` revisions after `position`, or Resync if `position` is not kept."""
    with _read(conn):
        current = _current(conn)
        if position < _floor(conn) or position > current:
            return Resync(current)
        if position == current:
            return []
        return _revisions(conn, position + 1, min(current, position + limit))


def compact(conn: sqlite3.Connection, keep_from: int) -> None:
    with _write(conn):
        current = _current(conn)
        if keep_from > current:
            raise UnknownRevision(f"cannot compact to {keep_from}: current is {current}")
        if keep_from <= _floor(conn):
            return
        # Versions gone before keep_from are invisible at every kept revision; versions
        # deleted at keep_from stay, as the "before" side of revision keep_from's diff.
        conn.execute(
            "DELETE FROM documents WHERE deleted_rev IS NOT NULL AND deleted_rev < ?", (keep_from,)
        )
        conn.execute("DELETE FROM revisions WHERE number < ?", (keep_from,))
        conn.execute("UPDATE meta SET value = ? WHERE key = 'floor'", (keep_from,))


# -- tokens and host reports ----------------------------------------------------------------

_TOKEN_COLUMNS = "id, sha256_hash, role, tenant, host, created, expires"


def _token(row: Any) -> TokenRecord:
    return TokenRecord(*row)


def put_token(conn: sqlite3.Connection, token: TokenRecord) -> None:
    with _write(conn):
        row = conn.execute(
            "SELECT id FROM tokens WHERE sha256_hash = ? AND id != ?",
            (token.sha256_hash, token.id),
        ).fetchone()
        if row is not None:
            raise InvalidDocument(f"token {row[0]!r} already has this hash")
        conn.execute(
            f"INSERT OR REPLACE INTO tokens ({_TOKEN_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                token.id,
                token.sha256_hash,
                token.role,
                token.tenant,
                token.host,
                token.created,
                token.expires,
            ),
        )


def token_by_hash(conn: sqlite3.Connection, sha256_hash: str) -> TokenRecord | None:
    row = conn.execute(
        f"SELECT {_TOKEN_COLUMNS} FROM tokens WHERE sha256_hash = ?", (sha256_hash,)
    ).fetchone()
    return None if row is None else _token(row)


def list_tokens(conn: sqlite3.Connection) -> list[TokenRecord]:
    rows = conn.execute(f"SELECT {_TOKEN_COLUMNS} FROM tokens ORDER BY id").fetchall()
    return [_token(row) for row in rows]


def delete_token(conn: sqlite3.Connection, token_id: str) -> bool:
    with _write(conn):
        return conn.execute("DELETE FROM tokens WHERE id = ?", (token_id,)).rowcount > 0


def has_tokens(conn: sqlite3.Connection) -> bool:
    return bool(conn.execute("SELECT EXISTS (SELECT 1 FROM tokens)").fetchone()[0])


def put_report(conn: sqlite3.Connection, table: str, host: str, value: Any) -> None:
    """Replace a host's report. Without an fsync (WAL, synchronous=NORMAL): a report is the
    latest value, re-sent every few seconds, so losing the last ones to a power cut costs
    nothing, while 100 agents' fsyncs would hold up every commit behind them."""
    assert table in ("statuses", "inventory")
    conn.execute("PRAGMA synchronous=NORMAL")
    try:
        with _write(conn):
            conn.execute(
                f"INSERT OR REPLACE INTO {table} (host, body) VALUES (?, ?)",
                (host, canonical(value)),
            )
    finally:
        conn.execute("PRAGMA synchronous=FULL")


def reports(conn: sqlite3.Connection, table: str) -> dict[str, Any]:
    assert table in ("statuses", "inventory")
    rows = conn.execute(f"SELECT host, body FROM {table} ORDER BY host").fetchall()
    return {host: json.loads(body) for host, body in rows}
