"""The replicated store: etcd, for several manager replicas. URL `etcd://HOST:PORT[/PREFIX]`.

Layout and encodings: `store.etcd_layout`; client: `store.etcd_kv`. A commit is one etcd
transaction guarded by a compare on the revision counter `P/rev`: it bumps the counter, writes
the revision record `P/log/N` and the changed documents together, or does nothing. Two
managers racing both read N; one wins, the other's compare fails and it re-reads and retries
(or raises `Conflict` when the caller gave `expect_revision`).

Watch = catch-up from the revision records, then etcd's native watch on `P/log/` from the
etcd revision of that read. If etcd has compacted that revision in between (ErrCompacted),
the watcher catches up from the records again; only when the hyperwall history itself is gone
(`compact`) does it yield `Resync`. Snapshots of past revisions undo the records newest-first
from the current documents, so they never depend on etcd's own history either.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncGenerator, Mapping
from contextlib import aclosing
from typing import Any

from hyperwall.store.base import (
    Compacted,
    Conflict,
    DocKey,
    Document,
    InvalidDocument,
    LedgerEntry,
    Resync,
    Revision,
    RevisionInfo,
    Snapshot,
    StoreError,
    TokenRecord,
    TooLarge,
    UnknownRevision,
    WatchEvent,
    summarize,
)
from hyperwall.store.changes import canonical, plan, prepare
from hyperwall.store.etcd_kv import (
    Delete,
    EtcdKV,
    Get,
    HistoryCompacted,
    KeyValue,
    ModIs,
    Op,
    Put,
    TxnResult,
    ValueIs,
)
from hyperwall.store.etcd_layout import (
    Layout,
    decode_ledger,
    decode_record,
    decode_token,
    encode_ledger,
    encode_record,
    encode_token,
    prefix_end,
)
from hyperwall.store.ledger import GENESIS, entry

ATTEMPTS = 20  # optimistic retries of one write against concurrent writers
WATCH_BATCH = 100  # revision records read per catch-up query
DEFAULT_PREFIX = "/hyperwall/"
FIXED_OPS = 3  # operations of every commit besides its documents: P/rev, P/log/N, P/ledger/N


class EtcdStore:
    """`Store` on etcd. Open with `EtcdStore.open(host, port, prefix)`."""

    def __init__(self, kv: EtcdKV, layout: Layout, max_txn_ops: int) -> None:
        self._kv = kv
        self._at = layout
        self._max_ops = max_txn_ops
        self._closed = False

    @classmethod
    async def open(
        cls,
        host: str,
        port: int,
        prefix: str = DEFAULT_PREFIX,
        timeout: float = 10.0,
        max_txn_ops: int = 128,
    ) -> EtcdStore:
        """Connect and create the counters under `prefix` if absent (safe to race)."""
        kv = EtcdKV(host, port, timeout)
        store = cls(kv, Layout(prefix), max_txn_ops)
        try:
            for key in (store._at.rev, store._at.floor):
                await kv.txn([ModIs(key, 0)], [Put(key, b"0")])
        except BaseException:
            await kv.close()
            raise
        return store

    async def _read(self, *gets: Get) -> tuple[int, int, TxnResult]:
        """Current revision, floor and `gets`, all at one etcd revision."""
        result = await self._kv.read(Get(self._at.rev), Get(self._at.floor), *gets)
        rev, floor = result.ranges[0], result.ranges[1]
        if not rev or not floor:
            raise StoreError(f"etcd prefix {self._at.prefix} lost its revision counters")
        return int(rev[0].value), int(floor[0].value), result

    def _range(self, prefix: bytes) -> Get:
        return Get(prefix, prefix_end(prefix))

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
        touched = prepared.touched
        if len(touched) + FIXED_OPS > self._max_ops:
            raise TooLarge(
                f"{len(touched)} documents in one commit; etcd takes {self._max_ops - FIXED_OPS}"
            )
        for _ in range(ATTEMPTS):
            current, _floor, result = await self._read(*(Get(self._at.doc(k)) for k in touched))
            if expect_revision is not None and expect_revision != current:
                raise Conflict(expect_revision, current)
            bodies = {
                k: r[0].value.decode() for k, r in zip(touched, result.ranges[2:], strict=True) if r
            }
            changes = plan(prepared, bodies)
            if not changes:
                return None
            number, now = current + 1, time.time()
            ops: list[Op] = [
                Put(self._at.rev, str(number).encode()),
                Put(self._at.log(number), encode_record(number, author, now, message, changes)),
                Put(
                    self._at.ledger(number),
                    encode_ledger(
                        entry(number, author, now, message, changes, await self._head(current))
                    ),
                ),
            ]
            for c in changes:
                doc = self._at.doc(c.key)
                ops.append(Delete(doc) if c.after is None else Put(doc, c.after.encode()))
            done = await self._kv.txn([ValueIs(self._at.rev, str(current).encode())], ops)
            if done.succeeded:
                decoded = tuple(c.decoded() for c in changes)
                return summarize(number, author, now, message, decoded)
            if expect_revision is not None:
                raise Conflict(expect_revision, await self.revision())
        raise StoreError(f"commit lost {ATTEMPTS} races in a row to other writers")

    async def _head(self, current: int) -> str:
        """The hash of revision `current`'s ledger record (GENESIS when the store predates
        the ledger). Read after the counters: the commit's guard on `P/rev` makes it the
        record of the revision the commit follows."""
        found = _one((await self._kv.read(Get(self._at.ledger(current)))).ranges[0])
        return GENESIS if found is None else decode_ledger(current, found.value).hash

    async def revision(self) -> int:
        current, _, _ = await self._read()
        return current

    async def snapshot(self, revision: int | None = None) -> Snapshot:
        gets = [self._range(self._at.docs)]
        if revision is not None:  # the records to undo, read at the same etcd revision
            gets.append(Get(self._at.log(revision + 1), prefix_end(self._at.log_prefix)))
        current, floor, result = await self._read(*gets)
        at = current if revision is None else revision
        if at < 0 or at > current:
            raise UnknownRevision(f"no revision {at} (current is {current})")
        if at < floor:
            raise Compacted(at, floor)
        documents: dict[DocKey, Document] = {
            self._at.doc_key(kv.key): json.loads(kv.value) for kv in result.ranges[2]
        }
        if at == current:
            return Snapshot(at, documents)
        records = [decode_record(kv.value) for kv in result.ranges[3]]
        if [r.number for r in records] != list(range(at + 1, current + 1)):
            raise Compacted(at, floor)  # records deleted under us by a concurrent compact
        for record in reversed(records):
            for change in record.changes:
                if change.before is None:
                    documents.pop(change.key, None)
                else:
                    documents[change.key] = change.before
        return Snapshot(at, documents)

    async def history(self, limit: int = 50, before: int | None = None) -> list[RevisionInfo]:
        current, floor, _ = await self._read()
        high = current if before is None else min(before - 1, current)
        low = max(floor, 1, high - limit + 1)
        if limit <= 0 or high < low:
            return []
        result = await self._kv.read(Get(self._at.log(low), self._at.log(high + 1)))
        infos = [decode_record(kv.value).info for kv in result.ranges[0]]
        return sorted(infos, key=lambda i: i.number, reverse=True)

    async def revision_info(self, number: int) -> Revision:
        current, floor, result = await self._read(Get(self._at.log(number)))
        if number < 1 or number > current:
            raise UnknownRevision(f"no revision {number} (current is {current})")
        if number < floor or not result.ranges[2]:
            raise Compacted(number, floor)
        return decode_record(result.ranges[2][0].value)

    async def revisions(self, low: int, high: int) -> list[Revision]:
        _, floor, _ = await self._read()
        low = max(low, floor, 1)
        if high < low:
            return []
        result = await self._kv.read(Get(self._at.log(low), self._at.log(high + 1)))
        return [decode_record(kv.value) for kv in result.ranges[0]]

    async def ledger(self, low: int = 1, high: int | None = None) -> list[LedgerEntry]:
        end = prefix_end(self._at.ledger_prefix) if high is None else self._at.ledger(high + 1)
        result = await self._kv.read(Get(self._at.ledger(max(low, 0)), end))
        size = len(self._at.ledger_prefix)
        return [decode_ledger(int(kv.key[size:]), kv.value) for kv in result.ranges[0]]

    async def watch(self, from_revision: int) -> AsyncGenerator[WatchEvent, None]:
        try:
            async with aclosing(self._watch(from_revision)) as events:
                async for event in events:
                    yield event
        except StoreError:
            if not self._closed:
                raise  # closing the store mid-read ends the watch quietly, as documented

    async def _watch(self, from_revision: int) -> AsyncGenerator[WatchEvent, None]:
        position = from_revision
        log, log_end = self._at.log_prefix, prefix_end(self._at.log_prefix)
        while not self._closed:
            # Catch up from the records, in batches.
            batch = Get(self._at.log(position + 1), self._at.log(position + 1 + WATCH_BATCH))
            current, floor, result = await self._read(batch)
            if position < floor or position > current:
                yield Resync(current)
                return
            for kv in result.ranges[2]:
                record = decode_record(kv.value)
                if record.number != position + 1:  # a hole in the log: never skip it
                    yield Resync(current)
                    return
                yield record
                position = record.number
            if position < current:
                continue
            # Caught up as of etcd revision result.revision: follow live from the next one.
            try:
                async for kv in self._kv.watch(log, log_end, result.revision + 1):
                    record = decode_record(kv.value)
                    if record.number <= position:
                        continue
                    if record.number != position + 1:
                        break  # cannot happen with one etcd watch stream; re-read the log
                    yield record
                    position = record.number
            except HistoryCompacted:
                continue  # etcd compacted between the read and the watch: re-read the log

    async def compact(self, keep_from: int) -> None:
        for _ in range(ATTEMPTS):
            current, floor, _ = await self._read()
            if keep_from > current:
                raise UnknownRevision(f"cannot compact to {keep_from}: current is {current}")
            if keep_from <= floor:
                return
            done = await self._kv.txn(
                [ValueIs(self._at.floor, str(floor).encode())],
                [
                    Put(self._at.floor, str(keep_from).encode()),
                    Delete(self._at.log(0), self._at.log(keep_from)),
                ],
            )
            if done.succeeded:
                return
        raise StoreError(f"compact lost {ATTEMPTS} races in a row")

    # -- tokens ---------------------------------------------------------------------------

    async def put_token(self, token: TokenRecord) -> None:
        by_id, by_hash = self._at.token(token.id), self._at.token_hash(token.sha256_hash)
        value = encode_token(token)
        for _ in range(ATTEMPTS):
            result = await self._kv.read(Get(by_id), Get(by_hash))
            old, other = _one(result.ranges[0]), _one(result.ranges[1])
            if other is not None and decode_token(other.value).id != token.id:
                raise InvalidDocument(f"token {decode_token(other.value).id!r} has this hash")
            ops: list[Op] = [Put(by_id, value), Put(by_hash, value)]
            if old is not None:
                old_hash = decode_token(old.value).sha256_hash
                if old_hash != token.sha256_hash:
                    ops.append(Delete(self._at.token_hash(old_hash)))
            guard = [ModIs(by_id, _mod(old)), ModIs(by_hash, _mod(other))]
            if (await self._kv.txn(guard, ops)).succeeded:
                return
        raise StoreError(f"put_token lost {ATTEMPTS} races in a row")

    async def token_by_hash(self, sha256_hash: str) -> TokenRecord | None:
        result = await self._kv.read(Get(self._at.token_hash(sha256_hash)))
        found = _one(result.ranges[0])
        return None if found is None else decode_token(found.value)

    async def list_tokens(self) -> list[TokenRecord]:
        result = await self._kv.read(self._range(self._at.tokens))
        return sorted((decode_token(kv.value) for kv in result.ranges[0]), key=lambda t: t.id)

    async def delete_token(self, token_id: str) -> bool:
        by_id = self._at.token(token_id)
        for _ in range(ATTEMPTS):
            found = _one((await self._kv.read(Get(by_id))).ranges[0])
            if found is None:
                return False
            by_hash = self._at.token_hash(decode_token(found.value).sha256_hash)
            done = await self._kv.txn(
                [ModIs(by_id, found.mod_revision)], [Delete(by_id), Delete(by_hash)]
            )
            if done.succeeded:
                return True
        raise StoreError(f"delete_token lost {ATTEMPTS} races in a row")

    async def has_tokens(self) -> bool:
        return bool(await self.list_tokens())

    # -- host reports ---------------------------------------------------------------------

    async def put_status(self, host: str, status: Mapping[str, Any]) -> None:
        await self._kv.txn([], [Put(self._at.status(host), canonical(dict(status)).encode())])

    async def statuses(self) -> dict[str, dict[str, Any]]:
        return await self._reports(self._at.statuses)

    async def put_inventory(self, host: str, workloads: list[dict[str, Any]]) -> None:
        await self._kv.txn([], [Put(self._at.inventory(host), canonical(list(workloads)).encode())])

    async def inventory(self) -> dict[str, list[dict[str, Any]]]:
        return await self._reports(self._at.inventories)

    async def _reports(self, prefix: bytes) -> dict[str, Any]:
        result = await self._kv.read(self._range(prefix))
        return {self._at.host_of(kv.key, prefix): json.loads(kv.value) for kv in result.ranges[0]}

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            await self._kv.close()


def _one(values: list[KeyValue]) -> KeyValue | None:
    return values[0] if values else None


def _mod(value: KeyValue | None) -> int:
    return 0 if value is None else value.mod_revision
