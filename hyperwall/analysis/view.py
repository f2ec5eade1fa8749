"""A fleet as the analyses read it: a `FleetCompiler` plus indexes of who owns which address.

`FleetView` answers the questions every analysis asks (`analysis.assertions`, `reach`,
`lint`): which addresses a list of peers stands for (the same addresses a rule with those
peers matches), which addresses are workloads' and through which endpoint, and what an
endpoint's rules are as boxes (`analysis.decisions`).

What a view derives is kept with the compiler it reads (a weak per-compiler cache), so the
manager's gate, which checks a few assertions on every change with the one compiler it
keeps current, pays in proportion to the change: the address index is patched with the
workloads that differ from the last catalog seen (compared by identity, then equality), and
an endpoint's boxes (and each chain's, `decisions.chain_boxes`) are reused while its
`Endpoint` object and the compiled chains it runs are the very objects they were computed
from (the compiler replaces a chain whenever a set
it reads changes, and an endpoint whenever its workload or policies do). Pure: no I/O.
"""

from __future__ import annotations

import ipaddress
from bisect import bisect_left, bisect_right, insort
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from operator import is_
from typing import Any, Literal
from weakref import WeakKeyDictionary

from hyperwall.analysis.decisions import (
    FULL,
    Decider,
    RuleBox,
    as_boxes,
    chain_boxes,
    own_boxes,
    own_cuts,
)
from hyperwall.analysis.scope import changed_keys
from hyperwall.compiler.chains import CompiledChain
from hyperwall.compiler.fleet import FleetCompiler
from hyperwall.compiler.intervals import Interval, address_interval, split_families
from hyperwall.compiler.inventory import Families
from hyperwall.compiler.program import Endpoint
from hyperwall.policy.model import Catalog, Peer, Workload

FAMILIES = (4, 6)
# one chain's boxes selected for an own address, and their content key (`_selection`)
Selection = tuple[tuple[RuleBox, ...], tuple[tuple[Any, ...], ...]]
SHARED_LIMIT = 100_000  # shared deciders kept per compiler before starting afresh


@dataclass(frozen=True, slots=True)
class Owner:
    """The workload endpoint an address belongs to."""

    endpoint: Endpoint
    workload: str


def address_text(family: int, value: int) -> str:
    return str(ipaddress.IPv4Address(value) if family == 4 else ipaddress.IPv6Address(value))


def _addresses(w: Workload) -> Iterable[tuple[int, int, str]]:
    for iface in w.interfaces:
        for ip in iface.ips:
            family, (value, _) = address_interval(ip)
            yield family, value, iface.name


class _Index:
    """Every workload address: its owner (workload key, interface), sorted per family."""

    def __init__(self, workloads: Mapping[str, Workload]) -> None:
        self.workloads = workloads
        self.owners: dict[int, dict[int, tuple[str, str]]] = {4: {}, 6: {}}
        for w in workloads.values():
            for family, value, iface in _addresses(w):
                self.owners[family][value] = (w.key, iface)
        self.sorted: dict[int, list[int]] = {f: sorted(self.owners[f]) for f in FAMILIES}

    def move_to(self, workloads: Mapping[str, Workload]) -> None:
        old = self.workloads
        keys = changed_keys(old, workloads)
        for key in keys:
            w = old.get(key)
            if w is not None:
                for family, value, _ in _addresses(w):
                    if self.owners[family].get(value, ("", ""))[0] == key:
                        del self.owners[family][value]
                        found = self.sorted[family]
                        found.pop(bisect_left(found, value))
        for key in keys:
            w = workloads.get(key)
            if w is not None:
                for family, value, iface in _addresses(w):
                    if value not in self.owners[family]:
                        insort(self.sorted[family], value)
                    self.owners[family][value] = (key, iface)
        self.workloads = workloads


@dataclass
class _Kept:
    """What views over one compiler keep: the address index, and each endpoint's
    `Decider` with the endpoint and chains it was computed from."""

    index: _Index
    # per (endpoint, direction, own address): the endpoint and chain box lists its decider
    # was computed from, the decider, and each chain's boxes selected for the own address
    deciders: dict[
        tuple[str, str, int],
        tuple[Endpoint, tuple[list[RuleBox], ...], Decider, tuple[Selection, ...]],
    ]
    chains: dict[tuple[str, str, int], tuple[CompiledChain, list[RuleBox]]]
    # deciders shared by endpoints that run the same boxes (keyed by tier, action, rule,
    # the identity of the interned other-end addresses and the ports; the value holds the
    # boxes, so no identity is reused while the entry lives)
    shared: dict[tuple[Any, ...], Decider]
    # other-end address tuples by content, so that equal ones are one object (`_intern`)
    others: dict[tuple[Interval, ...], tuple[Interval, ...]]


