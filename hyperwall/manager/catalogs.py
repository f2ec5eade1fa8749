"""The stored documents and their validated `Catalog`, carried from revision to revision.

`load` validates a whole set; `advance` applies one revision's changes and validates the
result. Either raises `DocumentsInvalid` and then keeps its previous state, so a refused
revision changes nothing here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from hyperwall.manager.documents import source_of
from hyperwall.policy.catalog import build_catalog
from hyperwall.policy.model import Catalog
from hyperwall.store import DocChange, DocKey, Document


class CatalogTracker:
    def __init__(self) -> None:
        self.documents: dict[DocKey, Document] = {}
        self.catalog: Catalog | None = None

    def load(self, documents: Mapping[DocKey, Document]) -> Catalog:
        docs = dict(documents)
        catalog = build_catalog((doc, source_of(k)) for k, doc in docs.items())
        self.documents, self.catalog = docs, catalog
        return catalog

    def advance(self, changes: Iterable[DocChange]) -> Catalog:
        docs = dict(self.documents)
        for change in changes:
            if change.after is None:
                docs.pop(change.key, None)
            else:
                docs[change.key] = change.after
        return self.load(docs)
