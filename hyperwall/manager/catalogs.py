"""The stored documents and their validated state, carried from revision to revision.

`View` is one consistent triple: a revision, its documents, and their `CatalogState` (the
validated set, whose `change` validates a change set in time proportional to the change).
`CatalogTracker.load` validates a whole set; `advance` applies one revision's changes. Each
replaces `view` in one assignment, so a reader (the apply path, on the event loop) always
sees a consistent triple; on `DocumentsInvalid` the view stays as it was.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from hyperwall.manager.documents import source_of
from hyperwall.policy.catalog_state import CatalogState, Key
from hyperwall.policy.errors import Source
from hyperwall.policy.model import Catalog
from hyperwall.store import DocChange, DocKey, Document


def state_key(key: DocKey) -> Key:
    return (key.kind, key.tenant, key.name)


def stored_source(key: Key) -> Source:
    return source_of(DocKey(*key))


def build_state(documents: Mapping[DocKey, Document]) -> CatalogState:
    """The validated state of a stored set. References to absent Workloads match nothing
    (`absent_workloads`): discovered workloads come and go, and a group that names one
    that went away must not make the stored set invalid (docs/design/manager.md)."""
    pairs = ((doc, source_of(k)) for k, doc in documents.items())
    return CatalogState.build(pairs, absent_workloads=True)


@dataclass(frozen=True, slots=True)
class View:
    revision: int
    documents: Mapping[DocKey, Document]
    state: CatalogState

    @property
    def catalog(self) -> Catalog:
        return self.state.catalog


class CatalogTracker:
    def __init__(self) -> None:
        self.view: View | None = None
        # the documents of a newer revision that did not validate: the next revision
        # starts from them (with a whole validation), `view` stays at the last valid one
        self._broken: dict[DocKey, Document] | None = None

    def load(self, revision: int, documents: Mapping[DocKey, Document]) -> Catalog:
        docs = dict(documents)
        try:
            state = build_state(docs)
        except Exception:
            self._broken = docs
            raise
        self.view, self._broken = View(revision, docs, state), None
        return state.catalog

    def advance(self, revision: int, changes: Iterable[DocChange]) -> Catalog:
        view = self.view
        base = self._broken if self._broken is not None or view is None else view.documents
        if base is None:
            raise RuntimeError("advance before load")
        docs = dict(base)
        puts: list[tuple[Document, Source]] = []
        deletes: list[Key] = []
        for change in changes:
            if change.after is None:
                docs.pop(change.key, None)
                deletes.append(state_key(change.key))
            else:
                docs[change.key] = change.after
                puts.append((change.after, source_of(change.key)))
        if self._broken is not None or view is None:
            return self.load(revision, docs)
        try:
            state = view.state.change(puts, deletes, stored_source)
        except Exception:
            self._broken = docs
            raise
        self.view = View(revision, docs, state)
        return state.catalog
