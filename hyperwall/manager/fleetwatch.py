"""Keeps `FleetPrograms` at the store's newest revision and wakes the agents' long-polls.

One task follows the store (commits of this manager and of other replicas alike): a
snapshot, then `watch` from its revision; each revision's changes are applied to the
documents, validated into a `Catalog` (`catalogs.CatalogTracker`), and handed to
`FleetPrograms.advance` on one dedicated worker thread (the compiler is not thread-safe and
the event loop must keep serving). Only then is `revision` raised and the long-polls woken,
so an agent woken for revision N is always answered with N's program.

Failure modes: the store unreachable or the watch broken: retry from a new snapshot after a
pause (agents keep the last program meanwhile: they are never told anything half-done); a
`Resync` (compacted history): the same. A stored revision that does not validate (another
manager wrote it; this one never commits one) is logged and skipped: `error` says so, the
programs stay at the last valid revision.

Garbage collection. The fleet's compiled state is millions of long-lived objects, and every
revision adds more (the compiler's new sets and chains, the hosts' new programs, what the
assertion gate keeps). Left to the collector, each young collection that follows a revision
walks what that revision built, and its full collections walk the whole fleet: pauses of
30-100 ms inside the next apply's gate (measured, `benchmarks/audit`), up to ~0.5 s for a
full one. So after every load and every revision the fleet thread freezes what survives
(`gc.freeze`: out of the collector's reach; acyclic objects are still freed by their
reference counts when dropped). What the frozen part holds in reference cycles would stay
until it is unfrozen: every `REFREEZE` revisions one full collection over everything runs
on the fleet thread (`_freeze`), which bounds that.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from contextlib import aclosing
from typing import Any, TypeVar

from hyperwall.compiler.fleet_programs import FleetPrograms, HostVersion
from hyperwall.manager.catalogs import CatalogTracker
from hyperwall.manager.gate import Holding
from hyperwall.manager.moves import Moves
from hyperwall.policy.errors import DocumentsInvalid
from hyperwall.policy.model import Catalog
from hyperwall.store import Resync, Revision, Store

log = logging.getLogger("hyperwall.manager.fleet")
T = TypeVar("T")
REMEMBER = 256  # revisions whose changed hosts are remembered (for apply's answer)
REFREEZE = 256  # revisions between full garbage collections (see the module docstring)


class FleetWatch:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.programs = FleetPrograms()
        self.tracker = CatalogTracker()
        self.revision = -1  # below every revision: not loaded yet
        self.error: str | None = None
        self.changed: OrderedDict[int, list[str]] = OrderedDict()
        self.encoded: dict[str, tuple[int, bytes]] = {}  # host -> (digest, whole program JSON)
        self.moves = Moves()  # live migrations: their destinations' programs (`manager.moves`)
        self.holding = Holding()  # assertions known to hold, and at which revision (`gate`)
        self.pokes = 0  # raised by `poke`: a host's program changed without a revision
        self._frozen = 0  # revisions frozen since the last full collection
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="hyperwall-fleet")
        self._cond = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._follow())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def run(self, fn: Any, *args: Any) -> Any:
        """Run `fn(*args)` on the fleet thread (everything that touches the compiler)."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    # -- following the store ---------------------------------------------------------------

    async def _publish(self, revision: int, hosts: list[str]) -> None:
        self.changed[revision] = hosts
        while len(self.changed) > REMEMBER:
            self.changed.popitem(last=False)
        async with self._cond:
            self.revision = revision
            self._cond.notify_all()

    def _load(self, revision: int, documents: dict[Any, Any]) -> list[str]:
        try:
            catalog: Catalog | None = self.tracker.load(revision, documents)
            self.error = None
        except DocumentsInvalid as exc:
            catalog = None
            self.error = f"stored revision {revision} does not validate: {exc}"
            log.error("%s", self.error)
        hosts = self.programs.load(revision, catalog)
        self._freeze(full=True)
        return hosts

    def _freeze(self, full: bool = False) -> None:
        """Move what the fleet thread built out of the collector's reach (see the module
        docstring); a full collection first when `full` or every `REFREEZE` revisions."""
        self._frozen += 1
        if full or self._frozen >= REFREEZE:
            gc.unfreeze()
            gc.collect()
            self._frozen = 0
        gc.freeze()

    def _advance(self, event: Revision) -> list[str] | None:
        try:
            catalog = self.tracker.advance(event.number, event.changes)
        except DocumentsInvalid as exc:
            self.error = f"stored revision {event.number} does not validate: {exc}"
            log.error("%s", self.error)
            return None
        self.error = None
        old, holding = self.programs.catalog, self.holding
        if old is not None and holding.revision == event.number - 1:
            self.holding = holding.carried(event.number, old, catalog)
        hosts = self.programs.advance(event.number, catalog)
        self._freeze()
        return hosts

    async def _follow(self) -> None:
        while True:
            try:
                snap = await self.store.snapshot()
                hosts = await self.run(self._load, snap.revision, snap.documents)
                await self._publish(snap.revision, hosts)
                async with aclosing(self.store.watch(snap.revision)) as events:
                    async for event in events:
                        if isinstance(event, Resync):
                            break
                        changed = await self.run(self._advance, event)
                        if changed is not None:
                            await self._publish(event.number, changed)
                await asyncio.sleep(0.1)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Unavailable etc.: start over from a snapshot
                log.warning("following the store failed, retrying: %s", exc)
                await asyncio.sleep(1.0)

    # -- waiting ------------------------------------------------------------------------

    async def wait_past(self, after: int, wait: float, pokes: int | None = None) -> bool:
        """Wait up to `wait` seconds until the programs are past revision `after` (or, with
        `pokes`, until `poke` was called since the caller read that count)."""

        def ready() -> bool:
            return self.revision > after or (pokes is not None and self.pokes != pokes)

        if ready():
            return True
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(wait, 0.0)), self._cond:
                await self._cond.wait_for(ready)
        return ready()

    async def poke(self) -> None:
        """Wake the long-polls: a program changed without a new revision (a move began or
        ended: `manager.moves`)."""
        async with self._cond:
            self.pokes += 1
            self._cond.notify_all()

    async def host_version(self, host: str) -> HostVersion:
        """The program `host`'s agent is served: the ordinary one, or while workloads move
        to it, the one with them placed there."""
        if not self.moves.into(host):
            return self.programs.host(host)
        moving: HostVersion | None = await self.run(self.moves.program, host, self.programs)
        return moving if moving is not None else self.programs.host(host)

    async def wait_for(self, revision: int, wait: float) -> list[str] | None:
        """The hosts whose programs `revision` changed, once the programs reach it (None if
        that takes longer than `wait` seconds or the revision is no longer remembered)."""
        await self.wait_past(revision - 1, wait)
        return self.changed.get(revision)

    async def what_if(self, catalog: Catalog) -> list[str]:
        """Hosts whose programs would change if the documents validated into `catalog`."""
        result: list[str] = await self.run(self.programs.what_if, catalog)
        return result
