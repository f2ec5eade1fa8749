"""A validated document set kept with its parsed documents and indexes, so that a change set
is validated in time proportional to the change (`CatalogState.change`).

Contract: for a state built from documents D (in that order), `change(puts, deletes, ...)`
answers exactly what `catalog.build_catalog` answers for the resulting set R: it returns a
new state whose `catalog` equals `build_catalog(R)`, or raises `DocumentsInvalid` with the
same issues. R is what `store.changes.apply_changes` makes of D: the documents of D whose
key is not deleted, in D's order, a put whose key is in D taking that document's place,
the other puts appended in the order given. Sources: the given ones for puts,
`sources_of_rest(key)` for every other document (only asked for when an issue may name it).

Invariants of a state (checked by the property tests against `build_catalog`):
- `catalog == build_catalog(documents)` and the documents are valid (a state exists only for
  a valid set), keyed uniquely by (kind, tenant, name);
- `_entries` keeps, per key in document order, the raw document as given (not copied: the
  caller must not mutate it afterwards) and its parsed model;
- `_macs` / `_ips` map every MAC and IP of every workload (as normalised by the models) to
  the key of the one workload that claims it;
- `_referenced` holds the key of every workload that a Group member, an `appliedTo` or a
  rule peer names.
A state is never mutated: `change` copies what it alters (dicts of the 10k-entry fleet cost
tens of microseconds each) and shares the rest, e.g. the whole `PolicyConfig`.

Why the fast path is exact. The checks of `build_catalog` that can involve a Workload are:
its own shape (`parse_document`), a duplicate key, its tenant existing, its MAC and IP
addresses claimed by no other workload and not twice by itself, and references to it by
name (Group members, policy peers and `appliedTo`) resolving. Nothing else reads workloads
(selectors are evaluated later, by the compiler). So when a change only puts and deletes
Workloads, these are the only checks re-run: the others passed on D and read nothing that
changed. The Workload objects of the catalog depend only on their own document, so the new
catalog is the old one with those entries replaced. Whenever the fast path finds any problem,
or the change touches another kind, the whole resulting set is built again with
`build_parsed`, from the kept models of the untouched documents (no re-parse): that is
`build_catalog` itself, so refusals carry exactly its issues, in its order.

A put equal to the document it replaces (same types and values, not just `==`: `True == 1`)
changes nothing and is dropped first, so re-applying a whole fleet file with one edited
Workload still takes the fast path.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hyperwall.policy import documents as d
from hyperwall.policy.catalog import Parsed, build_parsed, workload_of
from hyperwall.policy.errors import Source
from hyperwall.policy.model import Catalog, PolicyConfig, Workload, object_key

Key = tuple[str, str | None, str]
"""(kind, tenant, name), as `store.base.DocKey`; tenant None is provider scope."""


@dataclass(frozen=True, slots=True)
class _Entry:
    raw: Mapping[str, Any]
    doc: d.Document


def key_of(raw: Any) -> Key | None:
    """The (kind, tenant, name) of a raw document, or None if it has none (then it is
    invalid anyway: `parse_document` refuses it)."""
    if not isinstance(raw, Mapping):
        return None
    kind, meta = raw.get("kind"), raw.get("metadata")
    if not isinstance(kind, str) or not isinstance(meta, Mapping):
        return None
    name, tenant = meta.get("name"), meta.get("tenant")
    if not isinstance(name, str) or not (tenant is None or isinstance(tenant, str)):
        return None
    return (kind, tenant, name)


def same(a: Any, b: Any) -> bool:
    """Equal values of equal types throughout (JSON-like data): `True` is not `1` here."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(v, b[k]) for k, v in a.items())
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(map(same, a, b))
    return bool(a == b)


def _addresses(workloads: Iterable[Workload]) -> tuple[dict[str, str], dict[str, str]]:
    macs: dict[str, str] = {}
    ips: dict[str, str] = {}
    for w in workloads:
        key = w.key
        for iface in w.interfaces:
            macs[iface.mac] = key
            for ip in iface.ips:
                ips[ip] = key
    return macs, ips


def _referenced(config: PolicyConfig) -> frozenset[str]:
    """Keys of the workloads that groups and policies name."""
    out: set[str] = set()
    for group in config.groups.values():
        out.update(group.members)
    for policy in config.policies.values():
        peers = [policy.applied_to]
        for rule in policy.rules:
            peers += [*rule.sources, *rule.destinations]
        out.update(p.value for p in peers if p is not None and p.kind == "workload")
    return frozenset(out)


