"""A small typed face on the `aetcd` client: transactions, prefix watches, errors mapped.

`aetcd` is untyped and its values are gRPC messages; everything above this module sees frozen
dataclasses and the store's own errors (`Unavailable`, `TooLarge`, `StoreError`), plus
`HistoryCompacted` when etcd has compacted the revision a watch wanted to start from.
Counterpart: `store.etcd`, which is written only against this module.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import aetcd  # type: ignore[import-untyped]
from aetcd import exceptions as aetcd_errors

from hyperwall.store.base import StoreError, TooLarge, Unavailable


class HistoryCompacted(StoreError):
    """etcd no longer has the history a watch asked for (etcd's ErrCompacted)."""

    def __init__(self, compacted_revision: int) -> None:
        super().__init__(f"etcd history compacted up to {compacted_revision}")
        self.compacted_revision = compacted_revision


@dataclass(frozen=True, slots=True)
class KeyValue:
    key: bytes
    value: bytes
    mod_revision: int


@dataclass(frozen=True, slots=True)
class Get:
    """Read one key, or the range [key, range_end)."""

    key: bytes
    range_end: bytes | None = None


@dataclass(frozen=True, slots=True)
class Put:
    key: bytes
    value: bytes


@dataclass(frozen=True, slots=True)
class Delete:
    """Delete one key, or the range [key, range_end)."""

    key: bytes
    range_end: bytes | None = None


@dataclass(frozen=True, slots=True)
class ValueIs:
    key: bytes
    value: bytes


@dataclass(frozen=True, slots=True)
class ModIs:
    """The key was last modified at `revision` (0: the key does not exist)."""

    key: bytes
    revision: int


Op = Get | Put | Delete
Compare = ValueIs | ModIs


@dataclass(frozen=True, slots=True)
class TxnResult:
    succeeded: bool
    ranges: list[list[KeyValue]]  # one per Get of the branch that ran, in order
    revision: int  # etcd revision the transaction saw; 0 if no Get returned a key


@contextmanager
def _mapped_errors() -> Iterator[None]:
    try:
        yield
    except aetcd_errors.RevisionCompactedError as exc:
        raise HistoryCompacted(int(exc.compacted_revision)) from exc
    except (aetcd_errors.ConnectionFailedError, aetcd_errors.ConnectionTimeoutError) as exc:
        raise Unavailable(f"etcd: {exc}") from exc
    except aetcd_errors.WatchTimeoutError as exc:
        raise Unavailable("etcd: watch was not created in time") from exc
    except aetcd_errors.ClientError as exc:
        text = str(exc)
        if any(s in text for s in ("too many operations", "too large", "larger than max")):
            raise TooLarge(f"etcd refused the transaction: {text}") from exc
        raise StoreError(f"etcd: {text}") from exc
    except TimeoutError as exc:
        raise Unavailable("etcd: timed out") from exc


MAX_RECONNECT_BACKOFF_MS = 2000


class EtcdKV:
    def __init__(self, host: str, port: int, timeout: float) -> None:
        self._client: Any = aetcd.Client(
            host=host,
            port=port,
            timeout=timeout,
            options={
                "grpc.max_receive_message_length": -1,
                # gRPC's reconnect backoff grows to 120 s by default: after a long etcd
                # outage the store would stay `Unavailable` that long after etcd is back
                "grpc.initial_reconnect_backoff_ms": 200,
                "grpc.max_reconnect_backoff_ms": MAX_RECONNECT_BACKOFF_MS,
            },
        )
        self._closed = False

    def _op(self, op: Op) -> Any:
        t = self._client.transactions
        if isinstance(op, Get):
            return t.get(op.key, op.range_end)
        if isinstance(op, Put):
            return t.put(op.key, op.value)
        return t.delete(op.key, op.range_end)

    def _compare(self, compare: Compare) -> Any:
        t = self._client.transactions
        if isinstance(compare, ValueIs):
            return t.value(compare.key) == compare.value
        return t.mod(compare.key) == compare.revision

    async def txn(
        self,
        compare: Sequence[Compare],
        success: Sequence[Op],
        failure: Sequence[Op] = (),
    ) -> TxnResult:
        self._check_open()
        with _mapped_errors():
            succeeded, responses = await self._client.transaction(
                compare=[self._compare(c) for c in compare],
                success=[self._op(op) for op in success],
                failure=[self._op(op) for op in failure],
            )
        ranges: list[list[KeyValue]] = []
        revision = 0
        for response in responses:
            if isinstance(response, list):
                ranges.append([KeyValue(g.key, g.value, g.mod_revision) for _, g in response])
                if response:
                    revision = int(response[0][1].header.revision)
        return TxnResult(bool(succeeded), ranges, revision)

    async def read(self, *gets: Get) -> TxnResult:
        """Several reads at one etcd revision."""
        return await self.txn([], gets)

    async def watch(self, prefix: bytes, end: bytes, start: int) -> AsyncGenerator[KeyValue, None]:
        """Keys put under [prefix, end) from etcd revision `start` on (deletes are skipped).

        Ends when the client is closed; raises `HistoryCompacted` if etcd compacted `start`.
        """
        self._check_open()
        with _mapped_errors():
            watch = await self._client.watch(prefix, range_end=end, start_revision=start)
        try:
            with _mapped_errors():
                async for event in watch:
                    if event.kind == "PUT":
                        kv = event.kv
                        yield KeyValue(kv.key, kv.value, kv.mod_revision)
        finally:
            if not self._closed:  # a closed client has dropped every watch already
                with _mapped_errors():
                    await asyncio.shield(watch.cancel())

    def _check_open(self) -> None:
        if self._closed:  # aetcd would silently reconnect
            raise StoreError("store is closed")

    async def compact_history(self, revision: int) -> None:
        """Compact etcd's own MVCC history (what an operator's auto-compaction does)."""
        with _mapped_errors():
            await self._client.compact(revision, physical=True)

    async def close(self) -> None:
        self._closed = True
        with _mapped_errors():
            await self._client.close()
