"""The store contract: every test runs on SQLite and on a real etcd server (`new_url`)."""

from __future__ import annotations

import asyncio
import time
from contextlib import aclosing
from pathlib import Path

import pytest

from hyperwall.io.files import read_documents
from hyperwall.policy.catalog import build_catalog
from hyperwall.policy.errors import Source
from hyperwall.store import (
    Compacted,
    Conflict,
    DocKey,
    InvalidDocument,
    Resync,
    Revision,
    Store,
    StoreError,
    TokenRecord,
    UnknownRevision,
    sha256_hex,
)
from tests.store.conftest import UrlFactory
from tests.store.support import doc, opened, run, take

EXAMPLES = Path(__file__).parents[2] / "examples"
A, B, C = doc("a", "acme"), doc("b", "acme"), doc("c")
KA, KB, KC = DocKey.of(A), DocKey.of(B), DocKey.of(C)


def changed(d: dict[str, object], **spec: object) -> dict[str, object]:
    return {**d, "spec": spec}


async def commit_abc(store: Store) -> None:
    """Revisions 1: +a +b, 2: ~a, 3: -b +c."""
    assert await store.commit([A, B], [], "alice", "first")
    assert await store.commit([changed(A, cidrs=["10.0.0.0/8"])], [], "bob", "second")
    assert await store.commit([C], [KB], "carol", "third")


def test_empty_store(new_url: UrlFactory) -> None:
    async def main() -> None:
        async with opened(new_url()) as store:
            assert await store.revision() == 0
            snap = await store.snapshot()
            assert (snap.revision, snap.documents) == (0, {})
            assert await store.history() == []
            with pytest.raises(UnknownRevision):
                await store.revision_info(1)
            with pytest.raises(UnknownRevision):
                await store.snapshot(1)

    run(main())


def test_revisions_are_numbered_one_by_one(new_url: UrlFactory) -> None:
    async def main() -> None:
        async with opened(new_url()) as store:
            before = time.time()
            first = await store.commit([A, B], [], "alice", "first")
            assert first is not None
            assert (first.number, first.author, first.message) == (1, "alice", "first")
            assert before - 1 <= first.time <= time.time() + 1
            assert (first.added, first.changed, first.removed) == ((KA, KB), (), ())
            numbers = [first.number]
            for i in range(5):
                info = await store.commit([changed(A, n=i)], [], "alice", f"edit {i}")
                assert info is not None
                numbers.append(info.number)
            assert numbers == [1, 2, 3, 4, 5, 6]
            assert await store.revision() == 6

    run(main())


def test_identical_content_creates_no_revision(new_url: UrlFactory) -> None:
    async def main() -> None:
        async with opened(new_url()) as store:
            await store.commit([A, B], [], "alice", "first")
            reordered = {"spec": A["spec"], "metadata": A["metadata"], **A}
            assert await store.commit([reordered, B], [], "bob", "same again") is None
            assert await store.commit([], [KC], "bob", "delete what is absent") is None
            assert await store.commit([A], [KC], "bob", "both") is None
            assert await store.commit([], [], "bob", "nothing") is None
            assert await store.revision() == 1
            assert len(await store.history()) == 1

    run(main())


def test_deletes_and_re_adds(new_url: UrlFactory) -> None:
    async def main() -> None:
        async with opened(new_url()) as store:
            await store.commit([A, B], [], "alice", "add")
            gone = await store.commit([], [KA], "alice", "delete a")
            assert gone is not None and gone.removed == (KA,)
            assert set((await store.snapshot()).documents) == {KB}
            back = await store.commit([A], [], "alice", "re-add a")
            assert back is not None and back.added == (KA,)
            assert (await store.snapshot()).documents == {KA: A, KB: B}

    run(main())


def test_snapshots_at_past_revisions(new_url: UrlFactory) -> None:
    async def main() -> None:
        async with opened(new_url()) as store:
            await commit_abc(store)
            a2 = changed(A, cidrs=["10.0.0.0/8"])
            expected = {0: {}, 1: {KA: A, KB: B}, 2: {KA: a2, KB: B}, 3: {KA: a2, KC: C}}
            for revision, documents in expected.items():
                snap = await store.snapshot(revision)
                assert (snap.revision, snap.documents) == (revision, documents)
            assert (await store.snapshot()).documents == expected[3]
            with pytest.raises(UnknownRevision):
                await store.snapshot(4)

    run(main())


