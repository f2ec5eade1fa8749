"""Rollback and replace-all, on both stores."""

from __future__ import annotations

import pytest

from hyperwall.store import Compacted, DocKey, InvalidDocument
from hyperwall.store.ops import replace_all, rollback
from tests.store.conftest import UrlFactory
from tests.store.support import doc, opened, run

A, B, C = doc("a"), doc("b"), doc("c", "acme")


def test_rollback_is_a_new_revision_with_the_old_documents(new_url: UrlFactory) -> None:
    async def main() -> None:
        async with opened(new_url()) as store:
            await store.commit([A, B], [], "alice", "one")
            await store.commit([C, {**A, "spec": {"x": 1}}], [DocKey.of(B)], "bob", "two")
            info = await rollback(store, 1, "carol")
            assert info is not None and info.number == 3
            assert info.message == "rollback to revision 1"
            assert (await store.snapshot()).documents == (await store.snapshot(1)).documents
            assert await rollback(store, 1, "carol") is None  # already there
            assert await rollback(store, 3, "carol", "noop") is None
            await store.compact(2)
            with pytest.raises(Compacted):
                await rollback(store, 1, "carol")

    run(main())


def test_replace_all_sets_exactly_the_given_documents(new_url: UrlFactory) -> None:
    async def main() -> None:
        async with opened(new_url()) as store:
            await store.commit([A, B], [], "alice", "one")
            info = await replace_all(store, [B, C], "bob", "replace")
            assert info is not None
            assert (info.added, info.changed, info.removed) == (
                (DocKey.of(C),),
                (),
                (DocKey.of(A),),
            )
            assert await replace_all(store, [C, B], "bob", "again") is None
            with pytest.raises(InvalidDocument):
                await replace_all(store, [C, C], "bob", "twice")
            assert await store.revision() == 2

    run(main())
