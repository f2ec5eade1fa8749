"""Names and scopes: what the compiler calls its address sets and chains, and which peers a
workload's tenant can see. Pure functions and one small index, no fleet state.

Names are stable across compiles, so that deltas stay small:
- address sets: `g:KEY` (group), `w:KEY` (workload), `c:CIDR`, `s:SCOPE:SELECTOR`, and
  `u:HASH` for a union of several peers;
- chains: `in:POLICYKEY` / `out:POLICYKEY` (`chain_name`); folded blocks `b:CHAIN:FIRSTRULE`
  are named by `compiler.fold`.

`TargetIndex` is the one place that dispatches on what a peer names (group, workload,
selector; a CIDR names nothing that changes). Counterpart: `compiler.fleet`, whose state is
keyed by these names.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Callable, Iterable
from functools import lru_cache
from typing import Literal

from hyperwall.policy.model import Peer, PolicyDef, RuleDef
from hyperwall.policy.selector import Selector

Dir = Literal["in", "out"]
DIRECTIONS: tuple[Dir, ...] = ("in", "out")
_PLAIN_PREFIX = {"group": "g:", "workload": "w:", "cidr": "c:"}


def selector_id(selector: Selector) -> str:
    return selector.canonical()


def scope_of(workload_key: str) -> str | None:
    """The tenant of a workload key (`acme/web-1` -> acme; `dns-1` -> None)."""
    return workload_key.rpartition("/")[0] or None


def in_scope(peer: Peer | None, sid: str, tenant: str | None) -> bool:
    """Whether `peer` is a selector `sid` whose scope can pick a workload of `tenant`."""
    return (
        peer is not None
        and peer.selector is not None
        and selector_id(peer.selector) == sid
        and peer.scope in (None, tenant)
    )


def chain_name(direction: Dir, policy_key: str) -> str:
    return f"{direction}:{policy_key}"


def chain_policy(name: str) -> str:
    """The key of the policy a chain `chain_name` names."""
    return name.partition(":")[2]


def peer_set_name(peer: Peer) -> str:
    prefix = _PLAIN_PREFIX.get(peer.kind)
    if prefix is not None:
        return prefix + peer.value
    assert peer.selector is not None
    return f"s:{peer.scope or '*'}:{selector_id(peer.selector)}"


def peers_set_name(peers: tuple[Peer, ...]) -> str | None:
    """Name of the address set matching any of `peers`; None for 'any' (no peers)."""
    if not peers:
        return None
    if len(peers) == 1:  # the common case, without hashing the peer
        prefix = _PLAIN_PREFIX.get(peers[0].kind)
        if prefix is not None:
            return prefix + peers[0].value
    return _peers_set_name(peers)


@lru_cache(maxsize=65536)
def _peers_set_name(peers: tuple[Peer, ...]) -> str:
    names = sorted({peer_set_name(p) for p in peers})
    if len(names) == 1:
        return names[0]
    return "u:" + hashlib.sha1("\n".join(names).encode()).hexdigest()[:16]


def policy_selectors(rules: Iterable[RuleDef], policy: PolicyDef) -> list[Selector]:
    """The selectors `rules` name, and the selector of `policy`'s appliedTo."""
    found = [
        p.selector for r in rules for p in (*r.sources, *r.destinations) if p.selector is not None
    ]
    if policy.applied_to is not None and policy.applied_to.selector is not None:
        found.append(policy.applied_to.selector)
    return found


class TargetIndex:
    """Names (of address sets, or of policies) by the group, workload or selector they
    name: what to look at again when a group's members, a workload or a selector's matches
    change."""

    __slots__ = ("groups", "selectors", "workloads")

    def __init__(self) -> None:
        self.groups: defaultdict[str, set[str]] = defaultdict(set)
        self.workloads: defaultdict[str, set[str]] = defaultdict(set)
        self.selectors: defaultdict[str, set[str]] = defaultdict(set)  # by selector id

    def _slot(self, peer: Peer) -> tuple[defaultdict[str, set[str]], str] | None:
        if peer.kind == "group":
            return self.groups, peer.value
        if peer.kind == "workload":
            return self.workloads, peer.value
        if peer.selector is not None:
            return self.selectors, selector_id(peer.selector)
        return None  # a CIDR

    def add(self, peer: Peer, name: str) -> None:
        slot = self._slot(peer)
        if slot is not None:
            slot[0][slot[1]].add(name)

    def discard(self, peer: Peer, name: str) -> None:
        slot = self._slot(peer)
        if slot is not None:
            slot[0].get(slot[1], set()).discard(name)

    def affected(
        self,
        sids: Iterable[str],
        picked: Callable[[str, str], bool],
        groups: Iterable[str] = (),
        workload: str | None = None,
    ) -> set[str]:
        """The names that read any of selectors `sids` (those for which `picked(name, sid)`),
        any of `groups`, or `workload`."""
        found = {name for sid in sids for name in self.selectors.get(sid, ()) if picked(name, sid)}
        for g in groups:
            found |= self.groups.get(g, set())
        if workload is not None:
            found |= self.workloads.get(workload, set())
        return found