def test_history_is_newest_first_with_diff_summaries(new_url: UrlFactory) -> None:
    async def main() -> None:
        async with opened(new_url()) as store:
            await commit_abc(store)
            history = await store.history()
            assert [h.number for h in history] == [3, 2, 1]
            assert [h.author for h in history] == ["carol", "bob", "alice"]
            third, second, first = history
            assert (third.added, third.changed, third.removed) == ((KC,), (), (KB,))
            assert (second.added, second.changed, second.removed) == ((), (KA,), ())
            assert (first.added, first.changed, first.removed) == ((KA, KB), (), ())
            assert [h.number for h in await store.history(limit=2)] == [3, 2]
            assert [h.number for h in await store.history(limit=5, before=3)] == [2, 1]
            assert await store.history(limit=5, before=1) == []

    run(main())


def test_revision_info_has_the_full_diff(new_url: UrlFactory) -> None:
    async def main() -> None:
        async with opened(new_url()) as store:
            await commit_abc(store)
            second = await store.revision_info(2)
            assert second.info == (await store.history(limit=1, before=3))[0]
            [change] = second.changes
            assert (change.key, change.before, change.after) == (
                KA,
                A,
                changed(A, cidrs=["10.0.0.0/8"]),
            )
            third = await store.revision_info(3)
            assert [(c.key, c.before, c.after) for c in third.changes] == [
                (KC, None, C),
                (KB, B, None),
            ]

    run(main())


def test_expect_revision_is_optimistic_concurrency(new_url: UrlFactory) -> None:
    async def main() -> None:
        async with opened(new_url()) as store:
            assert await store.commit([A], [], "alice", "first", expect_revision=0)
            with pytest.raises(Conflict) as err:
                await store.commit([B], [], "bob", "stale", expect_revision=0)
            assert (err.value.expected, err.value.current) == (0, 1)
            with pytest.raises(Conflict):  # checked even when nothing would change
                await store.commit([A], [], "bob", "stale and identical", expect_revision=0)
            assert await store.revision() == 1
            assert (await store.snapshot()).documents == {KA: A}
            assert await store.commit([B], [], "bob", "fresh", expect_revision=1)

    run(main())


def test_malformed_commits_write_nothing(new_url: UrlFactory) -> None:
    async def main() -> None:
        async with opened(new_url()) as store:
            bad_commits = [
                ([A, A], []),
                ([A], [KA]),
                ([], [KA, KA]),
                ([{"kind": "Group"}], []),
                ([doc("x", value={1, 2})], []),
                ([doc("x", value=float("nan"))], []),
            ]
            for puts, deletes in bad_commits:
                with pytest.raises(InvalidDocument):
                    await store.commit(puts, deletes, "alice", "bad")
            assert await store.revision() == 0

    run(main())


def test_watch_from_zero_and_from_the_middle(new_url: UrlFactory) -> None:
    async def main() -> None:
        async with opened(new_url()) as store:
            await commit_abc(store)
            async with aclosing(store.watch(0)) as everything, aclosing(store.watch(2)) as late:
                events = await take(everything, 3)
                assert [e.number for e in events if isinstance(e, Revision)] == [1, 2, 3]
                assert events[2] == await store.revision_info(3)
                [third] = await take(late, 1)
                assert third == events[2]
                await store.commit([B], [], "dave", "fourth")
                [a4] = await take(everything, 1)
                [b4] = await take(late, 1)
                assert a4 == b4 == await store.revision_info(4)

    run(main())


def test_two_concurrent_watchers_see_every_revision_in_order(new_url: UrlFactory) -> None:
    count = 12

    async def collect(store: Store) -> list[int]:
        async with aclosing(store.watch(0)) as events:
            got = await take(events, count)
        return [e.number for e in got if isinstance(e, Revision)]

    async def main() -> None:
        async with opened(new_url()) as store:
            watchers = [asyncio.create_task(collect(store)) for _ in range(2)]
            for i in range(count):
                await store.commit([changed(A, n=i)], [], "alice", f"edit {i}")
                if i % 3 == 0:
                    await asyncio.sleep(0.01)  # let watchers interleave with commits
            assert await asyncio.gather(*watchers) == [list(range(1, count + 1))] * 2

    run(main())


