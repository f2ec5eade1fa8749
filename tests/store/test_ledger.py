"""The pure ledger: records, the chain, and verification naming the first altered record."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from hyperwall.store import DocChange, DocKey, Revision
from hyperwall.store.base import LedgerEntry, summarize
from hyperwall.store.changes import canonical
from hyperwall.store.ledger import (
    GENESIS,
    Actor,
    decode,
    entry_of_revision,
    sha256_text,
    verify,
)
from tests.store.support import doc

Fleet = tuple[list[LedgerEntry], list[Revision], dict[DocKey, dict[str, Any]]]


def build(steps: list[list[tuple[str, int | None]]]) -> Fleet:
    """Revisions from steps of (name, version or None = delete); their ledger and the
    resulting documents, as a store would hold them."""
    docs: dict[DocKey, dict[str, Any]] = {}
    entries: list[LedgerEntry] = []
    revisions: list[Revision] = []
    prev = GENESIS
    for number, step in enumerate(steps, start=1):
        changes = []
        for name, version in step:
            key = DocKey("Group", "acme", name)
            before = docs.get(key)
            after = None if version is None else doc(name, "acme", v=version)
            if before is None and after is None:
                continue
            changes.append(DocChange(key, before, after))
            if after is None:
                docs.pop(key)
            else:
                docs[key] = after
        ordered = tuple(sorted(changes, key=lambda c: c.key.sort_key()))
        info = summarize(number, f"tenant-admin@acme:t{number}", 1000.0 + number, "m", ordered)
        revision = Revision(info, ordered)
        made = entry_of_revision(revision, prev)
        prev = made.hash
        entries.append(made)
        revisions.append(revision)
    return entries, revisions, docs


STEPS: list[list[tuple[str, int | None]]] = [
    [("a", 1), ("b", 1)],
    [("a", 2)],
    [("b", None), ("c", 1)],
    [("a", 3)],
]


def test_an_untouched_ledger_verifies() -> None:
    entries, revisions, docs = build(STEPS)
    result = verify(entries, 4, revisions, docs)
    assert result.ok and result.first is None
    assert (result.records, result.start, result.head) == (4, 1, 4)
    assert result.head_hash == entries[-1].hash == sha256_text(entries[-1].body)
    assert decode(entries[1]).prev == entries[0].hash


def test_a_record_names_the_actor_and_the_digests_of_the_diff() -> None:
    entries, revisions, _ = build(STEPS)
    record = decode(entries[2])
    assert record.actor == Actor("t3", "tenant-admin", "acme", "tenant-admin@acme:t3")
    by_name = {c.key.name: c for c in record.changes}
    assert by_name["b"].action == "remove" and by_name["c"].action == "add"
    assert by_name["c"].after == sha256_text(canonical(revisions[2].changes[1].after))
    assert Actor.of("alice") == Actor(None, None, None, "alice")


def _edit(stored: LedgerEntry, rehash: bool, **fields: Any) -> LedgerEntry:
    body = canonical({**json.loads(stored.body), **fields})
    return dataclasses.replace(stored, body=body, hash=sha256_text(body) if rehash else stored.hash)


def test_an_edited_record_is_named_whether_or_not_it_was_rehashed() -> None:
    entries, revisions, docs = build(STEPS)
    for rehash in (False, True):
        tampered = list(entries)
        tampered[1] = _edit(entries[1], rehash, author="provider-admin:someone")
        result = verify(tampered, 4, revisions, docs)
        assert result.first is not None and result.first.number == 2, result.findings


def test_a_missing_or_extra_record_and_a_rewritten_start_are_found() -> None:
    entries, revisions, docs = build(STEPS)
    assert verify(entries[:2] + entries[3:], 4, revisions, docs).first.number == 3  # type: ignore[union-attr]
    assert verify(entries[:3], 4, revisions, docs).first.number == 4  # type: ignore[union-attr]
    assert verify(entries[1:], 4, revisions, docs).first.number == 2  # type: ignore[union-attr]


def test_the_store_edited_under_an_intact_ledger_is_found() -> None:
    entries, revisions, docs = build(STEPS)
    # a revision's stored message edited
    edited = dataclasses.replace(
        revisions[2], info=dataclasses.replace(revisions[2].info, message="nothing to see")
    )
    found = verify(entries, 4, [*revisions[:2], edited, revisions[3]], docs).first
    assert found is not None and found.number == 3
    # a current document edited directly
    key = DocKey("Group", "acme", "c")
    found = verify(entries, 4, revisions, {**docs, key: doc("c", "acme", v=99)}).first
    assert found is not None and found.number == 3
    # a document inserted directly, one removed directly
    extra = {**docs, DocKey("Group", "acme", "z"): doc("z", "acme")}
    assert not verify(entries, 4, revisions, extra).ok
    fewer = {k: v for k, v in docs.items() if k.name != "a"}
    found = verify(entries, 4, revisions, fewer).first
    assert found is not None and found.number == 4


step = st.lists(
    st.tuples(st.sampled_from("abcd"), st.one_of(st.none(), st.integers(0, 3))),
    min_size=1,
    max_size=3,
    unique_by=lambda t: t[0],
)


@settings(max_examples=60, deadline=None)
@given(st.lists(step, min_size=1, max_size=8), st.data())
def test_any_single_edit_is_blamed_on_the_edited_record(
    steps: list[list[tuple[str, int | None]]], data: st.DataObject
) -> None:
    entries, revisions, docs = build(steps)
    # steps that changed nothing made empty revisions; a store would not have made them,
    # but the ledger does not care
    assert verify(entries, len(entries), revisions, docs).ok
    victim = data.draw(st.integers(0, len(entries) - 1))
    field = data.draw(st.sampled_from(["message", "time", "author", "changes"]))
    value: Any = {"message": "x", "time": 1.5, "author": "someone", "changes": []}[field]
    if json.loads(entries[victim].body)[field] == value:
        return
    tampered = list(entries)
    tampered[victim] = _edit(entries[victim], data.draw(st.booleans()), **{field: value})
    found = verify(tampered, len(entries), revisions, docs).first
    assert found is not None and found.number == victim + 1
