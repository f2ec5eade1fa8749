"""The audit ledger: one hash-chained record per committed revision, and its verification.

Pure: no I/O. Both stores call `entry` inside the commit transaction, with the hash of the
previous record (`GENESIS` for the first), and keep the `LedgerEntry` it returns beside the
revision, never compacted. `verify` recomputes the chain from the stored records and checks
it against what the store holds (the kept revisions' diffs, the current documents), so an
edit made directly in the SQLite file or in etcd is found and the first altered record named.

A record is the canonical JSON of

    {"number": N, "time": T, "author": "tenant-admin@acme:1f2e...", "message": "...",
     "actor": {"token": "1f2e...", "role": "tenant-admin", "scope": "acme"},
     "changes": [{"kind": K, "tenant": T|null, "name": N, "before": SHA|null, "after": SHA|null}],
     "prev": SHA-256 of record N-1 (64 zeros for the first)}

and its hash is the SHA-256 of that text. `before`/`after` are the SHA-256 of the canonical
document text: the record commits to the diff without repeating the documents (the full
diff is the revision's, `Store.revision_info`). Design notes: `docs/design/audit.md`.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from hyperwall.store.base import DocKey, Document, LedgerEntry, Revision
from hyperwall.store.changes import BodyChange, canonical

GENESIS = "0" * 64
MISSING = "the record is missing"

_IDENTITY = re.compile(r"(?P<role>[a-z-]+)(?:@(?P<scope>[^:]+))?:(?P<token>\S+)")


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _digest(body: str | None) -> str | None:
    return None if body is None else sha256_text(body)


@dataclass(frozen=True, slots=True)
class Actor:
    """Who committed: the token id and its role (and tenant or host), parsed from the
    manager's author string `role[@scope]:token`; anything else is kept as `name`."""

    token: str | None
    role: str | None
    scope: str | None
    name: str

    @classmethod
    def of(cls, author: str) -> Actor:
        m = _IDENTITY.fullmatch(author)
        if m is None:
            return cls(None, None, None, author)
        return cls(m["token"], m["role"], m["scope"], author)

    def to_json(self) -> dict[str, str | None]:
        return {"token": self.token, "role": self.role, "scope": self.scope}


@dataclass(frozen=True, slots=True)
class LedgerChange:
    key: DocKey
    before: str | None  # SHA-256 of the canonical document text; None = added
    after: str | None  # None = removed

    @property
    def action(self) -> str:
        return "add" if self.before is None else "remove" if self.after is None else "change"


@dataclass(frozen=True, slots=True)
class LedgerRecord:
    """A decoded ledger record (`decode`)."""

    number: int
    time: float
    author: str
    actor: Actor
    message: str
    changes: tuple[LedgerChange, ...]
    prev: str


def entry(
    number: int,
    author: str,
    time: float,
    message: str,
    changes: Iterable[BodyChange],
    prev: str,
) -> LedgerEntry:
    """The ledger record of a revision with these changes (stored canonical text)."""
    record = {
        "number": number,
        "time": time,
        "author": author,
        "actor": Actor.of(author).to_json(),
        "message": message,
        "changes": [
            {
                "kind": c.key.kind,
                "tenant": c.key.tenant,
                "name": c.key.name,
                "before": _digest(c.before),
                "after": _digest(c.after),
            }
            for c in changes
        ],
        "prev": prev,
    }
    body = canonical(record)
    return LedgerEntry(number, body, sha256_text(body))


def entry_of_revision(revision: Revision, prev: str) -> LedgerEntry:
    """The record of a stored revision (a migration's backfill of revisions kept before
    the ledger existed)."""
    info = revision.info
    return entry(info.number, info.author, info.time, info.message, _bodies(revision), prev)


def _bodies(revision: Revision) -> list[BodyChange]:
    return [
        BodyChange(
            c.key,
            None if c.before is None else canonical(c.before),
            None if c.after is None else canonical(c.after),
        )
        for c in revision.changes
    ]


class MalformedRecord(ValueError):
    """A stored ledger record that is not a record (edited into something else)."""


