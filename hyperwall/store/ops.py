"""Operations built on any `Store`: replace the whole document set, roll back to a revision.

Both read a snapshot, compute the difference (`changes.difference`) and commit it with
`expect_revision` set to the snapshot's revision, so a concurrent commit by another manager
replica is never overwritten unseen: `replace_all` retries on `Conflict` (its intent does not
depend on what changed), `rollback` raises it (the operator should look again).
"""

from __future__ import annotations

from hyperwall.store.base import Conflict, DocKey, Document, RevisionInfo, Store
from hyperwall.store.changes import difference, prepare

REPLACE_ATTEMPTS = 5


async def replace_all(
    store: Store, documents: list[Document], author: str, message: str
) -> RevisionInfo | None:
    """Make `documents` the whole document set: one revision, or None if already so."""
    prepare(documents, [])  # refuse malformed input or a key given twice before reading
    target = {DocKey.of(doc): doc for doc in documents}
    attempt = 1
    while True:
        current = await store.snapshot()
        puts, deletes = difference(current.documents, target)
        try:
            return await store.commit(puts, deletes, author, message, current.revision)
        except Conflict:
            if attempt >= REPLACE_ATTEMPTS:
                raise
            attempt += 1


async def rollback(
    store: Store, target: int, author: str, message: str | None = None
) -> RevisionInfo | None:
    """Commit the documents of revision `target` as a new revision (None if identical).

    Raises `Compacted` if `target` is gone, `Conflict` if another commit landed meanwhile.
    """
    current = await store.snapshot()
    old = await store.snapshot(target)
    puts, deletes = difference(current.documents, old.documents)
    text = message if message is not None else f"rollback to revision {target}"
    return await store.commit(puts, deletes, author, text, current.revision)
