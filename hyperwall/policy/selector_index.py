"""Fleet-wide selector evaluation: which workloads each selector picks, kept current.

`selector.Selector` matches one workload's labels; this module is its counterpart for a
whole fleet. `LabelIndex` is an inverted index of workloads' labels that evaluates a
selector by set algebra instead of visiting every workload. `SelectorIndex` holds a set of
selectors and their match sets, and after a label change re-evaluates only the selectors
that mention a changed key.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping, Set
from dataclasses import dataclass
from types import MappingProxyType
from typing import TypeAlias, TypeVar

from hyperwall.policy.selector import All, And, Eq, Has, In, Ne, Node, Not, NotIn, Or, Selector

_NONE: frozenset[str] = frozenset()
_K = TypeVar("_K", bound=Hashable)
_Ids: TypeAlias = set[str]  # `LabelIndex.set` hides the builtin inside that class


class LabelIndex:
    """Inverted index of workloads' labels: (key, value) -> ids; key -> ids; all ids."""

    def __init__(self) -> None:
        self._labels: dict[str, dict[str, str]] = {}
        self._by_pair: dict[tuple[str, str], set[str]] = {}
        self._by_key: dict[str, set[str]] = {}
        self._ids: set[str] = set()

    def __contains__(self, wid: object) -> bool:
        return wid in self._labels

    def __len__(self) -> int:
        return len(self._labels)

    def set(self, wid: str, labels: Mapping[str, str]) -> None:
        """Add a workload, or replace its labels."""
        self.remove(wid)
        self._labels[wid] = dict(labels)
        self._ids.add(wid)
        for key, value in labels.items():
            self._by_pair.setdefault((key, value), set()).add(wid)
            self._by_key.setdefault(key, set()).add(wid)

    def remove(self, wid: str) -> None:
        """Forget a workload; unknown ids are ignored."""
        old = self._labels.pop(wid, None)
        if old is None:
            return
        self._ids.discard(wid)
        for key, value in old.items():
            _discard(self._by_pair, (key, value), wid)
            _discard(self._by_key, key, wid)

    def labels(self, wid: str) -> Mapping[str, str]:
        """A read-only view of a workload's labels; KeyError if unknown."""
        return MappingProxyType(self._labels[wid])

    def ids(self) -> Set[str]:
        """Every workload id: a live read-only view (copy it to keep it across changes)."""
        return self._labels.keys()

    def select(self, selector: Selector, within: Set[str] | None = None) -> _Ids:
        """The ids `selector` picks, among `within` if given (ids not indexed are ignored)."""
        universe = self._ids if within is None else self._ids.intersection(within)
        found, complement = self._eval(selector.root)
        return universe - found if complement else universe.intersection(found)

    # Evaluation yields (ids, complement): the ids picked are `ids`, or if `complement` is
    # true every id but those. Negations thus cost nothing until the final subtraction.
    # The ids are read-only and often the index's own sets: never mutate them.

    def _eval(self, node: Node) -> tuple[Set[str], bool]:
        match node:
            case All():
                return _NONE, True
            case Eq(key, value) | Ne(key, value):
                return self._by_pair.get((key, value), _NONE), isinstance(node, Ne)
            case In(key, values) | NotIn(key, values):
                return self._any_of(key, values), isinstance(node, NotIn)
            case Has(key):
                return self._by_key.get(key, _NONE), False
            case Not(operand):
                found, complement = self._eval(operand)
                return found, not complement
            case And(operands):
                return self._and([self._eval(op) for op in operands])
            case Or(operands):
                # a || b == !(!a && !b)
                found, complement = self._and([(f, not c) for f, c in map(self._eval, operands)])
                return found, not complement

    @staticmethod
    def _and(operands: list[tuple[Set[str], bool]]) -> tuple[Set[str], bool]:
        """Intersect the plain operands smallest first, then subtract the complemented ones."""
        plain = sorted((found for found, complement in operands if not complement), key=len)
        excluded = [found for found, complement in operands if complement]
        if not plain:
            return set[str]().union(*excluded), True
        result = plain[0]
        for other in plain[1:]:
            if not result:
                break
            result = result & other
        for other in excluded:
            result = result - other
        return result, False

    def _any_of(self, key: str, values: Iterable[str]) -> Set[str]:
        return set[str]().union(*(self._by_pair.get((key, value), _NONE) for value in values))


