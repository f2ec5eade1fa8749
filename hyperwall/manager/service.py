"""The manager's operations on the store, independent of HTTP: apply, diff, delete,
rollback, history, status, and the revision notifier agents long-poll on."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass, field, replace
from typing import Any

from hyperwall.compiler.digest import digest_text
from hyperwall.manager import audit
from hyperwall.manager.auth import Principal, Refused
from hyperwall.manager.catalogs import View, build_state, state_key, stored_source
from hyperwall.manager.discovery import check_report, discovered_status
from hyperwall.manager.discovery import plan as discovery_plan
from hyperwall.manager.documents import (
    BadRequest,
    key_json,
    keys_of,
    redact,
    request_error,
    validate,
)
from hyperwall.manager.fleetwatch import FleetWatch
from hyperwall.manager.gate import (
    AssertionsBroken,
    GateResult,
    Holding,
    check_change,
    check_rollback,
)
from hyperwall.manager.gate_times import GateTimes
from hyperwall.manager_api import DiscoveredReport
from hyperwall.policy.catalog_state import CatalogState
from hyperwall.policy.errors import DocumentsInvalid, Source
from hyperwall.policy.model import Catalog
from hyperwall.store import (
    Conflict,
    DocKey,
    Document,
    RevisionInfo,
    Store,
    Unavailable,
)
from hyperwall.store.changes import apply_changes, difference, touched_difference

log = logging.getLogger("hyperwall.manager")

UNREACHABLE_AFTER = 30.0  # seconds without a report
COMMIT_ATTEMPTS = 20  # commits of other replicas meanwhile; each retry re-plans
COMMIT_BACKOFF = 0.02  # seconds, times the attempt, jittered: replicas stop colliding
MAX_WAIT = 60.0
REALIZE_WAIT = 30.0  # how long apply waits for the fleet programs, to name the hosts changed
VIEW_WAIT = 5.0  # how long apply waits for the fleet watch to reach the store's revision


@dataclass(frozen=True, slots=True)
class Plan:
    """What a change would do: the diff against revision `base`, and the hosts it touches."""

    base: int
    puts: list[Document]
    deletes: list[DocKey]
    before: dict[DocKey, Document]
    hosts: list[str]
    assertions: GateResult = field(default_factory=GateResult)

    def to_json(self) -> dict[str, Any]:
        changes = []
        for doc in self.puts:
            key = DocKey.of(doc)
            old = self.before.get(key)
            action = "add" if old is None else "change"
            changes.append({**key_json(key), "action": action, "before": old, "after": doc})
        for key in self.deletes:
            changes.append(
                {**key_json(key), "action": "remove", "before": self.before[key], "after": None}
            )
        return {
            "baseRevision": self.base,
            "changes": changes,
            "hostsChanged": self.hosts,
            "assertions": self.assertions.to_json(),
        }


def revision_json(info: RevisionInfo) -> dict[str, Any]:
    return {
        "revision": info.number,
        "author": info.author,
        "time": info.time,
        "message": info.message,
        "added": [key_json(k) for k in info.added],
        "changed": [key_json(k) for k in info.changed],
        "removed": [key_json(k) for k in info.removed],
    }


class Manager:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.fleet = FleetWatch(store)  # follows the store; wakes the agents' long-polls
        self.commits = asyncio.Lock()  # this manager's commits take turns (`change`)
        self.gate_times = GateTimes()  # every gate check's duration (`/metrics`)

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        await self.fleet.start()

    async def stop(self) -> None:
        await self.fleet.stop()
        await self.store.close()

    # -- documents ------------------------------------------------------------------------

    async def visible_documents(self, who: Principal) -> tuple[int, dict[DocKey, Document]]:
        snap = await self.store.snapshot()
        return snap.revision, {k: v for k, v in snap.documents.items() if who.can_see(k.tenant)}

    async def plan(
        self, who: Principal, documents: list[Any], deletes: list[DocKey], what_if: bool = True
    ) -> Plan:
        """Upsert `documents` and delete `deletes` over the current set; validate the whole
        result (on a worker thread: the event loop keeps answering); refuse what the caller
        may not write. With `what_if`, name the hosts whose programs would change (compared
        with the programs the fleet watch holds). A tenant-admin's issues name nothing of
        other tenants (`redact`)."""
        keys = keys_of(documents)
        for key in [*keys, *deletes]:
            reason = who.write_refusal(key.tenant)
            if reason is not None:
                raise Refused(403, f"{key}: {reason}")
        if len(set(keys)) != len(keys):
            raise request_error("a document is given twice in one request")
        base, current, state = await self._base()
        try:
            puts, gone, catalog = await asyncio.to_thread(
                _validated_change, current, state, documents, deletes, keys
            )
        except BadRequest as exc:
            raise BadRequest(redact(exc.errors, who)) from None
        before = {k: current[k] for k in [*map(DocKey.of, puts), *gone] if k in current}
        hosts = await self.fleet.what_if(catalog) if what_if and (puts or gone) else []
        gate = GateResult()
        if puts or gone:  # the assertions this change touches, re-checked (`gate`)
            known = self.fleet.holding.at(base)
            gate = await self.fleet.run(
                check_change, state.catalog, catalog, self.fleet.programs, known
            )
            self.gate_times.observe(gate.seconds, len(gate.checked))
        return Plan(base, puts, gone, before, hosts, gate)

    async def _base(self) -> tuple[int, dict[DocKey, Document], CatalogState]:
        """The current revision, its documents and their validated state: the fleet watch's
        if it is at the store's revision, else validated here from a snapshot."""
        view = await self._current_view()
        if view is not None:
            return view.revision, dict(view.documents), view.state
        snap = await self.store.snapshot()
        try:
            state = build_state(snap.documents)
        except DocumentsInvalid as exc:
            raise BadRequest([i.to_json() for i in exc.issues]) from None
        return snap.revision, dict(snap.documents), state

    async def current_catalog(self) -> tuple[int, dict[DocKey, Document], Catalog]:
        """The current revision, its documents and their catalog (validated)."""
        base, documents, state = await self._base()
        return base, documents, state.catalog

    async def _current_view(self) -> View | None:
        """The fleet watch's validated view if it is at the store's revision (waiting a
        little for it to catch up); None if it is not."""
        revision = await self.store.revision()
        view = self.fleet.tracker.view
        if view is None or view.revision != revision:
            await self.fleet.wait_past(revision - 1, VIEW_WAIT)
            view = self.fleet.tracker.view
        return view if view is not None and view.revision == revision else None

    async def change(
        self,
        who: Principal,
        documents: list[Any],
        deletes: list[DocKey],
        message: str,
        began: int | None = None,
    ) -> tuple[Plan, RevisionInfo | None]:
        """Validate and commit as one revision. Commits of this manager take turns (one
        lock), so unrelated concurrent applies never conflict; a commit of another replica
        meanwhile makes it re-plan. It is refused (409, `Overlap`) only if a revision
        committed since this request began (`began`: the revision then; default now)
        changed one of the documents it changes."""
        if began is None:
            began = await self.store.revision()
        async with self.commits:
            for attempt in range(1, COMMIT_ATTEMPTS + 1):
                plan = await self.plan(who, documents, deletes, what_if=False)
                if not plan.puts and not plan.deletes:
                    return plan, None
                if plan.assertions.broken:
                    what = "the delete" if not plan.puts else "the change"
                    raise AssertionsBroken(what, plan.assertions)
                await self._check_overlap(began, plan)
                try:
                    info = await self.store.commit(
                        plan.puts, plan.deletes, who.identity, message, plan.base
                    )
                except Conflict:
                    if attempt == COMMIT_ATTEMPTS:
                        raise
                    await asyncio.sleep(random.uniform(0, COMMIT_BACKOFF * attempt))
                    continue
                break
        if info is None:
            return plan, None
        if info.number == plan.base + 1 and self.fleet.holding.revision <= info.number:
            # what the gate established holds at the new revision (`gate.Holding`)
            self.fleet.holding = Holding(info.number, plan.assertions.holding)
        await audit.anchor(self.store, info.number)
        hosts = await self.fleet.wait_for(info.number, REALIZE_WAIT)
        return replace(plan, hosts=hosts or []), info

    async def _check_overlap(self, began: int, plan: Plan) -> None:
        """Overlap if a revision after `began` (up to the plan's base) changed a document
        this plan changes: the caller decided on a document that is no longer there."""
        if plan.base <= began:
            return
        mine = {*map(DocKey.of, plan.puts), *plan.deletes}
        for info in await self.store.history(plan.base - began, plan.base + 1):
            if info.number <= began:
                continue
            touched = mine.intersection((*info.added, *info.changed, *info.removed))
            if touched:
                first = min(touched, key=lambda k: k.sort_key())
                raise Overlap(
                    f"{first} was changed by revision {info.number} while this request was"
                    f" handled (it began at revision {began}); re-read it and apply again"
                )

    async def rollback(self, who: Principal, target: int, message: str | None) -> dict[str, Any]:
        async with self.commits:
            base, current, state = await self._base()
            old = await self.store.snapshot(target)
            catalog = await asyncio.to_thread(validate, old.documents, None, True)
            puts, deletes = difference(current, old.documents)
            if puts or deletes:
                gate = await self.fleet.run(
                    check_rollback, state.catalog, catalog, self.fleet.programs
                )
                self.gate_times.observe(gate.seconds, len(gate.checked))
                if gate.broken:
                    raise AssertionsBroken(f"the rollback to revision {target}", gate)
            text = message or f"rollback to revision {target}"
            info = await self.store.commit(puts, deletes, who.identity, text, base)
        hosts: list[str] = []
        if info is not None:
            await audit.anchor(self.store, info.number)
            hosts = await self.fleet.wait_for(info.number, REALIZE_WAIT) or []
        return {
            "revision": info.number if info else base,
            "created": info is not None,
            "hostsChanged": hosts,
        }

    # -- discovered workloads -------------------------------------------------------------

    async def discovered(
        self, who: Principal, host: str, report: DiscoveredReport
    ) -> dict[str, Any]:
        """Commit what an agent discovered on its host (`discovery.plan`) as one revision
        authored by the agent, and keep its record (the host's inventory)."""
        who.require_agent_of(host)
        units = check_report(host, report.documents)
        domains = {name: d.model_dump() for name, d in report.domains.items()}
        async with self.commits:
            return await self._discovered(who, host, report, units, domains)

    async def _discovered(
        self,
        who: Principal,
        host: str,
        report: DiscoveredReport,
        units: Any,
        domains: dict[str, Any],
    ) -> dict[str, Any]:
        for attempt in range(1, COMMIT_ATTEMPTS + 1):
            base, current, state = await self._base()
            records = await self.store.inventory()
            outcome = await asyncio.to_thread(
                discovery_plan, host, units, domains, report.unmanaged, current, records, state
            )
            info = None
            if outcome.puts or outcome.deletes:
                # first the old and the new keys: a crash before the commit forgets nothing
                await self.store.put_inventory(host, outcome.pending)
                try:
                    info = await self.store.commit(
                        outcome.puts, outcome.deletes, who.identity, outcome.message, base
                    )
                except Conflict:
                    if attempt == COMMIT_ATTEMPTS:
                        raise
                    continue
            await self.store.put_inventory(host, outcome.record)
            if outcome.refused:
                log.warning("%s: refused %s", outcome.message, outcome.refused)
            return {
                "revision": info.number if info is not None else base,
                "created": info is not None,
                "message": outcome.message,
                "refused": outcome.refused,
                "conflicts": outcome.conflicts,
            }
        raise AssertionError("unreachable")

    # -- status ---------------------------------------------------------------------------

    async def status(self) -> dict[str, Any]:
        revision = await self.store.revision()
        expected = {h: digest_text(d) for h, d in self.fleet.programs.digests().items()}
        reports = await self.store.statuses()
        inventories = await self.store.inventory()
        now = time.time()
        hosts = []
        for host in sorted(set(expected) | set(reports)):
            report = reports.get(host)
            entry: dict[str, Any] = {
                "host": host,
                "expectedHash": expected.get(host),
                "revision": None,
                "programHash": None,
                "converged": False,
                "error": None,
                "endpoints": 0,
                "reported": None,
            }
            if report is not None:
                entry.update({k: report.get(k, entry[k]) for k in list(entry)[2:]})
            entry["state"] = host_state(entry, revision, now)
            entry.update(discovered_status(inventories.get(host)))
            hosts.append(entry)
        return {"revision": revision, "hosts": hosts}

    async def report(self, host: str, body: dict[str, Any]) -> None:
        await self.store.put_status(host, {**body, "host": host, "reported": time.time()})


