"""etcd-only behaviour: etcd's own compaction, transaction limits, an unreachable server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from contextlib import aclosing
from pathlib import Path

import pytest

from hyperwall.store import DocKey, Revision, TooLarge, Unavailable, open_store
from hyperwall.store.etcd import EtcdStore
from hyperwall.store.etcd_kv import KeyValue
from tests.store.conftest import UrlFactory
from tests.store.etcd_server import EtcdProcess, free_port
from tests.store.support import doc, opened, run, take


async def compact_etcd_history(store: EtcdStore) -> None:
    """What an operator's etcd auto-compaction does: drop all of etcd's MVCC history."""
    _, _, counters = await store._read()
    await store._kv.compact_history(counters.revision)


def test_revision_records_outlive_etcd_compaction(etcd_url: UrlFactory) -> None:
    async def main() -> None:
        async with opened(etcd_url()) as store:
            assert isinstance(store, EtcdStore)
            for i in range(4):
                await store.commit([doc("a", value=i)], [], "alice", f"edit {i}")
            await compact_etcd_history(store)
            assert (await store.snapshot(1)).documents[DocKey("Group", None, "a")]["spec"] == {
                "value": 0
            }
            async with aclosing(store.watch(0)) as events:
                got = await take(events, 4)  # no Resync: the hyperwall history is intact
                assert [e.number for e in got if isinstance(e, Revision)] == [1, 2, 3, 4]

    run(main())


def test_watch_recovers_when_etcd_compacted_its_start(
    etcd_url: UrlFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ErrCompacted between the catch-up read and the native watch: re-read, lose nothing."""

    async def main() -> None:
        async with opened(etcd_url()) as store:
            assert isinstance(store, EtcdStore)
            await store.commit([doc("a")], [], "alice", "first")
            await compact_etcd_history(store)
            real = store._kv.watch
            starts: list[int] = []

            def stale_first(prefix: bytes, end: bytes, start: int) -> AsyncGenerator[KeyValue]:
                starts.append(start)
                return real(prefix, end, 1 if len(starts) == 1 else start)

            monkeypatch.setattr(store._kv, "watch", stale_first)
            async with aclosing(store.watch(0)) as events:
                got = await take(events, 1)
                for name in ("b", "c"):
                    waiting = asyncio.create_task(anext(events))
                    await store.commit([doc(name)], [], "bob", name)
                    got.append(await waiting)
            assert [e.number for e in got if isinstance(e, Revision)] == [1, 2, 3]
            assert len(starts) >= 2  # the stale watch hit ErrCompacted and was redone

    run(main())


def test_a_commit_over_the_transaction_limit_is_refused_whole(etcd_url: UrlFactory) -> None:
    async def main() -> None:
        async with opened(etcd_url()) as store:
            with pytest.raises(TooLarge):
                await store.commit([doc(f"g{i}") for i in range(126)], [], "alice", "big")
            for size in (1_000_000, 3_000_000):  # over etcd's request size and gRPC's limit
                with pytest.raises(TooLarge):
                    await store.commit([doc("huge", blob="x" * size)], [], "alice", "big")
            assert await store.revision() == 0
            assert await store.commit([doc(f"g{i}") for i in range(125)], [], "alice", "ok")

    run(main())


def test_an_unreachable_server_is_unavailable() -> None:
    async def main() -> None:
        with pytest.raises(Unavailable):
            await open_store(f"etcd://127.0.0.1:{free_port()}/x?timeout=2")

    run(main())


def test_a_watch_reports_the_server_going_away(tmp_path: Path) -> None:
    server = EtcdProcess.start(tmp_path)
    try:

        async def main() -> None:
            async with opened(f"etcd://{server.host}:{server.port}/w?timeout=2") as store:
                await store.commit([doc("a")], [], "alice", "first")
                async with aclosing(store.watch(1)) as events:
                    waiting = asyncio.create_task(anext(events))
                    await asyncio.sleep(0.2)
                    server.stop()
                    with pytest.raises(Unavailable):
                        await waiting
                with pytest.raises(Unavailable):
                    await store.commit([doc("b")], [], "alice", "second")

        run(main())
    finally:
        server.stop()


def test_prefixes_are_independent(etcd_url: UrlFactory) -> None:
    async def main() -> None:
        async with opened(etcd_url()) as one, opened(etcd_url()) as two:
            await one.commit([doc("a")], [], "alice", "first")
            assert await two.revision() == 0
            assert (await two.snapshot()).documents == {}

    run(main())