def test_watch_wakes_on_a_commit_made_after_it_started(new_url: UrlFactory) -> None:
    async def main() -> None:
        async with opened(new_url()) as store:
            await store.commit([A], [], "alice", "first")
            async with aclosing(store.watch(1)) as events:
                waiting = asyncio.create_task(anext(events))
                await asyncio.sleep(0.2)  # the watcher is now idle (correct either way)
                assert not waiting.done()
                await store.commit([B], [], "bob", "second")
                event = await waiting
                assert isinstance(event, Revision) and event.info.added == (KB,)

    run(main())


def test_compaction_makes_old_watchers_resync(new_url: UrlFactory) -> None:
    async def main() -> None:
        async with opened(new_url()) as store:
            await commit_abc(store)
            await store.commit([B], [], "dave", "fourth")
            await store.compact(3)
            with pytest.raises(Compacted):
                await store.snapshot(2)
            with pytest.raises(Compacted):
                await store.revision_info(2)
            assert [h.number for h in await store.history()] == [4, 3]
            assert (await store.revision_info(3)).info.removed == (KB,)
            async with aclosing(store.watch(1)) as events:
                [event] = await take(events, 1)
                assert event == Resync(4)
                with pytest.raises(StopAsyncIteration):
                    await anext(events)
            # Re-list, then watch on from the snapshot: nothing is missed.
            snap = await store.snapshot()
            assert snap.revision == 4 and set(snap.documents) == {KA, KB, KC}
            async with aclosing(store.watch(snap.revision)) as events:
                await store.commit([], [KC], "erin", "fifth")
                [event] = await take(events, 1)
                assert isinstance(event, Revision) and event.number == 5
            async with aclosing(store.watch(3)) as events:  # the oldest kept revision
                assert [e.number for e in await take(events, 2) if isinstance(e, Revision)] == [
                    4,
                    5,
                ]

    run(main())


def test_compact_keeps_the_current_documents(new_url: UrlFactory) -> None:
    async def main() -> None:
        async with opened(new_url()) as store:
            await commit_abc(store)
            current = await store.snapshot()
            await store.compact(3)
            await store.compact(2)  # below the floor: nothing to do
            assert await store.snapshot() == current
            assert await store.snapshot(3) == current
            with pytest.raises(UnknownRevision):
                await store.compact(4)
            info = await store.commit([], [KA], "bob", "after compaction")
            assert info is not None and info.number == 4

    run(main())


def test_watch_from_the_future_resyncs(new_url: UrlFactory) -> None:
    async def main() -> None:
        async with opened(new_url()) as store:
            await store.commit([A], [], "alice", "first")
            async with aclosing(store.watch(7)) as events:
                assert await take(events, 1) == [Resync(1)]

    run(main())


def test_watch_ends_when_the_store_closes(new_url: UrlFactory) -> None:
    async def main() -> None:
        store_cm = opened(new_url())
        store = await store_cm.__aenter__()
        events = store.watch(0)
        waiting = asyncio.create_task(anext(events))
        await asyncio.sleep(0.1)
        await store_cm.__aexit__(None, None, None)
        with pytest.raises(StopAsyncIteration):
            await waiting

    run(main())


def test_a_closed_store_refuses_calls(new_url: UrlFactory) -> None:
    async def main() -> None:
        async with opened(new_url()) as store:
            pass
        with pytest.raises(StoreError, match="closed"):
            await store.revision()
        await store.close()  # idempotent

    run(main())


def test_tokens_round_trip(new_url: UrlFactory) -> None:
    agent = TokenRecord("t1", sha256_hex("secret-1"), "agent", None, "hv1", 1700000000.0)
    admin = TokenRecord("t0", sha256_hex("secret-0"), "admin", "acme", None, 1700000001.5)

    async def main() -> None:
        async with opened(new_url()) as store:
            assert not await store.has_tokens()
            await store.put_token(agent)
            await store.put_token(admin)
            assert await store.has_tokens()
            assert await store.token_by_hash(sha256_hex("secret-1")) == agent
            assert await store.token_by_hash(sha256_hex("nope")) is None
            assert await store.list_tokens() == [admin, agent]
            with pytest.raises(InvalidDocument):  # a hash belongs to one token
                await store.put_token(TokenRecord("t2", agent.sha256_hash, "agent", None, "x", 0))
            rotated = TokenRecord("t1", sha256_hex("secret-2"), "agent", None, "hv1", 1.0)
            await store.put_token(rotated)
            assert await store.token_by_hash(sha256_hex("secret-1")) is None
            assert await store.token_by_hash(sha256_hex("secret-2")) == rotated
            assert await store.delete_token("t1")
            assert not await store.delete_token("t1")
            assert await store.list_tokens() == [admin]
            assert await store.revision() == 0  # tokens are not revisioned

    run(main())


