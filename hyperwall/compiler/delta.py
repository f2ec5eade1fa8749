"""The change between two host programs, as the kernel must apply it, and its application.

`diff(old, new)` is pure and proportional to what changed: unchanged objects are skipped by
identity first (the incremental compiler hands back the same objects), then by equality.
Sets change element by element; chains and endpoints (dispatch entries) are replaced whole.
`apply(old, delta)` yields exactly `new`; the nftables backend turns a delta into one
transaction, creating sets before the chains that use them and deleting them after.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any, TypeVar

from hyperwall.compiler.intervals import Interval, merge
from hyperwall.compiler.program import (
    AddressSet,
    BlockSet,
    Chain,
    Endpoint,
    HostProgram,
)

AddressElement = tuple[int, Interval]
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class ElementChange:
    """Elements to add to and remove from an existing set."""

    name: str
    added: frozenset[Any]  # AddressElement or BlockElement
    removed: frozenset[Any]


@dataclass(frozen=True)
class ProgramDelta:
    address_sets_put: tuple[AddressSet, ...] = ()
    address_sets_delete: tuple[str, ...] = ()
    address_elements: tuple[ElementChange, ...] = ()
    block_sets_put: tuple[BlockSet, ...] = ()
    block_sets_delete: tuple[str, ...] = ()
    block_elements: tuple[ElementChange, ...] = ()
    chains_put: tuple[Chain, ...] = ()
    chains_delete: tuple[str, ...] = ()
    endpoints_put: tuple[Endpoint, ...] = ()
    endpoints_delete: tuple[str, ...] = ()
    host: str = field(default="")

    def is_empty(self) -> bool:
        return self.size() == 0

    def size(self) -> int:
        """Number of changed things: set elements, whole sets, chains, endpoints."""
        elements = sum(
            len(c.added) + len(c.removed) for c in (*self.address_elements, *self.block_elements)
        )
        whole = sum(len(s.v4) + len(s.v6) for s in self.address_sets_put) + sum(
            len(b.elements) for b in self.block_sets_put
        )
        return (
            elements
            + whole
            + len(self.address_sets_delete)
            + len(self.block_sets_delete)
            + len(self.chains_put)
            + len(self.chains_delete)
            + len(self.endpoints_put)
            + len(self.endpoints_delete)
        )

    def summary(self) -> dict[str, int]:
        return {
            "address_sets_put": len(self.address_sets_put),
            "address_sets_delete": len(self.address_sets_delete),
            "address_elements": sum(len(c.added) + len(c.removed) for c in self.address_elements),
            "block_sets_put": len(self.block_sets_put),
            "block_sets_delete": len(self.block_sets_delete),
            "block_elements": sum(len(c.added) + len(c.removed) for c in self.block_elements),
            "chains_put": len(self.chains_put),
            "chains_delete": len(self.chains_delete),
            "endpoints_put": len(self.endpoints_put),
            "endpoints_delete": len(self.endpoints_delete),
            "size": self.size(),
        }


def _changed(old: Mapping[str, T], new: Mapping[str, T]) -> tuple[list[T], list[str]]:
    """Objects of `new` that are new or differ from `old`, and names gone from `new`."""
    put = [obj for name, obj in new.items() if (prev := old.get(name)) is not obj and prev != obj]
    delete = sorted(name for name in old if name not in new)
    return put, delete


def diff(old: HostProgram, new: HostProgram) -> ProgramDelta:
    a_put, a_delete = _changed(old.address_sets, new.address_sets)
    a_new = [s for s in a_put if s.name not in old.address_sets]
    a_elems = [
        ElementChange(s.name, s.elements() - prev.elements(), prev.elements() - s.elements())
        for s in a_put
        if (prev := old.address_sets.get(s.name)) is not None
    ]
    b_put, b_delete = _changed(old.block_sets, new.block_sets)
    b_new = [b for b in b_put if b.name not in old.block_sets]
    b_elems = [
        ElementChange(b.name, b.elements - pb.elements, pb.elements - b.elements)
        for b in b_put
        if (pb := old.block_sets.get(b.name)) is not None
    ]
    c_put, c_delete = _changed(old.chains, new.chains)
    e_put, e_delete = _changed(old.endpoints, new.endpoints)
    return ProgramDelta(
        address_sets_put=tuple(a_new),
        address_sets_delete=tuple(a_delete),
        address_elements=tuple(a_elems),
        block_sets_put=tuple(b_new),
        block_sets_delete=tuple(b_delete),
        block_elements=tuple(b_elems),
        chains_put=tuple(c_put),
        chains_delete=tuple(c_delete),
        endpoints_put=tuple(e_put),
        endpoints_delete=tuple(e_delete),
        host=new.host,
    )


def _apply_address(s: AddressSet, change: ElementChange) -> AddressSet:
    elements = (s.elements() - change.removed) | change.added
    v4 = merge(i for f, i in elements if f == 4)
    v6 = merge(i for f, i in elements if f == 6)
    return AddressSet(s.name, v4, v6)


def apply(old: HostProgram, delta: ProgramDelta) -> HostProgram:
    """The program that results from applying `delta` to `old`."""
    sets = dict(old.address_sets)
    for name in delta.address_sets_delete:
        del sets[name]
    for change in delta.address_elements:
        sets[change.name] = _apply_address(sets[change.name], change)
    sets.update((s.name, s) for s in delta.address_sets_put)
    blocks = dict(old.block_sets)
    for name in delta.block_sets_delete:
        del blocks[name]
    for change in delta.block_elements:
        prev = blocks[change.name]
        elements = (prev.elements - change.removed) | change.added
        blocks[change.name] = BlockSet(change.name, elements)
    blocks.update((b.name, b) for b in delta.block_sets_put)
    chains = {k: v for k, v in old.chains.items() if k not in delta.chains_delete}
    chains.update((c.name, c) for c in delta.chains_put)
    endpoints = {k: v for k, v in old.endpoints.items() if k not in delta.endpoints_delete}
    endpoints.update((e.key, e) for e in delta.endpoints_put)
    return HostProgram(
        delta.host or old.host, _sorted(sets), _sorted(blocks), _sorted(chains), _sorted(endpoints)
    )


def _sorted(items: dict[str, T]) -> dict[str, T]:
    """Sorted by name; skipped when already sorted (replacing objects keeps the order)."""
    keys = list(items)
    if all(a < b for a, b in pairwise(keys)):
        return items
    return dict(sorted(items.items()))
