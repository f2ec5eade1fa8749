"""Commit arithmetic shared by every store: canonical JSON, validation, and the change list.

Pure: no I/O. A store calls `prepare` before it touches its backend (so both backends refuse
the same inputs), reads the current bodies of `Prepared.touched`, and writes what `plan`
returns; an empty plan means "identical, no revision". Documents are compared by their
canonical JSON text (sorted keys, no whitespace), so key order never makes a revision.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from hyperwall.store.base import DocChange, DocKey, Document, InvalidDocument, sorted_keys


def canonical(value: Any) -> str:
    """The one JSON text of a value: what the store keeps and compares."""
    try:
        return json.dumps(
            value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        )
    except (TypeError, ValueError) as exc:
        raise InvalidDocument(f"not JSON-able: {exc}") from None


def decode(text: str) -> Document:
    value = json.loads(text)
    assert isinstance(value, dict)
    return value


@dataclass(frozen=True, slots=True)
class BodyChange:
    """One key's change as stored text: `before` None = added, `after` None = removed."""

    key: DocKey
    before: str | None
    after: str | None

    def decoded(self) -> DocChange:
        return DocChange(
            self.key,
            None if self.before is None else decode(self.before),
            None if self.after is None else decode(self.after),
        )


@dataclass(frozen=True, slots=True)
class Prepared:
    """A validated commit request: canonical bodies to put, keys to delete."""

    puts: dict[DocKey, str]
    deletes: frozenset[DocKey]

    @property
    def touched(self) -> tuple[DocKey, ...]:
        return sorted_keys([*self.puts, *self.deletes])


def prepare(puts: Iterable[Mapping[str, Any]], deletes: Iterable[DocKey]) -> Prepared:
    """Key and canonicalize the puts; refuse a key named twice (in puts, or put and deleted)."""
    bodies: dict[DocKey, str] = {}
    for doc in puts:
        key = DocKey.of(doc)
        if key in bodies:
            raise InvalidDocument(f"{key} is put twice in one commit")
        bodies[key] = canonical(doc)
    gone: set[DocKey] = set()
    for key in deletes:
        if not isinstance(key, DocKey):
            raise InvalidDocument(f"deletes must be DocKeys, not {type(key).__name__}")
        if key in bodies or key in gone:
            raise InvalidDocument(f"{key} is named twice in one commit")
        gone.add(key)
    return Prepared(bodies, frozenset(gone))


def plan(prepared: Prepared, current: Mapping[DocKey, str]) -> tuple[BodyChange, ...]:
    """The real changes against `current` (bodies of at least the touched keys), by key."""
    out: list[BodyChange] = []
    for key in prepared.touched:
        before = current.get(key)
        after = prepared.puts.get(key)
        if before != after:
            out.append(BodyChange(key, before, after))
    return tuple(out)


def apply_changes(
    documents: Mapping[DocKey, Document],
    puts: Iterable[Mapping[str, Any]],
    deletes: Iterable[DocKey],
) -> dict[DocKey, Document]:
    """The document set a commit would produce: what the manager validates before committing."""
    prepared = prepare(puts, deletes)
    out = {k: v for k, v in documents.items() if k not in prepared.deletes}
    out.update({k: decode(body) for k, body in prepared.puts.items()})
    return out


def difference(
    current: Mapping[DocKey, Document], target: Mapping[DocKey, Document]
) -> tuple[list[Document], list[DocKey]]:
    """Puts and deletes that turn `current` into `target` (empty when they are equal)."""
    puts = [
        target[k]
        for k in sorted_keys(list(target))
        if k not in current or canonical(current[k]) != canonical(target[k])
    ]
    deletes = [k for k in sorted_keys(list(current)) if k not in target]
    return puts, deletes


def touched_difference(
    current: Mapping[DocKey, Document],
    puts: Iterable[Mapping[str, Any]],
    deletes: Iterable[DocKey],
) -> tuple[list[Document], list[DocKey]]:
    """Like `difference(current, apply_changes(current, puts, deletes))`, in time
    proportional to the change: only the named keys are compared."""
    prepared = prepare(puts, deletes)
    changed = [
        decode(body)
        for key, body in sorted(prepared.puts.items(), key=lambda kv: kv[0].sort_key())
        if key not in current or canonical(current[key]) != body
    ]
    return changed, [k for k in sorted_keys(prepared.deletes) if k in current]