class Overlap(Exception):
    """A concurrent revision changed a document this request changes (409)."""


def _validated_change(
    current: dict[DocKey, Document],
    state: CatalogState,
    documents: list[Any],
    deletes: list[DocKey],
    keys: list[DocKey],
) -> tuple[list[Document], list[DocKey], Catalog]:
    """The puts and deletes that change `current`, and the resulting catalog; BadRequest
    with every issue of the resulting set. Pure CPU: run on a worker thread."""
    numbered = {k: i + 1 for i, k in enumerate(keys)}
    puts, gone = touched_difference(current, documents, deletes)
    changed: CatalogState | None = None
    try:  # in time proportional to the change (CatalogState)
        changed = state.change(
            [(doc, Source("request", numbered[DocKey.of(doc)])) for doc in puts],
            [state_key(k) for k in gone],
            stored_source,
        )
    except DocumentsInvalid as exc:
        issues = exc.issues
    if changed is None or changed.absent_references() - state.absent_references():
        # People may not name a workload that is not there (a typo), nor delete one that
        # is named: the stored set tolerates only the absences discovery left behind.
        # This raises with every issue of the set, those references included.
        target = apply_changes(current, puts, gone)
        validate(target, numbered, absent_workloads=state.absent_references())
        if changed is None:
            raise BadRequest([i.to_json() for i in issues])
    return puts, gone, changed.catalog


def host_state(entry: dict[str, Any], current: int, now: float) -> str:
    reported = entry.get("reported")
    if reported is None or now - float(reported) > UNREACHABLE_AFTER:
        return "unreachable"
    if entry.get("error"):
        return "error"
    if entry.get("revision") == current and entry.get("converged"):
        return "in-sync"
    return "pending"


__all__ = ["Manager", "Overlap", "Plan", "Unavailable", "host_state", "revision_json"]
