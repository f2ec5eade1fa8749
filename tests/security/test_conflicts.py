"""Finding 10 of issue 12: parallel applies of unrelated documents all land (on one
manager and on two managers sharing a store); a 409 means a real overlap: a revision
committed while the request was handled changed a document the request changes."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from hyperwall.manager.auth import PROVIDER_ADMIN, Principal
from hyperwall.manager.service import Manager, Overlap
from hyperwall.store import DocKey, open_store
from tests.manager.conftest import example_documents, start_server
from tests.manager.support import call, group
from tests.store.conftest import sqlite_urls

ADMIN = Principal("t", PROVIDER_ADMIN, None, None)


def test_twenty_parallel_unrelated_applies_on_two_replicas_all_land(tmp_path: Path) -> None:
    url = sqlite_urls(tmp_path)()
    first = start_server(url, tmp_path / "a.token")
    a = next(first)
    second = start_server(url, tmp_path / "b.token", admin=a.admin)
    b = next(second)
    try:
        assert call(a.url, a.admin, "POST", "/v1/apply", {"documents": example_documents()})
        answers: list[tuple[int, str]] = []

        def write(i: int) -> None:
            live = a if i % 2 else b
            body = {"documents": [group(f"parallel-{i}")], "message": str(i)}
            r = call(live.url, live.admin, "POST", "/v1/apply", body)
            answers.append((r.status_code, r.text))

        threads = [threading.Thread(target=write, args=(i,)) for i in range(20)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert [s for s, _ in answers] == [200] * 20, [t for s, t in answers if s != 200]
        history = call(a.url, a.admin, "GET", "/v1/history", limit=30).json()
        assert [h["revision"] for h in history] == list(range(21, 0, -1))
    finally:
        second.close()
        first.close()


def test_a_409_only_when_a_concurrent_revision_changed_the_same_document(
    tmp_path: Path,
) -> None:
    async def run() -> None:
        store = await open_store(sqlite_urls(tmp_path)())
        manager = Manager(store)
        await manager.start()
        try:
            setup = [*example_documents(), group("shared")]
            info = await store.commit(setup, [], "setup", "setup")
            assert info is not None
            began = info.number
            # another writer changes acme's Group shared after the request began
            theirs = group("shared", cidrs=["198.51.100.0/24"])
            await store.commit([theirs], [], "other", "meanwhile", began)
            unrelated = group("unrelated")
            _, made = await manager.change(ADMIN, [unrelated], [], "ok", began)
            assert made is not None and made.number == began + 2
            mine = group("shared", cidrs=["203.0.113.0/24"])
            with pytest.raises(Overlap, match="Group acme/shared was changed by revision"):
                await manager.change(ADMIN, [mine], [], "lost update", began)
            gone = DocKey("Group", "acme", "shared")
            with pytest.raises(Overlap):
                await manager.change(ADMIN, [], [gone], "x", began)
            # a request that began after it applies over it
            _, made = await manager.change(ADMIN, [mine], [], "later", began + 2)
            assert made is not None
            assert await store.revision() == began + 3  # the refused ones committed nothing
        finally:
            await manager.stop()

    asyncio.run(run())
