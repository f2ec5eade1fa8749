"""The coalescing work queue: a key queued many times is processed once; a key added while
it is processed is processed again afterwards."""

from __future__ import annotations

import threading

from hyperwall.agent.workqueue import WorkQueue


def test_repeated_keys_coalesce() -> None:
    q = WorkQueue()
    for _ in range(5):
        q.add("policy")
    q.add("resync")
    assert len(q) == 2
    assert q.get(timeout=0) == "policy"
    assert q.get(timeout=0) == "resync"
    assert q.get(timeout=0) is None


def test_key_added_while_active_is_requeued_once() -> None:
    q = WorkQueue()
    q.add("policy")
    key = q.get(timeout=0)
    assert key == "policy"
    q.add("policy")
    q.add("policy")
    assert len(q) == 0  # not handed out twice at once
    q.done("policy")
    assert q.get(timeout=0) == "policy"
    q.done("policy")
    assert q.get(timeout=0) is None


def test_add_after_and_close() -> None:
    q = WorkQueue()
    got: list[str | None] = []
    q.add_after("resync", 0.01)
    got.append(q.get(timeout=5))
    q.done("resync")
    t = threading.Thread(target=lambda: got.append(q.get()))
    t.start()
    q.close()
    t.join(timeout=5)
    assert got == ["resync", None]
