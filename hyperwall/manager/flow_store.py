"""`FlowStore`: the manager's flow records (`flow_db`) behind one worker thread, with
retention on a timer and backpressure for shippers.

All database work runs on a single thread (SQLite's one writer), so the event loop never
blocks on it. Backpressure: at most `max_pending` batches may wait for that thread; one more
is refused at once with `Busy` (the route answers 429 with `Retry-After`), and the agent
backs off, keeping its records in its own files. Retention runs every `every` seconds and
after each `expire_every_rows` rows stored: by age (`max_age` seconds of record time) and by
size (`max_bytes` of database pages in use).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from hyperwall.flows.filter import FlowFilter
from hyperwall.manager import flow_db
from hyperwall.manager.flow_db import Page, Position, Stored

log = logging.getLogger("hyperwall.manager.flows")
T = TypeVar("T")

DAY = 86400.0


@dataclass(frozen=True, slots=True)
class Retention:
    """How much the manager keeps; None = no limit of that kind."""

    max_age: float | None = 7 * DAY  # seconds of record time
    max_bytes: int | None = 1024 * 1024 * 1024  # pages in use of the database file
    every: float = 60.0  # seconds between retention passes
    expire_every_rows: int = 50_000  # also after this many rows stored
    max_pending: int = 8  # batches that may wait for the writer; more: Busy (429)


class Busy(Exception):
    """Too many batches wait for the writer: the shipper should back off."""


class FlowStore:
    def __init__(self, path: Path, retention: Retention) -> None:
        self.path = path
        self.retention = retention
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hyperwall-flows")
        self._conn = flow_db.connect(str(path))
        self._pending = 0
        self._since_expiry = 0
        self._timer: asyncio.Task[None] | None = None
        self.stored_total = 0  # records stored since start (metrics)
        self.expired_total = 0  # records deleted by retention since start (metrics)
        self.refused_total = 0  # batches refused as Busy since start (metrics)

    @classmethod
    async def open(cls, path: Path, retention: Retention) -> FlowStore:
        store = await asyncio.to_thread(cls, path, retention)
        store._timer = asyncio.create_task(store._expire_periodically())
        return store

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, self._conn, *args))

    async def store_batch(
        self, host: str, file: str, offset: int, end: int, records: Sequence[dict[str, Any]]
    ) -> Stored:
        if self._pending >= self.retention.max_pending:
            self.refused_total += 1
            raise Busy(f"{self._pending} batches wait for the flow store")
        self._pending += 1
        try:
            done = await self._call(flow_db.store_batch, host, file, offset, end, records)
        finally:
            self._pending -= 1
        self.stored_total += done.stored
        self._since_expiry += done.stored
        if self._since_expiry >= self.retention.expire_every_rows:
            self._since_expiry = 0
            await self.expire()
        return done

    async def position(self, host: str) -> Position | None:
        return await self._call(flow_db.position, host)

    async def query(self, flt: FlowFilter, limit: int, after: int | None) -> Page:
        return await self._call(flow_db.query, flt, limit, after)

    async def used_bytes(self) -> int:
        return await self._call(flow_db.used_bytes)

    async def count(self) -> int:
        return await self._call(flow_db.count)

    async def expire(self, now: float | None = None) -> int:
        """One retention pass; the rows deleted."""
        r = self.retention
        moment = time.time() if now is None else now
        older = None if r.max_age is None else int((moment - r.max_age) * 1_000_000)
        deleted = await self._call(flow_db.expire, older, r.max_bytes)
        self.expired_total += deleted
        if deleted:
            log.info("flow retention: deleted %d records", deleted)
        return deleted

    async def _expire_periodically(self) -> None:
        while True:
            try:
                await self.expire()
            except Exception:  # a failed pass is retried at the next one
                log.exception("flow retention failed")
            await asyncio.sleep(self.retention.every)

    async def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._conn.close)
        self._executor.shutdown(wait=True)


def default_path(store_url: str) -> Path | None:
    """Where a manager on `store_url` keeps flows unless told: beside a SQLite store file
    (`store.db` -> `store.flows.db`); None for etcd (`--flows PATH` is needed there)."""
    if not store_url.startswith("sqlite:///"):
        return None
    store = Path(store_url.removeprefix("sqlite:///").partition("?")[0])
    return store.with_name(store.stem + ".flows.db")


@dataclass(frozen=True, slots=True)
class FlowsConfig:
    """The manager's flow store: a database file (None: beside a SQLite store, none for
    etcd) and its retention."""

    path: Path | None = None
    retention: Retention = Retention()


async def open_flows(config: FlowsConfig | None, store_url: str) -> FlowStore | None:
    """The flow store a manager on `store_url` keeps, or None if it keeps none."""
    config = config or FlowsConfig()
    path = config.path or default_path(store_url)
    if path is None:
        log.warning("no flow store: agents' flow records are refused (start with --flows PATH)")
        return None
    return await FlowStore.open(path, config.retention)
