"""Helpers for the store tests: run a coroutine with a hang guard, open/close, documents."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from hyperwall.store import Store, WatchEvent, open_store

T = TypeVar("T")

HANG_GUARD = 60.0  # seconds; only to turn a hang into a failure, never a timing assertion


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(asyncio.wait_for(coro, HANG_GUARD))


@asynccontextmanager
async def opened(url: str) -> AsyncIterator[Store]:
    store = await open_store(url)
    try:
        yield store
    finally:
        await store.close()


def doc(name: str, tenant: str | None = None, kind: str = "Group", **spec: Any) -> dict[str, Any]:
    """A small raw document; the store does not validate policy, so the spec is free."""
    metadata: dict[str, Any] = {"name": name}
    if tenant is not None:
        metadata["tenant"] = tenant
    return {
        "apiVersion": "hyperwall.io/v1",
        "kind": kind,
        "metadata": metadata,
        "spec": spec or {"cidrs": ["192.0.2.0/24"]},
    }


async def take(events: AsyncGenerator[WatchEvent, None], count: int) -> list[WatchEvent]:
    """The next `count` events (bounded by the hang guard of `run`)."""
    return [await anext(events) for _ in range(count)]
