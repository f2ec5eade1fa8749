"""Address sets: the addresses that a rule's `from` or `to` peers stand for, computed when
first read and recomputed only when what they read (a group, a workload, a selector's
matches) changes. An equal recomputed set keeps its identity, so chains and diffs skip it.

Counterparts: `compiler.groups` and `compiler.inventory` (what sets read), `compiler.chains`
(which reads sets through `side`); `compiler.fleet` drops the chains that read a set that
changed or was forgotten.
"""

from __future__ import annotations

from collections.abc import Iterable

from hyperwall.compiler.groups import GroupMembership
from hyperwall.compiler.intervals import FULL_V4, FULL_V6, Interval, split_families
from hyperwall.compiler.inventory import Families, Inventory
from hyperwall.compiler.naming import TargetIndex, in_scope, peers_set_name, scope_of
from hyperwall.compiler.program import AddressSet
from hyperwall.policy.model import Peer


class AddressSets:
    """Every address set a compiled rule names, by name, with what each one reads."""

    def __init__(self, inventory: Inventory, groups: GroupMembership) -> None:
        self._inventory = inventory
        self._groups = groups
        self._sets: dict[str, AddressSet] = {}  # computed (lazily)
        self._peers: dict[str, tuple[Peer, ...]] = {}  # registered: name -> its peers
        self._readers = TargetIndex()  # set names by the group, workload, selector they read

    def register(self, peers: tuple[Peer, ...]) -> str | None:
        """The name of the set of `peers` (None: any address), registered."""
        name = peers_set_name(peers)
        if name is not None and name not in self._peers:
            self._peers[name] = peers
            for p in peers:
                self._readers.add(p, name)
        return name

    def side(self, peers: tuple[Peer, ...]) -> tuple[str | None, *Families]:
        """One side (`from` or `to`) of a rule: its set's name (registered) and addresses
        per family; no peers: None and every address."""
        name = self.register(peers)
        if name is None:
            return None, FULL_V4, FULL_V6
        found = self._sets.get(name) or self.get(name)
        return name, found.v4, found.v6

    def get(self, name: str) -> AddressSet:
        """The set `name` (registered: KeyError otherwise), computed if it is not cached."""
        found = self._sets.get(name)
        if found is None:
            found = self._sets[name] = self._compute(name)
        return found

    def cached(self, name: str) -> AddressSet | None:
        return self._sets.get(name)

    def _compute(self, name: str) -> AddressSet:
        peers = self._peers[name]
        if len(peers) == 1 and peers[0].kind == "group":
            return AddressSet(name, *self._groups.intervals(peers[0].value))
        v4: list[Interval] = []
        v6: list[Interval] = []
        members: set[str] = set()
        for p in peers:
            if p.kind == "group":
                g4, g6 = self._groups.intervals(p.value)
            elif p.kind == "cidr":
                g4, g6 = split_families([p.value])
            else:
                members |= self._inventory.picked(p)
                continue
            v4.extend(g4)
            v6.extend(g6)
        return AddressSet(name, *self._inventory.addresses(members, v4, v6))

    def refresh(self, names: Iterable[str]) -> list[str]:
        """Recompute the cached sets among `names`; the names of those that changed."""
        changed = []
        for name in names:
            old = self._sets.get(name)
            if old is None:
                continue
            new = self._compute(name)
            if new != old:  # an equal set keeps its identity: chains and diffs skip it
                self._sets[name] = new
                changed.append(name)
        return changed

    def forget_selector(self, sid: str) -> set[str]:
        """Drop the sets that read selector `sid`, which nothing references any more: they
        must not survive stale, to be found again if a later policy names the same peers.
        Returns their names."""
        names = self._readers.selectors.pop(sid, set())
        for name in names:
            self._sets.pop(name, None)
            for p in self._peers.pop(name, ()):
                self._readers.discard(p, name)
        return names

    def dirty(
        self,
        wk: str,
        changed_sids: Iterable[str],
        changed_groups: Iterable[str],
        membership: bool,
        ips: bool,
    ) -> set[str]:
        """The sets that may have changed when workload `wk` changed: whose selectors' matches
        changed (`changed_sids`) within its tenant, that read `changed_groups`, that name it
        (if it came or went: `membership`), or that hold its addresses (`ips` changed)."""
        tenant = scope_of(wk)
        found = self._readers.affected(
            changed_sids,
            lambda name, sid: any(in_scope(p, sid, tenant) for p in self._peers[name]),
            changed_groups,
            wk if membership else None,
        )
        if ips:
            found |= self._containing(wk)
        return found

    def _containing(self, wk: str) -> set[str]:
        """Sets whose addresses include workload `wk`'s (its IPs changed)."""
        found = set(self._readers.workloads.get(wk, ()))
        for key in self._groups.containing(wk):
            found |= self._readers.groups.get(key, set())
        if wk in self._inventory.workloads:
            for sid in self._inventory.index.selectors_for(wk):
                found |= self._readers.selectors.get(sid, set())
        return found