def decode(stored: LedgerEntry) -> LedgerRecord:
    try:
        raw: dict[str, Any] = json.loads(stored.body)
        changes = tuple(
            LedgerChange(DocKey(c["kind"], c["tenant"], c["name"]), c["before"], c["after"])
            for c in raw["changes"]
        )
        return LedgerRecord(
            int(raw["number"]),
            float(raw["time"]),
            str(raw["author"]),
            Actor.of(str(raw["author"])),
            str(raw["message"]),
            changes,
            str(raw["prev"]),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise MalformedRecord(f"ledger record {stored.number} is malformed: {exc}") from None


# -- verification ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Finding:
    """One place where the store and its ledger disagree; `number` is the record blamed."""

    number: int
    problem: str


@dataclass(frozen=True, slots=True)
class Verification:
    """The outcome of `verify`: `first` is the first altered record (None: intact)."""

    records: int
    start: int | None  # the first record's number (1 unless the ledger began later)
    head: int | None
    head_hash: str | None
    findings: tuple[Finding, ...]

    @property
    def ok(self) -> bool:
        return not self.findings

    @property
    def first(self) -> Finding | None:
        return self.findings[0] if self.findings else None


def verify(
    entries: list[LedgerEntry],
    current_revision: int,
    revisions: Iterable[Revision],
    documents: Mapping[DocKey, Document],
) -> Verification:
    """Check the chain, then the store against it, and name every disagreement.

    1. Each record's hash is the SHA-256 of its text, its `prev` is the previous record's
       hash (an edited record that was re-hashed breaks its successor's link: the edited one
       is blamed), numbers run without a gap up to `current_revision`.
    2. Each kept revision (`revisions`) has the author, time, message and document digests
       its record says (an edit of a revision row, a log record or a stored document).
    3. Each current document is the last `after` the ledger holds for its key, and no
       document the ledger says exists is missing (an edit of the current documents).
    """
    findings: list[Finding] = []
    records: dict[int, LedgerRecord] = {}
    previous: LedgerEntry | None = None
    for stored in entries:
        number = stored.number
        gap = previous is not None and number != previous.number + 1
        if gap:
            findings.append(Finding(previous.number + 1, MISSING))  # type: ignore[union-attr]
        intact = sha256_text(stored.body) == stored.hash
        if not intact:
            findings.append(Finding(number, "its text does not match its hash (edited)"))
        try:
            record = decode(stored)
        except MalformedRecord as exc:
            findings.append(Finding(number, str(exc)))
            previous = stored
            continue
        records[number] = record
        if record.number != number:
            findings.append(Finding(number, f"it says it is record {record.number}"))
        if not intact or gap:
            pass  # its link is untrusted, or its predecessor gone: already blamed
        elif previous is None and record.prev != GENESIS:
            findings.append(Finding(number, "its predecessor is missing from the ledger"))
        elif previous is not None and record.prev != previous.hash:
            findings.append(
                Finding(
                    previous.number,
                    "the next record's link does not match its hash (edited and re-hashed)",
                )
            )
        previous = stored
    head = entries[-1].number if entries else None
    if (head or 0) < current_revision:
        findings.append(Finding((head or 0) + 1, MISSING))
    elif head is not None and head > current_revision:
        findings.append(Finding(current_revision + 1, "the ledger is ahead of the store"))
    for revision in revisions:
        problem = _revision_mismatch(revision, records.get(revision.number))
        if problem is not None:
            findings.append(Finding(revision.number, problem))
    if not findings:
        # only an intact chain that agrees with the kept revisions says what the current
        # documents must be (a broken one would blame the record before the edit)
        findings.extend(_documents_mismatch(records, documents, _starts_at_one(entries)))
    unique = {(f.number, f.problem): f for f in findings}
    ordered = sorted(unique.values(), key=lambda f: f.number)
    return Verification(
        len(entries),
        entries[0].number if entries else None,
        head,
        entries[-1].hash if entries else None,
        tuple(ordered),
    )


def _starts_at_one(entries: list[LedgerEntry]) -> bool:
    return bool(entries) and entries[0].number == 1


def _revision_mismatch(revision: Revision, record: LedgerRecord | None) -> str | None:
    if record is None:
        return None  # reported by the chain check
    info = revision.info
    for field, stored, recorded in (
        ("author", info.author, record.author),
        ("time", info.time, record.time),
        ("message", info.message, record.message),
    ):
        if stored != recorded:
            return f"the stored revision's {field} differs from its record"
    said = {c.key: (c.before, c.after) for c in record.changes}
    held = {c.key: (_digest(b.before), _digest(b.after)) for c, b in _pairs(revision)}
    for key in sorted({*said, *held}, key=DocKey.sort_key):
        if said.get(key) != held.get(key):
            return f"the stored documents of this revision differ from its record: {key}"
    return None


def _pairs(revision: Revision) -> list[tuple[Any, BodyChange]]:
    return list(zip(revision.changes, _bodies(revision), strict=True))


def _documents_mismatch(
    records: Mapping[int, LedgerRecord], documents: Mapping[DocKey, Document], start_at_one: bool
) -> list[Finding]:
    """The current documents against the ledger's last word on each key."""
    last: dict[DocKey, tuple[int, str | None]] = {}
    for number in sorted(records):
        for change in records[number].changes:
            last[change.key] = (number, change.after)
    findings = []
    for key, (number, after) in last.items():
        doc = documents.get(key)
        held = None if doc is None else sha256_text(canonical(doc))
        if held != after:
            what = "is missing" if held is None else "differs from what the ledger says"
            findings.append(Finding(number, f"the current {key} {what} (edited directly)"))
    if start_at_one:
        for key in documents:
            if key not in last:
                head = max(records) if records else 0
                findings.append(Finding(head, f"the current {key} has no record (inserted)"))
    return findings