@dataclass(slots=True)
class _Entry:
    selector: Selector
    within: frozenset[str] | None
    matches: set[str]

    def picks(self, wid: str, labels: Mapping[str, str]) -> bool:
        return (self.within is None or wid in self.within) and self.selector.matches(labels)


class SelectorIndex:
    """Which workloads each selector picks, and which selectors pick each workload.

    Match sets are kept current under label changes. A selector may be given a fixed
    scope `within`: a set of workload ids outside which it picks nothing. The ids need not
    exist yet, so a workload added later is picked if its id is in scope. To change a
    scope, add the selector again under the same id.

    Costs: adding a selector is one `LabelIndex.select`; a label change re-evaluates only
    the selectors that mention a changed key; a new or removed workload and `selectors_for`
    visit every selector once (no reverse map is kept, so a broad selector costs nothing
    per workload it picks).
    """

    def __init__(self) -> None:
        self._labels = LabelIndex()
        self._entries: dict[str, _Entry] = {}
        self._by_key: dict[str, set[str]] = {}  # label key -> ids of selectors mentioning it

    @property
    def labels(self) -> LabelIndex:
        """The workloads' labels (read it; change them through this index only)."""
        return self._labels

    def add_selector(self, sid: str, selector: Selector, within: Set[str] | None = None) -> None:
        """Add a selector, or replace the one with the same id."""
        self.remove_selector(sid)
        scope = None if within is None else frozenset(within)
        self._entries[sid] = _Entry(selector, scope, self._labels.select(selector, scope))
        for key in selector.keys:
            self._by_key.setdefault(key, set()).add(sid)

    def remove_selector(self, sid: str) -> None:
        """Forget a selector; unknown ids are ignored."""
        entry = self._entries.pop(sid, None)
        if entry is not None:
            for key in entry.selector.keys:
                _discard(self._by_key, key, sid)

    def set_workload(self, wid: str, labels: Mapping[str, str]) -> set[str]:
        """Add a workload or replace its labels; returns the selectors whose matches changed."""
        labels = dict(labels)
        candidates: Iterable[str]
        if wid in self._labels:
            old = self._labels.labels(wid)
            changed = {k for k in old.keys() | labels.keys() if old.get(k) != labels.get(k)}
            candidates = set[str]().union(*(self._by_key.get(key, _NONE) for key in changed))
        else:
            candidates = self._entries
        self._labels.set(wid, labels)
        result = set()
        for sid in candidates:
            entry = self._entries[sid]
            if entry.picks(wid, labels):
                if wid not in entry.matches:
                    entry.matches.add(wid)
                    result.add(sid)
            elif wid in entry.matches:
                entry.matches.discard(wid)
                result.add(sid)
        return result

    def remove_workload(self, wid: str) -> set[str]:
        """Forget a workload; returns the selectors that picked it (unknown ids: none)."""
        result: set[str] = set()
        if wid not in self._labels:
            return result
        self._labels.remove(wid)
        for sid, entry in self._entries.items():
            if wid in entry.matches:
                entry.matches.discard(wid)
                result.add(sid)
        return result

    def matches(self, sid: str) -> frozenset[str]:
        """The workloads a selector picks; KeyError if the selector is unknown."""
        return frozenset(self._entries[sid].matches)

    def matches_view(self, sid: str) -> Set[str]:
        """Like `matches`, without a copy: read-only, valid until the next change."""
        return self._entries[sid].matches

    def selectors_for(self, wid: str) -> set[str]:
        """The selectors that pick a workload (none if the workload is unknown)."""
        return {sid for sid, entry in self._entries.items() if wid in entry.matches}

    def selectors_by_workload(self) -> dict[str, set[str]]:
        """`selectors_for` of every workload at once, in one pass over all match sets."""
        result: dict[str, set[str]] = {wid: set() for wid in self._labels.ids()}
        for sid, entry in self._entries.items():
            for wid in entry.matches:
                result[wid].add(sid)
        return result


def _discard(index: dict[_K, set[str]], key: _K, item: str) -> None:
    """Remove `item` from `index[key]`, dropping the entry once it is empty."""
    members = index.get(key)
    if members is not None:
        members.discard(item)
        if not members:
            del index[key]
