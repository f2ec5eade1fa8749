"""Verify a store against its audit ledger: read everything the ledger vouches for, at one
revision, and hand it to the pure check (`store.ledger.verify`).

Works on any `Store`: the ledger records, the kept revisions' diffs (in batches) and the
documents, all bounded by the revision read first, so commits made meanwhile neither hide
nor fake a finding. Counterpart: the manager's `GET /v1/audit/verify`.
"""

from __future__ import annotations

from hyperwall.store.base import Compacted, Revision, Store
from hyperwall.store.ledger import Verification, verify

BATCH = 100  # revisions read per call


async def verify_store(store: Store) -> Verification:
    """The ledger's verification against the store as of its current revision."""
    current = await store.revision()
    entries = await store.ledger(1, current)
    kept: list[Revision] = []
    low = 1
    while low <= current:
        high = min(current, low + BATCH - 1)
        kept.extend(await store.revisions(low, high))
        low = high + 1
    try:
        documents = (await store.snapshot(current)).documents
    except Compacted:  # compacted to `current` by another process meanwhile: read again
        return await verify_store(store)
    return verify(entries, current, kept, documents)
