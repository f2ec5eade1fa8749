"""SQLite-only behaviour: several store objects (processes) on one file, crash safety, schema."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import textwrap
from contextlib import aclosing
from pathlib import Path

import pytest

from hyperwall.store import Revision, StoreError
from tests.store.support import doc, opened, run, take

ROOT = Path(__file__).parents[2]


def test_two_store_objects_on_one_file_see_each_others_commits(tmp_path: Path) -> None:
    """Like two manager processes: the watcher learns of the other's commits by polling."""
    url = f"sqlite:///{tmp_path}/shared.db?poll=0.05"

    async def main() -> None:
        async with (
            opened(url) as watching,
            opened(url) as writing,
            aclosing(watching.watch(0)) as events,
        ):
            for i in range(3):
                await writing.commit([doc(f"g{i}")], [], "other", f"commit {i}")
            got = await take(events, 3)
            assert [e.number for e in got if isinstance(e, Revision)] == [1, 2, 3]
            assert await watching.snapshot() == await writing.snapshot()

    run(main())


def test_commits_through_the_same_object_wake_watchers_without_polling(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/s.db?poll=3600"  # polling alone would take an hour

    async def main() -> None:
        async with opened(url) as store, aclosing(store.watch(0)) as events:
            waiting = asyncio.create_task(anext(events))
            await asyncio.sleep(0.1)
            await store.commit([doc("a")], [], "alice", "first")
            event = await waiting  # bounded by the hang guard (60 s), far below 3600 s
            assert isinstance(event, Revision) and event.number == 1

    run(main())


CRASH = textwrap.dedent(
    """
    import os, sys, time
    from hyperwall.store import sqlite_db as db
    from hyperwall.store.changes import prepare

    conn = db.connect(sys.argv[1])
    inserts = 0

    def die_on_second_document(statement):
        global inserts
        if statement.startswith("INSERT INTO documents"):
            inserts += 1
            if inserts == 2:
                os._exit(9)  # the process dies in the middle of the commit transaction

    conn.set_trace_callback(die_on_second_document)
    docs = [{"kind": "Group", "metadata": {"name": n}, "spec": {}} for n in ("x", "y", "z")]
    db.commit(conn, prepare(docs, []), "crash", "never lands", None, time.time())
    """
)


def test_a_process_dying_mid_commit_leaves_no_trace(tmp_path: Path) -> None:
    path = tmp_path / "crash.db"
    url = f"sqlite:///{path}"

    async def before() -> None:
        async with opened(url) as store:
            await store.commit([doc("a")], [], "alice", "first")

    async def after() -> None:
        async with opened(url) as store:
            assert await store.revision() == 1
            assert [h.message for h in await store.history()] == ["first"]
            assert set((await store.snapshot()).documents) == {
                d for d in (await store.snapshot(1)).documents
            }
            info = await store.commit([doc("x")], [], "bob", "second")
            assert info is not None and info.number == 2  # the dead commit's number is free

    run(before())
    died = subprocess.run([sys.executable, "-c", CRASH, str(path)], cwd=ROOT, check=False)
    assert died.returncode == 9
    run(after())


def test_the_file_is_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "wal.db"

    async def main() -> None:
        async with opened(f"sqlite:///{path}"):
            pass

    run(main())
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "future.db"
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA user_version=99")

    async def main() -> None:
        async with opened(f"sqlite:///{path}"):
            pass

    with pytest.raises(StoreError, match="schema version 99"):
        run(main())


def test_reports_skip_the_fsync_but_commits_keep_it(tmp_path: Path) -> None:
    from hyperwall.store import sqlite_db

    conn = sqlite_db.connect(str(tmp_path / "sync.db"))
    try:
        sqlite_db.put_report(conn, "statuses", "hv1", {"revision": 1})
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL again
        assert sqlite_db.reports(conn, "statuses") == {"hv1": {"revision": 1}}
    finally:
        conn.close()