_KEPT: WeakKeyDictionary[FleetCompiler, _Kept] = WeakKeyDictionary()


class FleetView:
    """See the module docstring. `compiler`, when given, must be over `catalog` already."""

    def __init__(self, catalog: Catalog, compiler: FleetCompiler | None = None) -> None:
        self.catalog = catalog
        self.compiler = compiler or FleetCompiler(catalog.config, catalog.workloads.values())
        kept = _KEPT.get(self.compiler)
        if kept is None:
            kept = _KEPT[self.compiler] = _Kept(_Index(catalog.workloads), {}, {}, {}, {})
        elif kept.index.workloads is not catalog.workloads:
            kept.index.move_to(catalog.workloads)
        self._kept = kept
        self.workload_ips: dict[int, list[int]] = kept.index.sorted
        # A view reads one state of the compiler (its address index is patched here, once):
        # what it validated against the kept caches stays valid for its lifetime, so each
        # endpoint and chain is checked once per view, not once per question asked.
        self._deciders: dict[tuple[str, str, int], Decider] = {}
        self._lists: dict[tuple[str, str, int], list[RuleBox]] = {}
        self._dispatched: dict[tuple[Any, ...], tuple[list[RuleBox], ...]] = {}
        self._selected: dict[int, tuple[tuple[int, ...], dict[int, Selection]]] = {}

    def owner(self, family: int, value: int) -> Owner | None:
        found = self._kept.index.owners[family].get(value)
        if found is None:
            return None
        wk, iface = found
        endpoint = next(ep for ep in self.compiler.endpoints(wk) if ep.interface == iface)
        return Owner(endpoint, wk)

    def decider(
        self, owner: Owner, direction: Literal["in", "out"], family: int, own: int
    ) -> Decider:
        """The endpoint's rules for own address `own` in `direction`, ready to decide."""
        key = (owner.endpoint.key, direction, own)
        found_here = self._deciders.get(key)
        if found_here is None:
            found_here = self._deciders[key] = self._kept_decider(owner, direction, family, own)
        return found_here

    def _kept_decider(
        self, owner: Owner, direction: Literal["in", "out"], family: int, own: int
    ) -> Decider:
        kept = self._kept
        key = (owner.endpoint.key, direction, own)
        lists = self._dispatch_lists(owner.endpoint.dispatch(direction), direction, family)
        found = kept.deciders.get(key)
        if (
            found is not None
            and found[0] is owner.endpoint
            and len(found[1]) == len(lists)
            and all(map(is_, found[1], lists))
        ):
            return found[2]
        # each chain's boxes for `own` and their content key, selected again only from a
        # chain whose box list was replaced (by identity: the previous lists stay alive in
        # `found`)
        before = {} if found is None else dict(zip(map(id, found[1]), found[3], strict=True))
        parts = tuple(before.get(id(boxes)) or self._selection(boxes, own) for boxes in lists)
        dispatch = owner.endpoint.dispatch(direction)
        tiers = tuple(tier for tier, names in enumerate(dispatch) for _ in names)
        same = (
            family,
            owner.endpoint.default,
            *((t, part[1]) for t, part in zip(tiers, parts, strict=True) if part[1]),
        )
        shared = kept.shared.get(same)
        if shared is None:  # (the decider's boxes hold the other-end tuples `same` names)
            if len(kept.shared) > SHARED_LIMIT:
                kept.shared.clear()
            selected = [(t, rb) for t, part in zip(tiers, parts, strict=True) for rb in part[0]]
            boxes = as_boxes(selected)
            decider = None
            if found is not None and found[2].default == owner.endpoint.default:
                # the endpoint's previous decider, patched where boxes' addresses moved
                decider = found[2].patched(boxes)
            if decider is None:
                decider = Decider(boxes, owner.endpoint.default, family)
            shared = kept.shared[same] = decider
        kept.deciders[key] = (owner.endpoint, lists, shared, parts)
        return shared

    def _selection(self, boxes: list[RuleBox], own: int) -> Selection:
        """One chain's boxes for own address `own` and their content key (action, rule,
        identity of the interned other-end tuple, ports per box: what shares deciders).
        Own addresses between the same cuts of the chain's own sides select the same
        boxes (a chain whose own sides are groups: their members), so a selection is made
        once per view and such class (`boxes` stays alive in the view: its id is its own)."""
        found = self._selected.get(id(boxes))
        if found is None:
            found = self._selected[id(boxes)] = (own_cuts(boxes), {})
        cuts, made = found
        position = bisect_right(cuts, own)
        selection = made.get(position)
        if selection is None:
            part = own_boxes(boxes, own)
            key = tuple((rb.action, rb.rule, id(rb.other), rb.ports) for rb in part)
            selection = made[position] = (part, key)
        return selection

    def chain_boxes(self, name: str, direction: Literal["in", "out"], family: int) -> list[RuleBox]:
        """Chain `name`'s boxes as `decider` reads them (kept with the compiler): for an
        analysis that walks the endpoints' chains itself (`analysis.lint`)."""
        return self._chain_boxes(name, direction, family)

    def _dispatch_lists(
        self, dispatch: tuple[tuple[str, ...], ...], direction: Literal["in", "out"], family: int
    ) -> tuple[list[RuleBox], ...]:
        """The box lists of the chains of a dispatch, in order (once per view: the members
        of a group share their dispatch)."""
        key = (dispatch, direction, family)
        found = self._dispatched.get(key)
        if found is None:
            found = self._dispatched[key] = tuple(
                self._chain_boxes(name, direction, family) for tier in dispatch for name in tier
            )
        return found

    def _chain_boxes(
        self, name: str, direction: Literal["in", "out"], family: int
    ) -> list[RuleBox]:
        """A chain's boxes. A recompiled chain whose boxes did not change keeps the very
        list it had (so the deciders of the endpoints running it stay valid), and every
        other-end address tuple is interned (so deciders are shared by content)."""
        here = self._lists.get((name, direction, family))
        if here is not None:
            return here
        compiled = self.compiler.chain(name)
        kept = self._kept.chains.get((name, direction, family))
        if kept is not None and kept[0] is compiled:
            self._lists[(name, direction, family)] = kept[1]
            return kept[1]
        found = [
            self._intern(rb)
            for rb in chain_boxes(compiled, self.compiler.address_set, direction, family)
        ]
        if kept is not None and kept[1] == found:
            found = kept[1]
        self._kept.chains[(name, direction, family)] = (compiled, found)
        self._lists[(name, direction, family)] = found
        return found

    def _intern(self, rb: RuleBox) -> RuleBox:
        others = self._kept.others
        other = others.get(rb.other)
        if other is None:
            if len(others) > SHARED_LIMIT:
                # the shared deciders are keyed by these identities: start both afresh
                others.clear()
                self._kept.shared.clear()
            other = others[rb.other] = rb.other
        if other is rb.other:
            return rb
        return RuleBox(rb.action, rb.rule, rb.own, other, rb.ports)

    def peer_addresses(self, peers: Iterable[Peer]) -> Families:
        """The addresses of `peers` (none: every address), as a rule naming them matches."""
        peers = tuple(peers)
        if not peers:
            return FULL[4], FULL[6]
        v4: list[Interval] = []
        v6: list[Interval] = []
        members: set[str] = set()
        inventory = self.compiler.inventory
        for p in peers:
            if p.kind == "group":
                g4, g6 = self.compiler.groups.intervals(p.value)
                v4.extend(g4)
                v6.extend(g6)
            elif p.kind == "cidr":
                c4, c6 = split_families([p.value])
                v4.extend(c4)
                v6.extend(c6)
            elif p.kind == "workload":
                if p.value in inventory.workloads:
                    members.add(p.value)
            else:
                assert p.selector is not None
                scope = (
                    inventory.workloads
                    if p.scope is None
                    else inventory.by_tenant.get(p.scope, set())
                )
                members.update(
                    wk
                    for wk in scope
                    if p.selector.matches(inventory.workloads[wk].selector_labels())
                )
        return inventory.addresses(members, v4, v6)
