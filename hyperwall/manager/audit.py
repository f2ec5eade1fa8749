"""The audit ledger as the API shows it: records newest first, filtered for the caller,
and the verification of the whole chain (`store.audit.verify_store`).

Who sees what: provider-admins and auditors every record in full. A tenant-admin sees the
records that changed a document it may read (its tenant's or a provider document); of a
record that also changed other tenants' documents it sees only its own changes, a count of
the others, the actor, and not the message (a message may name what else changed), as the
history does. Verification is of the whole chain for everyone; a tenant-admin gets the
numbers of the altered records, not what was altered in them.
"""

from __future__ import annotations

import logging
from typing import Any

from hyperwall.manager.auth import TENANT_ADMIN, Principal
from hyperwall.store import Store
from hyperwall.store.audit import verify_store
from hyperwall.store.base import LedgerEntry
from hyperwall.store.ledger import decode

log = logging.getLogger("hyperwall.manager.audit")

WINDOW = 500  # ledger records read per store call while filtering for a tenant
HIDDEN_MESSAGE = "a revision that also changed other tenants' documents"


async def records(
    store: Store, who: Principal, limit: int, before: int | None
) -> list[dict[str, Any]]:
    """Up to `limit` records numbered below `before` that `who` may see, newest first."""
    high = (await store.revision()) if before is None else before - 1
    out: list[dict[str, Any]] = []
    while high >= 1 and len(out) < limit:
        low = max(1, high - WINDOW + 1)
        entries = await store.ledger(low, high)
        for stored in reversed(entries):
            shown = record_json(stored, who)
            if shown is not None:
                out.append(shown)
                if len(out) == limit:
                    break
        if not entries or entries[0].number > low:
            break  # the ledger starts here (it began after revision 1)
        high = low - 1
    return out


def record_json(stored: LedgerEntry, who: Principal) -> dict[str, Any] | None:
    """A stored record as `who` may see it; None if it changed nothing `who` may read."""
    record = decode(stored)
    changes = [
        {
            "kind": c.key.kind,
            "tenant": c.key.tenant,
            "name": c.key.name,
            "action": c.action,
            "before": c.before,
            "after": c.after,
        }
        for c in record.changes
        if who.can_see(c.key.tenant)
    ]
    hidden = len(record.changes) - len(changes)
    if record.changes and not changes:
        return None
    return {
        "revision": record.number,
        "time": record.time,
        "author": record.author,
        "actor": record.actor.to_json(),
        "message": HIDDEN_MESSAGE if hidden else record.message,
        "changes": changes,
        "hiddenChanges": hidden,
        "prev": record.prev,
        "hash": stored.hash,
    }


async def verification(store: Store, who: Principal) -> dict[str, Any]:
    result = await verify_store(store)
    findings = [
        {
            "record": f.number,
            "problem": "the record or what it vouches for was altered"
            if who.role == TENANT_ADMIN
            else f.problem,
        }
        for f in result.findings
    ]
    if not result.ok:
        log.error("audit: the ledger does not verify; first altered record %s", findings[0])
    return {
        "intact": result.ok,
        "records": result.records,
        "start": result.start,
        "head": result.head,
        "headHash": result.head_hash,
        "firstAltered": result.first.number if result.first else None,
        "findings": findings,
    }


async def anchor(store: Store, number: int) -> None:
    """Log the hash of revision `number`'s record: a copy of the chain's head outside the
    store, to compare with `verify`'s after a suspected rewrite of the whole chain."""
    for stored in await store.ledger(number, number):
        log.info("audit: revision %d ledger hash %s", stored.number, stored.hash)
