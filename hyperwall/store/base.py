"""The store interface: versioned policy documents, agent tokens and host reports.

One `Store` protocol, two implementations (`sqlite.SqliteStore`, `etcd.EtcdStore`) that pass
the same test suite (`tests/store/`). The pure commit arithmetic both share lives in
`store.changes`; generic operations built on the interface (rollback, replace-all) in
`store.ops`. Documents are raw JSON-able dicts shaped as `docs/policy.md` describes; the store
never validates policy, the manager does (`policy.catalog.build_catalog`) before committing.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncGenerator, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

Document = dict[str, Any]

_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


# -- errors ---------------------------------------------------------------------------------


class StoreError(Exception):
    """Base of every error a store raises on purpose."""


class Conflict(StoreError):
    """`expect_revision` was given and is not the current revision: re-read and retry."""

    def __init__(self, expected: int, current: int) -> None:
        super().__init__(f"expected revision {expected}, store is at {current}")
        self.expected = expected
        self.current = current


class Compacted(StoreError):
    """The revision asked for is older than the history the store still keeps."""

    def __init__(self, revision: int, oldest: int) -> None:
        super().__init__(f"revision {revision} is compacted; oldest kept is {oldest}")
        self.revision = revision
        self.oldest = oldest


class UnknownRevision(StoreError, LookupError):
    """The revision asked for does not exist (yet)."""


class InvalidDocument(StoreError, ValueError):
    """A document or a commit is malformed: no kind/name, not JSON, a key given twice."""


class TooLarge(StoreError):
    """The commit is larger than the backend can write in one transaction (etcd limits)."""


class Unavailable(StoreError):
    """The backend cannot be reached (etcd down, connection lost); retrying may help."""


# -- values ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DocKey:
    """The identity of a document: (kind, tenant, name); tenant None is provider scope."""

    kind: str
    tenant: str | None
    name: str

    def __post_init__(self) -> None:
        if not self.kind or not self.name or self.tenant == "":
            raise InvalidDocument(
                f"invalid document key {self.kind!r} {self.tenant!r} {self.name!r}"
            )

    @classmethod
    def of(cls, doc: Mapping[str, Any]) -> DocKey:
        """The key of a raw document: its `kind`, `metadata.tenant` and `metadata.name`."""
        meta = doc.get("metadata") if isinstance(doc, Mapping) else None
        kind = doc.get("kind") if isinstance(doc, Mapping) else None
        if not isinstance(meta, Mapping) or not isinstance(kind, str):
            raise InvalidDocument("a document needs a string `kind` and a `metadata` mapping")
        name, tenant = meta.get("name"), meta.get("tenant")
        if not isinstance(name, str) or not (tenant is None or isinstance(tenant, str)):
            raise InvalidDocument(f"{kind}: metadata.name must be a string, tenant a string")
        return cls(kind, tenant, name)

    def sort_key(self) -> tuple[str, str, str]:
        """Kind, then provider scope before tenants, then name."""
        return (self.kind, self.tenant or "", self.name)

    def __str__(self) -> str:
        return (
            f"{self.kind} {self.tenant}/{self.name}" if self.tenant else f"{self.kind} {self.name}"
        )


def sorted_keys(keys: Iterable[DocKey]) -> tuple[DocKey, ...]:
    return tuple(sorted(keys, key=DocKey.sort_key))


@dataclass(frozen=True, slots=True)
class DocChange:
    """One document in one revision: `before` None = added, `after` None = removed."""

    key: DocKey
    before: Document | None
    after: Document | None


@dataclass(frozen=True, slots=True)
class RevisionInfo:
    """A revision's header and diff summary, as `history()` lists it."""

    number: int
    author: str
    time: float  # epoch seconds
    message: str
    added: tuple[DocKey, ...]
    changed: tuple[DocKey, ...]
    removed: tuple[DocKey, ...]


@dataclass(frozen=True, slots=True)
class Revision:
    """A revision with its full diff: what `revision_info()` returns and `watch()` yields."""

    info: RevisionInfo
    changes: tuple[DocChange, ...]  # sorted by key

    @property
    def number(self) -> int:
        return self.info.number


@dataclass(frozen=True, slots=True)
class Resync:
    """The watcher is behind what the store keeps (compacted) or ahead of it: re-list.

    The watch ends after this event. Take `snapshot()` and watch again from its revision.
    `revision` is the store's current revision when the gap was found.
    """

    revision: int


WatchEvent = Revision | Resync


@dataclass(frozen=True, slots=True)
class Snapshot:
    revision: int
    documents: dict[DocKey, Document]


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """One audit-ledger record as stored: its canonical JSON text and the SHA-256 of that
    text. The record names the revision, its actor, time, message, the digests of every
    changed document's before/after, and the previous record's hash (`store.ledger`)."""

    number: int
    body: str
    hash: str


