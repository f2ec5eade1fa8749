"""FlowStore: the default place beside a SQLite store, retention passes, backpressure."""

from __future__ import annotations

import asyncio
from pathlib import Path

from hyperwall.flows.filter import FlowFilter, us_time
from hyperwall.manager.flow_store import (
    Busy,
    FlowsConfig,
    FlowStore,
    Retention,
    default_path,
    open_flows,
)


def test_default_path() -> None:
    assert default_path("sqlite:////var/lib/hw/store.db") == Path("/var/lib/hw/store.flows.db")
    assert default_path("sqlite:///rel/s.db?poll=1") == Path("rel/s.flows.db")
    assert default_path("etcd://127.0.0.1:2379") is None


def test_open_flows_without_a_place(tmp_path: Path) -> None:
    assert asyncio.run(open_flows(None, "etcd://127.0.0.1:2379")) is None

    async def beside() -> Path:
        store = await open_flows(FlowsConfig(tmp_path / "f.db"), "etcd://x:1")
        assert store is not None
        await store.close()
        return store.path

    assert asyncio.run(beside()).exists()


def test_age_retention_and_backpressure(tmp_path: Path) -> None:
    async def run() -> None:
        store = await FlowStore.open(tmp_path / "f.db", Retention(max_age=60, max_pending=2))
        try:
            now = 1_796_000_000.0
            old = {"time": us_time(int((now - 120) * 1e6)), "workload": "a/b"}
            new = {"time": us_time(int((now - 30) * 1e6)), "workload": "a/b"}
            results = await asyncio.gather(
                *(store.store_batch("hv1", "f", i, i + 1, [old, new]) for i in range(6)),
                return_exceptions=True,
            )
            busy = [r for r in results if isinstance(r, Busy)]
            assert busy and len(busy) == store.refused_total  # more than 2 waiting: refused
            stored = 2 * (6 - len(busy))
            assert await store.count() == stored == store.stored_total
            assert await store.expire(now) == stored // 2
            page = await store.query(FlowFilter(), 100, None)
            assert page.records == [new] * (stored // 2)
        finally:
            await store.close()

    asyncio.run(run())