def _free(value: str, index: Mapping[str, str], claims: Mapping[str, str], gone: set[str]) -> bool:
    """Whether a change may claim `value`: nobody claims it in the change yet, and its owner
    in the set, if any, is leaving (deleted or replaced)."""
    if value in claims:
        return False
    owner = index.get(value)
    return owner is None or owner in gone


def _reclaimed(
    index: dict[str, str], released: list[str], claims: dict[str, str]
) -> dict[str, str]:
    """`index` without the `released` values (but with `claims`); `index` itself (shared,
    not copied) when that changes nothing, e.g. a label edit."""
    stale = [v for v in released if v not in claims]
    fresh = [(v, k) for v, k in claims.items() if index.get(v) != k]
    if not stale and not fresh:
        return index
    out = index.copy()
    for value in stale:
        del out[value]
    out.update(fresh)
    return out


class CatalogState:
    """A valid document set, its `Catalog`, and what validating a change needs (see the
    module docstring for the contract and invariants)."""

    __slots__ = ("_entries", "_ips", "_macs", "_referenced", "absent_workloads", "catalog")

    catalog: Catalog
    absent_workloads: bool  # as `build_catalog`'s: references to absent Workloads match nothing

    def __init__(
        self,
        catalog: Catalog,
        entries: dict[Key, _Entry],
        macs: dict[str, str],
        ips: dict[str, str],
        referenced: frozenset[str],
        absent_workloads: bool = False,
    ) -> None:
        self.catalog = catalog
        self.absent_workloads = absent_workloads
        self._entries = entries
        self._macs = macs
        self._ips = ips
        self._referenced = referenced

    def __len__(self) -> int:
        return len(self._entries)

    @classmethod
    def build(
        cls, documents: Iterable[tuple[Any, Source]], absent_workloads: bool = False
    ) -> CatalogState:
        """`build_catalog(documents, absent_workloads)`, kept as a state (its changes are
        validated the same way); raises `DocumentsInvalid`."""
        parsed: list[Parsed] = []
        raws: list[Any] = []
        for raw, source in documents:
            doc, issues = d.parse_document(raw, source)
            parsed.append((doc, issues, source))
            raws.append(raw)
        catalog = build_parsed(parsed, absent_workloads)
        # Valid: every document parsed and has a unique key.
        entries: dict[Key, _Entry] = {}
        for raw, (doc, _, _) in zip(raws, parsed, strict=True):
            key = key_of(raw)
            assert key is not None and doc is not None and key not in entries
            entries[key] = _Entry(raw, doc)
        return cls._indexed(catalog, entries, absent_workloads)

    @classmethod
    def _indexed(
        cls, catalog: Catalog, entries: dict[Key, _Entry], absent_workloads: bool
    ) -> CatalogState:
        macs, ips = _addresses(catalog.workloads.values())
        return cls(catalog, entries, macs, ips, _referenced(catalog.config), absent_workloads)

    def absent_references(self) -> frozenset[str]:
        """Keys of the workloads that groups and policies name but that are not in the set
        (always empty unless `absent_workloads`)."""
        return self._referenced - self.catalog.workloads.keys()

    def documents(self) -> list[Mapping[str, Any]]:
        """The raw documents of the set, in order."""
        return [e.raw for e in self._entries.values()]

    def change(
        self,
        puts: Sequence[tuple[Any, Source]],
        deletes: Sequence[Key],
        sources_of_rest: Callable[[Key], Source],
    ) -> CatalogState:
        """The state of the set with `puts` upserted and `deletes` removed (a key not in the
        set is ignored), or `DocumentsInvalid` with every issue of that set. `self` is left
        unchanged. ValueError if a key is named twice (put twice, or put and deleted)."""
        keyed: list[tuple[Key | None, Any, Source]] = []
        named: set[Key] = set()
        for raw, source in puts:
            key = key_of(raw)
            if key is not None:
                if key in named:
                    raise ValueError(f"{key} is put twice in one change")
                named.add(key)
            keyed.append((key, raw, source))
        gone = set()
        for key in deletes:
            if key in named or key in gone:
                raise ValueError(f"{key} is named twice in one change")
            gone.add(key)
        # Puts identical to the document they replace change nothing.
        real = [
            (key, raw, source)
            for key, raw, source in keyed
            if key is None or key not in self._entries or not same(raw, self._entries[key].raw)
        ]
        removed = [key for key in deletes if key in self._entries]
        fast = self._workloads_only(real, removed)
        if fast is not None:
            return fast
        return self._rebuild(keyed, set(removed), sources_of_rest)

    # -- the fast path: Workloads only -----------------------------------------------------

    def _workloads_only(
        self, puts: list[tuple[Key | None, Any, Source]], deletes: list[Key]
    ) -> CatalogState | None:
        """The new state if the change only touches Workloads and passes every check that
        can involve one; None to take the full path (another kind, or any problem)."""
        if any(key is None or key[0] != "Workload" for key, _, _ in puts):
            return None
        if any(key[0] != "Workload" for key in deletes):
            return None
        referenced = self._referenced
        # With absent_workloads a reference resolves whether or not its workload is there
        # (the PolicyConfig does not depend on which workloads exist): deleting one is fine.
        if not self.absent_workloads and any(
            object_key(key[1], key[2]) in referenced for key in deletes
        ):
            return None
        tenants = self.catalog.config.tenants
        parsed: list[tuple[Key, Any, d.WorkloadDoc]] = []
        for key, raw, source in puts:
            assert key is not None
            doc, issues = d.parse_document(raw, source)
            if issues or not isinstance(doc, d.WorkloadDoc):
                return None
            if doc.metadata.tenant is not None and doc.metadata.tenant not in tenants:
                return None
            parsed.append((key, raw, doc))
        old = self.catalog.workloads
        gone = {object_key(k[1], k[2]) for k in deletes}
        gone.update(object_key(k[1], k[2]) for k, _, _ in parsed if k in self._entries)
        # Every address the new versions claim: taken by a workload that stays, or claimed
        # twice within the change (twice in one workload included), is an issue.
        new: list[tuple[Key, Any, d.WorkloadDoc, Workload]] = []
        mac_claims: dict[str, str] = {}
        ip_claims: dict[str, str] = {}
        for key, raw, doc in parsed:
            workload = workload_of(doc)
            wkey = workload.key
            for iface in workload.interfaces:
                if not _free(iface.mac, self._macs, mac_claims, gone):
                    return None
                mac_claims[iface.mac] = wkey
                for ip in iface.ips:
                    if not _free(ip, self._ips, ip_claims, gone):
                        return None
                    ip_claims[ip] = wkey
            new.append((key, raw, doc, workload))
        leaving = [old[k] for k in gone]
        macs = _reclaimed(self._macs, [i.mac for w in leaving for i in w.interfaces], mac_claims)
        ips = _reclaimed(self._ips, [ip for w in leaving for ip in w.ips()], ip_claims)
        # .copy() clones the table when few entries were deleted; dict(x) re-inserts all.
        entries = self._entries.copy()
        workloads = dict(old) if not isinstance(old, dict) else old.copy()
        for key in deletes:
            del entries[key]
            del workloads[object_key(key[1], key[2])]
        for key, raw, doc, workload in new:
            entries[key] = _Entry(raw, doc)
            workloads[workload.key] = workload
        catalog = Catalog(self.catalog.config, workloads)
        return CatalogState(catalog, entries, macs, ips, referenced, self.absent_workloads)

    # -- the full path -----------------------------------------------------------------------

    def _rebuild(
        self,
        puts: list[tuple[Key | None, Any, Source]],
        deletes: set[Key],
        sources_of_rest: Callable[[Key], Source],
    ) -> CatalogState:
        """`build_catalog` of the whole resulting set, re-parsing only what changed."""
        by_key = {key: (raw, source) for key, raw, source in puts if key is not None}
        order: list[tuple[Key | None, Any, Parsed]] = []
        for key, entry in self._entries.items():
            if key in deletes:
                continue
            put = by_key.pop(key, None)
            if put is None:
                order.append((key, entry.raw, (entry.doc, (), sources_of_rest(key))))
            elif same(put[0], entry.raw):
                order.append((key, put[0], (entry.doc, (), put[1])))
            else:
                order.append((key, put[0], (*d.parse_document(put[0], put[1]), put[1])))
        for new, raw, source in puts:
            if new is None or new in by_key:
                order.append((new, raw, (*d.parse_document(raw, source), source)))
        catalog = build_parsed((parsed for _, _, parsed in order), self.absent_workloads)
        entries: dict[Key, _Entry] = {}
        for kept, raw, (doc, _, _) in order:
            assert kept is not None and doc is not None  # the set is valid
            entries[kept] = _Entry(raw, doc)
        return self._indexed(catalog, entries, self.absent_workloads)
