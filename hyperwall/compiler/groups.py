"""Group membership: which workloads and CIDRs each group holds (nested groups included),
and its addresses, cached and recomputed for the groups a workload change touches.

Counterparts: `compiler.inventory` (the workloads and selector matches it reads) and
`compiler.address_sets` (which reads `intervals` for `g:` sets); `compiler.fleet` decides
when to `refresh`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping

from hyperwall.compiler.intervals import split_families
from hyperwall.compiler.inventory import Families, Inventory
from hyperwall.compiler.naming import selector_id
from hyperwall.policy.model import Group


class GroupMembership:
    """Members, CIDRs and addresses of every group of one policy config."""

    def __init__(self, groups: Mapping[str, Group], inventory: Inventory) -> None:
        """`groups`' selectors must be in `inventory.index` already."""
        self._groups = groups
        self._inventory = inventory
        self._by_sid: dict[str, set[str]] = defaultdict(set)
        self._by_member: dict[str, set[str]] = defaultdict(set)
        self._parents: dict[str, set[str]] = defaultdict(set)
        for g in groups.values():
            if g.selector is not None:
                self._by_sid[selector_id(g.selector)].add(g.key)
            for m in g.members:
                self._by_member[m].add(g.key)
            for child in g.groups:
                self._parents[child].add(g.key)
        self._cidrs: dict[str, frozenset[str]] = {}
        self._members: dict[str, frozenset[str]] = {}
        self._intervals: dict[str, Families] = {}
        for key in groups:
            self.members_of(key)
            self.cidrs_of(key)

    def _direct_members(self, group: Group) -> set[str]:
        found = {m for m in group.members if m in self._inventory.workloads}
        if group.selector is not None:
            found |= self._inventory.selected(group.selector, group.tenant)
        return found

    def members_of(self, key: str) -> frozenset[str]:
        if key not in self._members:
            group = self._groups[key]
            found = self._direct_members(group)
            for child in group.groups:
                found |= self.members_of(child)
            self._members[key] = frozenset(found)
        return self._members[key]

    def cidrs_of(self, key: str) -> frozenset[str]:
        if key not in self._cidrs:
            group = self._groups[key]
            found = set(group.cidrs)
            for child in group.groups:
                found |= self.cidrs_of(child)
            self._cidrs[key] = frozenset(found)
        return self._cidrs[key]

    def intervals(self, key: str) -> Families:
        """A group's addresses (members' and CIDRs), merged; cached until it changes."""
        found = self._intervals.get(key)
        if found is None:
            v4, v6 = split_families(self.cidrs_of(key))
            found = self._inventory.addresses(self.members_of(key), v4, v6)
            self._intervals[key] = found
        return found

    def dirty(
        self, wk: str, tenant: str | None, changed_sids: Iterable[str], membership: bool
    ) -> set[str]:
        """Groups whose members may have changed: those whose selector's matches changed
        (`changed_sids`) within `tenant`, and, if `wk` came or went, those naming it."""
        found = {
            g
            for sid in changed_sids
            for g in self._by_sid.get(sid, ())
            if self._groups[g].tenant in (None, tenant)
        }
        if membership:
            found |= self._by_member.get(wk, set())
        return found

    def refresh(self, dirty: set[str]) -> set[str]:
        """Recompute the memberships of `dirty` groups and their ancestors; return changed."""
        pending = set(dirty)
        frontier = list(dirty)
        while frontier:
            for parent in self._parents.get(frontier.pop(), ()):
                if parent not in pending:
                    pending.add(parent)
                    frontier.append(parent)
        old = {key: self._members.pop(key) for key in pending if key in self._members}
        changed = {key for key in pending if self.members_of(key) != old.get(key)}
        for key in changed:
            self._intervals.pop(key, None)
        return changed

    def containing(self, wk: str) -> list[str]:
        """The groups that hold workload `wk`, whose addresses changed: their cached
        addresses are forgotten."""
        found = [key for key, members in self._members.items() if wk in members]
        for key in found:
            self._intervals.pop(key, None)
        return found
