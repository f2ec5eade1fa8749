"""The embedded store: one SQLite file (WAL), no extra process. URL `sqlite:///PATH`.

Every database call runs on one dedicated worker thread that owns the connection
(`sqlite_db` holds the schema and the SQL); coroutines wait for it without blocking the event
loop. Watchers are woken at once by commits made through this object, and poll the file
(`poll_interval`) for commits made by other processes or other store objects on the file.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import sqlite3
import time
from collections.abc import AsyncGenerator, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from hyperwall.store import sqlite_db as db
from hyperwall.store.base import (
    DocKey,
    Document,
    LedgerEntry,
    Resync,
    Revision,
    RevisionInfo,
    Snapshot,
    StoreError,
    TokenRecord,
    WatchEvent,
)
from hyperwall.store.changes import prepare

T = TypeVar("T")

WATCH_BATCH = 100  # revisions read per watcher query


class SqliteStore:
    """`Store` on a SQLite file. Open with `SqliteStore.open(path)`."""

    def __init__(self, executor: ThreadPoolExecutor, conn: sqlite3.Connection, poll: float):
        self._executor = executor
        self._conn = conn
        self._poll = poll
        self._closed = False
        self._wakeups: set[asyncio.Event] = set()

    @classmethod
    async def open(cls, path: str, poll_interval: float = 0.5) -> SqliteStore:
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hyperwall-sqlite")
        loop = asyncio.get_running_loop()
        try:
            conn = await loop.run_in_executor(executor, db.connect, path)
        except BaseException:
            executor.shutdown(wait=False)
            raise
        return cls(executor, conn, poll_interval)

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        if self._closed:
            raise StoreError("store is closed")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, self._conn, *args))

    def _wake_watchers(self) -> None:
        for event in self._wakeups:
            event.set()

    # -- documents ----------------------------------------------------------------------

    async def commit(
        self,
        puts: list[Document],
        deletes: list[DocKey],
        author: str,
        message: str,
        expect_revision: int | None = None,
    ) -> RevisionInfo | None:
        prepared = prepare(puts, deletes)
        revision = await self._call(
            db.commit, prepared, author, message, expect_revision, time.time()
        )
        if revision is None:
            return None
        self._wake_watchers()
        return revision.info

    async def revision(self) -> int:
        return await self._call(db.current_revision)

    async def snapshot(self, revision: int | None = None) -> Snapshot:
        return await self._call(db.snapshot, revision)

    async def history(self, limit: int = 50, before: int | None = None) -> list[RevisionInfo]:
        return await self._call(db.history, limit, before)

    async def revision_info(self, number: int) -> Revision:
        return await self._call(db.revision_info, number)

    async def watch(self, from_revision: int) -> AsyncGenerator[WatchEvent, None]:
        position = from_revision
        wake = asyncio.Event()
        self._wakeups.add(wake)
        try:
            while not self._closed:
                wake.clear()  # before the read: a commit after it sets the event again
                found = await self._call(db.read_after, position, WATCH_BATCH)
                if isinstance(found, Resync):
                    yield found
                    return
                for revision in found:
                    yield revision
                    position = revision.number
                if not found:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(wake.wait(), self._poll)
        finally:
            self._wakeups.discard(wake)

    async def compact(self, keep_from: int) -> None:
        await self._call(db.compact, keep_from)

    async def revisions(self, low: int, high: int) -> list[Revision]:
        return await self._call(db.revisions, low, high)

    async def ledger(self, low: int = 1, high: int | None = None) -> list[LedgerEntry]:
        return await self._call(db.ledger, low, high)

    # -- tokens and host reports --------------------------------------------------------

    async def put_token(self, token: TokenRecord) -> None:
        await self._call(db.put_token, token)

    async def token_by_hash(self, sha256_hash: str) -> TokenRecord | None:
        return await self._call(db.token_by_hash, sha256_hash)

    async def list_tokens(self) -> list[TokenRecord]:
        return await self._call(db.list_tokens)

    async def delete_token(self, token_id: str) -> bool:
        return await self._call(db.delete_token, token_id)

    async def has_tokens(self) -> bool:
        return await self._call(db.has_tokens)

    async def put_status(self, host: str, status: Mapping[str, Any]) -> None:
        await self._call(db.put_report, "statuses", host, dict(status))

    async def statuses(self) -> dict[str, dict[str, Any]]:
        return await self._call(db.reports, "statuses")

    async def put_inventory(self, host: str, workloads: list[dict[str, Any]]) -> None:
        await self._call(db.put_report, "inventory", host, list(workloads))

    async def inventory(self) -> dict[str, list[dict[str, Any]]]:
        return await self._call(db.reports, "inventory")

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._wake_watchers()
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._conn.close)
        self._executor.shutdown(wait=True)