@dataclass(frozen=True, slots=True)
class TokenRecord:
    """An API token as stored: only the SHA-256 of the secret, never the secret itself."""

    id: str
    sha256_hash: str
    role: str
    tenant: str | None
    host: str | None
    created: float
    expires: float | None = None  # seconds since the epoch; None: never

    def __post_init__(self) -> None:
        if not self.id:
            raise ValueError("a token needs an id")
        if not _SHA256_HEX.fullmatch(self.sha256_hash):
            raise ValueError("sha256_hash must be 64 lowercase hex digits (never the token)")


def sha256_hex(secret: str) -> str:
    """The hash under which a token's secret is stored and looked up."""
    return hashlib.sha256(secret.encode()).hexdigest()


def summarize(
    number: int, author: str, time: float, message: str, changes: tuple[DocChange, ...]
) -> RevisionInfo:
    """The header and added/changed/removed key lists of a revision with these changes."""
    added = tuple(c.key for c in changes if c.before is None)
    removed = tuple(c.key for c in changes if c.after is None)
    changed = tuple(c.key for c in changes if c.before is not None and c.after is not None)
    return RevisionInfo(number, author, time, message, added, changed, removed)


# -- the interface --------------------------------------------------------------------------


class Store(Protocol):
    """The manager's datastore. Every method is a coroutine; all are safe to call concurrently.

    Revisions are numbered 1, 2, 3, ... with no gaps; 0 is the empty store before the first
    commit. Only `commit` creates revisions. Tokens, statuses and inventory are not
    revisioned: they are the latest value per id/host.
    """

    async def commit(
        self,
        puts: list[Document],
        deletes: list[DocKey],
        author: str,
        message: str,
        expect_revision: int | None = None,
    ) -> RevisionInfo | None:
        """Put and delete documents atomically as one new revision.

        Returns None and writes nothing when the result equals the current content (deleting
        an absent key and putting an identical document change nothing). Raises `Conflict`
        when `expect_revision` is given and is not the current revision (checked first, even
        for a commit that would change nothing), `InvalidDocument` for a malformed document or
        a key named twice, `TooLarge` when the backend cannot take it in one transaction.
        """
        ...

    async def revision(self) -> int:
        """The current revision; 0 for an empty store."""
        ...

    async def snapshot(self, revision: int | None = None) -> Snapshot:
        """All documents at `revision` (default: current). `Compacted` if it is gone,
        `UnknownRevision` if it is in the future."""
        ...

    async def history(self, limit: int = 50, before: int | None = None) -> list[RevisionInfo]:
        """At most `limit` revisions numbered below `before` (default: all), newest first;
        compacted revisions are not listed."""
        ...

    async def revision_info(self, number: int) -> Revision:
        """One revision with the before/after documents of every key it changed."""
        ...

    def watch(self, from_revision: int) -> AsyncGenerator[WatchEvent, None]:
        """Every revision after `from_revision`, in order, then new ones as they commit.

        Yields `Resync` (and ends) when `from_revision` is older than the kept history or
        newer than the store. Never skips a revision. Ends when the store is closed. Close it
        (`contextlib.aclosing`) when done, so that its backend resources are released.
        """
        ...

    async def compact(self, keep_from: int) -> None:
        """Drop history before `keep_from`: snapshots, diffs and watches from older
        revisions become unavailable. Never changes the current documents. The audit
        ledger is never compacted."""
        ...

    async def revisions(self, low: int, high: int) -> list[Revision]:
        """The kept revisions numbered `low`..`high` with their diffs, oldest first
        (compacted ones are left out)."""
        ...

    async def ledger(self, low: int = 1, high: int | None = None) -> list[LedgerEntry]:
        """The audit-ledger records of revisions `low`..`high` (default: to the current
        one), oldest first, exactly as stored: `store.ledger.verify` checks them."""
        ...

    async def put_token(self, token: TokenRecord) -> None:
        """Insert or replace (by id); `InvalidDocument` if another id has the same hash."""
        ...

    async def token_by_hash(self, sha256_hash: str) -> TokenRecord | None: ...

    async def list_tokens(self) -> list[TokenRecord]:
        """All tokens, sorted by id."""
        ...

    async def delete_token(self, token_id: str) -> bool:
        """True if the token existed."""
        ...

    async def has_tokens(self) -> bool: ...

    async def put_status(self, host: str, status: Mapping[str, Any]) -> None: ...

    async def statuses(self) -> dict[str, dict[str, Any]]: ...

    async def put_inventory(self, host: str, workloads: list[dict[str, Any]]) -> None: ...

    async def inventory(self) -> dict[str, list[dict[str, Any]]]: ...

    async def close(self) -> None:
        """Release connections and threads; running watches end. Idempotent."""
        ...
