"""The audit ledger on both stores: every commit chained; an edit made directly in the
SQLite file or in etcd (bypassing the store) is found and the first altered record named;
an old SQLite file gets its ledger by migration."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from hyperwall.store import DocKey, Store
from hyperwall.store.audit import verify_store
from hyperwall.store.changes import canonical
from hyperwall.store.etcd import EtcdStore
from hyperwall.store.etcd_kv import Get, Put
from hyperwall.store.ledger import GENESIS, decode, sha256_text
from hyperwall.store.sqlite import SqliteStore
from tests.store.conftest import UrlFactory
from tests.store.support import doc, opened, run

A, B, C = doc("a", "acme"), doc("b", "acme"), doc("c")


async def three_revisions(store: Store) -> None:
    assert await store.commit([A, B], [], "tenant-admin@acme:t1", "first")
    assert await store.commit([{**A, "spec": {"cidrs": ["10.0.0.0/8"]}}], [], "alice", "second")
    assert await store.commit([C], [DocKey.of(B)], "provider-admin:t3", "third")


def test_every_commit_is_chained_and_the_ledger_survives_compaction(new_url: UrlFactory) -> None:
    async def main() -> None:
        async with opened(new_url()) as store:
            await three_revisions(store)
            assert not await store.commit([C], [], "x", "no change")  # no revision, no record
            entries = await store.ledger()
            assert [e.number for e in entries] == [1, 2, 3]
            records = [decode(e) for e in entries]
            assert records[0].prev == GENESIS
            assert [r.prev for r in records[1:]] == [e.hash for e in entries[:2]]
            assert (records[0].actor.token, records[0].actor.role) == ("t1", "tenant-admin")
            assert records[2].message == "third" and len(records[2].changes) == 2
            assert [e.number for e in await store.ledger(2, 2)] == [2]
            assert (await verify_store(store)).ok
            await store.compact(3)
            assert [e.number for e in await store.ledger()] == [1, 2, 3]
            assert [r.number for r in await store.revisions(1, 3)] == [3]
            result = await verify_store(store)
            assert result.ok and result.head == 3 and result.head_hash == entries[2].hash

    run(main())


def _sqlite_edit(path: Path, sql: str, *args: object) -> None:
    with sqlite3.connect(path) as conn:
        assert conn.execute(sql, args).rowcount == 1


def test_edits_of_the_sqlite_file_are_found(tmp_path: Path) -> None:
    path = tmp_path / "hwb-audit.db"

    async def verify_first() -> int | None:
        async with opened(f"sqlite:///{path}") as store:
            first = (await verify_store(store)).first
            return None if first is None else first.number

    async def main() -> None:
        async with opened(f"sqlite:///{path}") as store:
            await three_revisions(store)
            entries = await store.ledger()
        assert await verify_first() is None
        # a revision's message rewritten
        _sqlite_edit(path, "UPDATE revisions SET message = 'routine' WHERE number = 2")
        assert await verify_first() == 2
        _sqlite_edit(path, "UPDATE revisions SET message = 'second' WHERE number = 2")
        assert await verify_first() is None
        # the current document of a revision rewritten (the policy itself changed unseen)
        wide = canonical({**C, "spec": {"cidrs": ["0.0.0.0/0"]}})
        _sqlite_edit(path, "UPDATE documents SET body = ? WHERE name = 'c'", wide)
        assert await verify_first() == 3
        _sqlite_edit(path, "UPDATE documents SET body = ? WHERE name = 'c'", canonical(C))
        # a ledger record rewritten and re-hashed: its successor's link breaks
        body = json.loads(entries[0].body)
        forged = canonical({**body, "author": "provider-admin:nobody"})
        _sqlite_edit(
            path,
            "UPDATE ledger SET body = ?, hash = ? WHERE number = 1",
            forged,
            sha256_text(forged),
        )
        assert await verify_first() == 1
        _sqlite_edit(
            path,
            "UPDATE ledger SET body = ?, hash = ? WHERE number = 1",
            entries[0].body,
            entries[0].hash,
        )
        # a record deleted
        _sqlite_edit(path, "DELETE FROM ledger WHERE number = 2")
        assert await verify_first() == 2

    run(main())


def test_edits_made_directly_in_etcd_are_found(etcd_url: UrlFactory) -> None:
    async def main() -> None:
        async with opened(etcd_url()) as store:
            assert isinstance(store, EtcdStore)
            await three_revisions(store)
            at, kv = store._at, store._kv
            original = (await kv.read(Get(at.log(2)))).ranges[0][0].value

            async def put(key: bytes, value: bytes) -> None:
                assert (await kv.txn([], [Put(key, value)])).succeeded

            async def first() -> int | None:
                found = (await verify_store(store)).first
                return None if found is None else found.number

            assert await first() is None
            record = json.loads(original)
            await put(at.log(2), canonical({**record, "author": "provider-admin:t3"}).encode())
            assert await first() == 2
            await put(at.log(2), original)
            await put(at.doc(DocKey.of(A)), canonical({**A, "spec": {"v": 1}}).encode())
            assert await first() == 2  # revision 2 made a's current version
            await put(
                at.doc(DocKey.of(A)), canonical({**A, "spec": {"cidrs": ["10.0.0.0/8"]}}).encode()
            )
            assert await first() is None
            stored = json.loads((await kv.read(Get(at.ledger(1)))).ranges[0][0].value)
            await put(at.ledger(1), canonical({**stored, "body": stored["body"] + " "}).encode())
            assert await first() == 1

    run(main())


def test_a_version_2_file_gets_its_ledger_from_the_kept_revisions(tmp_path: Path) -> None:
    path = tmp_path / "hwb-old.db"

    async def main() -> None:
        store = await SqliteStore.open(str(path))
        try:
            await three_revisions(store)
            await store.compact(2)
        finally:
            await store.close()
        with sqlite3.connect(path) as conn:  # as schema 2 left it: no ledger
            conn.execute("DROP TABLE ledger")
            conn.execute("PRAGMA user_version=2")
        async with opened(f"sqlite:///{path}") as reopened:
            entries = await reopened.ledger()
            assert [e.number for e in entries] == [2, 3]
            assert decode(entries[0]).prev == GENESIS
            result = await verify_store(reopened)
            assert result.ok and result.start == 2
            await reopened.commit([doc("d")], [], "alice", "after the migration")
            assert (await verify_store(reopened)).ok
        with sqlite3.connect(path) as conn:
            assert conn.execute("PRAGMA user_version").fetchone()[0] == 3

    run(main())