def test_status_and_inventory_round_trip(new_url: UrlFactory) -> None:
    vm = {"name": "web-1", "tenant": "acme", "interfaces": [{"mac": "52:54:00:00:00:01"}]}

    async def main() -> None:
        async with opened(new_url()) as store:
            assert await store.statuses() == {} and await store.inventory() == {}
            await store.put_status("hv1", {"converged": False, "revision": 1})
            await store.put_status("hv/2", {"converged": True, "revision": 2})
            await store.put_status("hv1", {"converged": True, "revision": 2})
            assert await store.statuses() == {
                "hv1": {"converged": True, "revision": 2},
                "hv/2": {"converged": True, "revision": 2},
            }
            await store.put_inventory("hv1", [vm])
            await store.put_inventory("hv2", [])
            assert await store.inventory() == {"hv1": [vm], "hv2": []}
            assert await store.revision() == 0

    run(main())


def test_everything_survives_reopening(new_url: UrlFactory) -> None:
    url = new_url()
    token = TokenRecord("t1", sha256_hex("s"), "agent", None, "hv1", 5.0)

    async def write() -> None:
        async with opened(url) as store:
            await commit_abc(store)
            await store.put_token(token)
            await store.put_status("hv1", {"converged": True})
            await store.put_inventory("hv1", [{"name": "vm"}])

    async def read() -> tuple[object, ...]:
        async with opened(url) as store:
            async with aclosing(store.watch(0)) as events:
                replay = await take(events, 3)
            return (
                await store.revision(),
                [await store.snapshot(r) for r in range(4)],
                await store.history(),
                [await store.revision_info(r) for r in (1, 2, 3)],
                replay,
                await store.list_tokens(),
                await store.statuses(),
                await store.inventory(),
            )

    run(write())
    first, second = run(read()), run(read())
    assert first == second
    assert first[0] == 3 and first[5] == [token]


def test_two_writers_never_lose_a_commit(new_url: UrlFactory) -> None:
    url = new_url()

    async def writer(store: Store, name: str) -> list[int]:
        numbers = []
        for i in range(8):
            info = await store.commit([doc(f"{name}-{i}")], [], name, f"{name} {i}")
            assert info is not None
            numbers.append(info.number)
        return numbers

    async def main() -> None:
        async with opened(url) as one, opened(url) as two:
            first, second = await asyncio.gather(writer(one, "x"), writer(two, "y"))
            assert sorted(first + second) == list(range(1, 17))
            assert first == sorted(first) and second == sorted(second)
            assert len((await one.snapshot()).documents) == 16
            # Both think they are at 16: exactly one of two racing commits wins.
            results = await asyncio.gather(
                one.commit([A], [], "x", "race", expect_revision=16),
                two.commit([B], [], "y", "race", expect_revision=16),
                return_exceptions=True,
            )
            assert sorted(type(r).__name__ for r in results) == ["Conflict", "RevisionInfo"]
            assert await two.revision() == 17

    run(main())


def test_example_fleet_round_trips_and_validates(new_url: UrlFactory) -> None:
    raw, issues = read_documents([EXAMPLES])
    assert not issues

    async def main() -> None:
        async with opened(new_url()) as store:
            info = await store.commit([d for d, _ in raw], [], "alice", "import examples")
            assert info is not None and len(info.added) == len(raw)
            snap = await store.snapshot()
            assert snap.documents == {DocKey.of(d): d for d, _ in raw}
            catalog = build_catalog(
                [(d, Source(f"store:{k}", 1)) for k, d in snap.documents.items()]
            )
            assert catalog.config.policies

    run(main())
