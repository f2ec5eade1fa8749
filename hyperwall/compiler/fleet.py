"""The policy compiler: policy config + inventory + host -> `HostProgram`, incrementally.

`FleetCompiler` holds the derived state of a whole fleet (group memberships, address sets,
compiled chains, which policies apply to which workload, endpoints) and keeps it current
under workload changes (`set_workload`, `remove_workload`) and policy edits (`set_config`),
recomputing only what a change touches. `host_program(host)` assembles one host's slice.
`compile_host` is the plain pure function over the same code. No I/O anywhere here.

Identity and naming (stable across compiles, so that deltas stay small):
- address sets: `g:KEY` (group), `w:KEY` (workload), `c:CIDR`, `s:SCOPE:SELECTOR`, and
  `u:HASH` for a union of several peers;
- chains: `in:POLICYKEY` / `out:POLICYKEY`; folded blocks: `b:CHAIN:FIRSTRULE`.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from itertools import compress, count, islice
from operator import attrgetter, is_not
from typing import Literal

from hyperwall.compiler.fold import Entry, Fold, fold, refold
from hyperwall.compiler.intervals import FULL_V4, FULL_V6, Interval, merge, split_families
from hyperwall.compiler.program import (
    TIERS,
    AddressSet,
    BlockElement,
    BlockSet,
    Chain,
    Endpoint,
    HostProgram,
)
from hyperwall.policy.model import (
    TIER_ORDER,
    Group,
    Peer,
    PolicyConfig,
    PolicyDef,
    RuleDef,
    Workload,
)
from hyperwall.policy.ports import PORT_PROTOS, PROTO_NUMBERS, PortMatch
from hyperwall.policy.selector import Selector
from hyperwall.policy.selector_index import SelectorIndex

Dir = Literal["in", "out"]
FOLD_LIMIT = 64  # a rule with more elements than this stays a MatchRule over named sets
_ANY_SERVICE = ((0, 0, 65535),)


def selector_id(selector: Selector) -> str:
    return selector.canonical()


def _scope_of(workload_key: str) -> str | None:
    """The tenant of a workload key (`acme/web-1` -> acme; `dns-1` -> None)."""
    return workload_key.rpartition("/")[0] or None


def peer_set_name(peer: Peer) -> str:
    if peer.kind == "group":
        return f"g:{peer.value}"
    if peer.kind == "workload":
        return f"w:{peer.value}"
    if peer.kind == "cidr":
        return f"c:{peer.value}"
    assert peer.selector is not None
    return f"s:{peer.scope or '*'}:{selector_id(peer.selector)}"


_direction = attrgetter("direction")
_PLAIN_PREFIX = {"group": "g:", "workload": "w:", "cidr": "c:"}


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


_PORT_PROTO_NUMBERS = {p: PROTO_NUMBERS[p] for p in PORT_PROTOS}
_ANY_BOTH = (_ANY_SERVICE, _ANY_SERVICE)


def _services_by_family(
    services: tuple[PortMatch, ...] | None,
) -> tuple[tuple[tuple[int, int, int], ...], tuple[tuple[int, int, int], ...]]:
    """`_service_keys` for IPv4 and IPv6; one port protocol's range is computed inline."""
    if services is None:
        return _ANY_BOTH
    if len(services) == 1:
        s = services[0]
        number = _PORT_PROTO_NUMBERS.get(s.proto)
        if number is not None:
            keys = ((number, 0, 65535) if s.any_value else (number, s.low, s.high),)
            return keys, keys
    return _service_keys(services, 4), _service_keys(services, 6)


@lru_cache(maxsize=65536)
def _service_keys(
    services: tuple[PortMatch, ...] | None, family: int
) -> tuple[tuple[int, int, int], ...]:
    """Disjoint (protocol number, low, high) triples of `services` that occur in `family`.

    Protocol 0 stands for any protocol and makes every other entry redundant; ranges of one
    protocol are merged, so a rule's own block elements never overlap each other.
    """
    if services is None or any(s.proto == "any" for s in services):
        return _ANY_SERVICE
    ranges: dict[int, list[tuple[int, int]]] = {}
    for s in services:
        if (s.proto == "icmp" and family == 6) or (s.proto == "icmpv6" and family == 4):
            continue
        top = 255 if s.proto in ("icmp", "icmpv6") else 65535
        low, high = (0, top) if s.any_value else (s.low, s.high)
        ranges.setdefault(PROTO_NUMBERS[s.proto], []).append((low, high))
    return tuple((proto, lo, hi) for proto, rs in sorted(ranges.items()) for lo, hi in merge(rs))


def _product(
    rule_id: str,
    v4: tuple[tuple[Interval, ...], tuple[Interval, ...], tuple[tuple[int, int, int], ...]],
    v6: tuple[tuple[Interval, ...], tuple[Interval, ...], tuple[tuple[int, int, int], ...]],
) -> tuple[BlockElement, ...]:
    """Block elements: per family, sources x destinations x (protocol, ports)."""
    return tuple(
        (family, sl, sh, dl, dh, proto, low, high, rule_id)
        for family, (ss, ds, ks) in ((4, v4), (6, v6))
        for sl, sh in ss
        for dl, dh in ds
        for proto, low, high in ks
    )


def common_ends(old: Sequence[RuleDef], new: Sequence[RuleDef]) -> tuple[int, int]:
    """Lengths of the longest common prefix and suffix of two rule lists (not overlapping).
    Identical rules are skipped at C speed; only rules that are not the same object are
    compared field by field."""
    if old is new or old == new:
        return len(old), 0
    limit = min(len(old), len(new))
    prefix = _common_run(old, new, limit)
    suffix = _common_run(old[::-1], new[::-1], limit - prefix)
    return prefix, suffix


def _common_run(a: Sequence[RuleDef], b: Sequence[RuleDef], limit: int) -> int:
    """How many leading rules of `a` and `b`, at most `limit`, are equal."""
    k = 0
    while k < limit:
        differ = compress(count(k), map(is_not, islice(a, k, limit), islice(b, k, limit)))
        k = next(differ, limit)
        if k == limit or a[k] != b[k]:
            return k
        k += 1
    return k


def _selectors(rules: Iterable[RuleDef], policy: PolicyDef) -> list[Selector]:
    """The selectors `rules` name, and the selector of `policy`'s appliedTo."""
    found = [
        p.selector for r in rules for p in (*r.sources, *r.destinations) if p.selector is not None
    ]
    if policy.applied_to is not None and policy.applied_to.selector is not None:
        found.append(policy.applied_to.selector)
    return found


@dataclass(slots=True)
class _ChainState:
    """What a chain was compiled from, to compile it again in proportion to a change:
    the policy's rules, those of the chain's direction, their entries, which entries read which
    address set (`readers`: positions) and the set objects they were computed from."""

    policy_rules: tuple[RuleDef, ...]  # all the policy's rules
    rules: tuple[RuleDef, ...]  # those of the chain's direction
    entries: list[Entry]
    readers: dict[str, list[int]]
    read: dict[str, AddressSet]
    fold: Fold


@dataclass(frozen=True, slots=True)
class _CompiledChain:
    chain: Chain
    blocks: Mapping[str, BlockSet]
    match_sets: frozenset[str]  # address sets the chain's MatchRules name
    all_sets: frozenset[str]  # every set its rules depend on (folding reads them too)


class FleetCompiler:
    """Derived fleet state, kept current under changes; see the module docstring."""

    def __init__(
        self, config: PolicyConfig, workloads: Iterable[Workload] = (), fold_limit: int = FOLD_LIMIT
    ) -> None:
        self.fold_limit = fold_limit
        self.workloads: dict[str, Workload] = {}
        self._wint: dict[str, tuple[tuple[Interval, ...], tuple[Interval, ...]]] = {}
        self.by_host: dict[str, set[str]] = defaultdict(set)
        self.by_tenant: dict[str | None, set[str]] = defaultdict(set)
        self.index = SelectorIndex()
        self._chain_states: dict[str, _ChainState] = {}  # outlive dropped chains: see design
        for w in workloads:
            self._place(w)
            self.index.set_workload(w.key, w.selector_labels())
        self._load_config(config)

    # -- configuration ------------------------------------------------------------------

    def _load_config(self, config: PolicyConfig) -> None:
        self.config = config
        self._sid_refs: dict[str, int] = defaultdict(int)
        self._groups_by_sid: dict[str, set[str]] = defaultdict(set)
        self._groups_by_member: dict[str, set[str]] = defaultdict(set)
        self._parents: dict[str, set[str]] = defaultdict(set)
        for g in config.groups.values():
            if g.selector is not None:
                self._ref_selector(g.selector)
                self._groups_by_sid[selector_id(g.selector)].add(g.key)
            for m in g.members:
                self._groups_by_member[m].add(g.key)
            for child in g.groups:
                self._parents[child].add(g.key)
        self._group_cidrs: dict[str, frozenset[str]] = {}
        self._members: dict[str, frozenset[str]] = {}
        self._gival: dict[str, tuple[tuple[Interval, ...], tuple[Interval, ...]]] = {}
        for key in config.groups:
            self._members_of(key)
            self._cidrs_of(key)
        # address sets (lazy), chains (lazy), applied-to and endpoints
        self._sets: dict[str, AddressSet] = {}
        self._set_peers: dict[str, tuple[Peer, ...]] = {}
        self._sets_by_group: dict[str, set[str]] = defaultdict(set)
        self._sets_by_sid: dict[str, set[str]] = defaultdict(set)
        self._sets_by_wpeer: dict[str, set[str]] = defaultdict(set)
        self._chains: dict[str, _CompiledChain] = {}
        self._chains_by_set: dict[str, set[str]] = defaultdict(set)
        self._applies: dict[str, frozenset[str]] = {}
        self._applied: dict[str, set[str]] = defaultdict(set)  # workload -> policies (reverse)
        self._policies_by_sid: dict[str, set[str]] = defaultdict(set)
        self._policies_by_group: dict[str, set[str]] = defaultdict(set)
        self._policies_by_wpeer: dict[str, set[str]] = defaultdict(set)
        self._scope_policies: set[str] = set()
        self._directions: dict[str, frozenset[str]] = {}  # policy -> directions of its rules
        self._endpoints: dict[str, tuple[Endpoint, ...]] = {}
        for policy in config.policies.values():
            self._add_policy(policy)
        self._prune_chain_states()

    def _prune_chain_states(self) -> None:
        """Forget the fold states of policies that are gone."""
        for name in [
            n for n in self._chain_states if n[n.index(":") + 1 :] not in self.config.policies
        ]:
            del self._chain_states[name]

    def set_config(self, config: PolicyConfig) -> None:
        """Replace the policy config; policy edits are incremental, others rebuild."""
        old = self.config
        if old.tenants != config.tenants or old.groups != config.groups:
            for sid in list(self._sid_refs):
                self.index.remove_selector(sid)
            self._load_config(config)
            return
        self.config = config
        keys = set(old.policies) | set(config.policies)
        for key in sorted(keys):
            before, after = old.policies.get(key), config.policies.get(key)
            if before == after:
                continue
            touched: set[str] = set()
            if before is not None and after is not None:
                # only the selectors of the rules that differ change their references; new
                # ones first, so that a selector in both keeps its index entry and sets
                prefix, suffix = common_ends(before.rules, after.rules)
                gained = _selectors(after.rules[prefix : len(after.rules) - suffix], after)
                for selector in gained:
                    self._ref_selector(selector)
                lost = _selectors(before.rules[prefix : len(before.rules) - suffix], before)
                touched |= self._remove_policy(before, lost)
                touched |= self._add_policy(after, ())
            elif before is not None:
                touched |= self._remove_policy(before)
                for direction in ("in", "out"):  # a policy that is gone: its chains' states
                    self._chain_states.pop(f"{direction}:{key}", None)
            elif after is not None:
                touched |= self._add_policy(after)
            for wk in touched:
                self._endpoints.pop(wk, None)

    def _ref_selector(self, selector: Selector) -> str:
        sid = selector_id(selector)
        if self._sid_refs[sid] == 0:
            self.index.add_selector(sid, selector)
        self._sid_refs[sid] += 1
        return sid

    def _unref_selector(self, selector: Selector) -> None:
        sid = selector_id(selector)
        self._sid_refs[sid] -= 1
        if self._sid_refs[sid] == 0:
            del self._sid_refs[sid]
            self.index.remove_selector(sid)
            for name in self._sets_by_sid.pop(sid, set()):
                self._forget_set(name)

    def _forget_set(self, name: str) -> None:
        """Drop an address set nothing can use any more (its selector is gone): it must not
        survive stale, to be found again if a later policy names the same peers."""
        self._sets.pop(name, None)
        for p in self._set_peers.pop(name, ()):
            table = {"group": self._sets_by_group, "workload": self._sets_by_wpeer}.get(p.kind)
            if table is not None:
                table.get(p.value, set()).discard(name)
            elif p.selector is not None:
                self._sets_by_sid.get(selector_id(p.selector), set()).discard(name)
        for chain in list(self._chains_by_set.pop(name, ())):
            self._drop_chain(chain)

    def _add_policy(
        self, policy: PolicyDef, selectors: Iterable[Selector] | None = None
    ) -> set[str]:
        """Register `policy`; `selectors`: those to reference (default: all it names)."""
        for selector in _selectors(policy.rules, policy) if selectors is None else selectors:
            self._ref_selector(selector)
        self._directions[policy.key] = frozenset(map(_direction, policy.rules))
        target = policy.applied_to
        if target is None:
            self._scope_policies.add(policy.key)
        elif target.kind == "selector":
            assert target.selector is not None
            self._policies_by_sid[selector_id(target.selector)].add(policy.key)
        elif target.kind == "group":
            self._policies_by_group[target.value].add(policy.key)
        else:
            self._policies_by_wpeer[target.value].add(policy.key)
        applies = self._compute_applies(policy)
        self._set_applies(policy.key, applies)
        return set(applies)

    def _remove_policy(
        self, policy: PolicyDef, selectors: Iterable[Selector] | None = None
    ) -> set[str]:
        """Unregister `policy`; `selectors`: those to release (default: all it names)."""
        self._directions.pop(policy.key, None)
        for direction in ("in", "out"):
            self._drop_chain(f"{direction}:{policy.key}")
        target = policy.applied_to
        self._scope_policies.discard(policy.key)
        if target is not None and target.kind == "selector":
            assert target.selector is not None
            self._policies_by_sid[selector_id(target.selector)].discard(policy.key)
        elif target is not None and target.kind == "group":
            self._policies_by_group[target.value].discard(policy.key)
        elif target is not None:
            self._policies_by_wpeer[target.value].discard(policy.key)
        applies = self._applies.get(policy.key, frozenset())
        self._set_applies(policy.key, None)
        for selector in _selectors(policy.rules, policy) if selectors is None else selectors:
            self._unref_selector(selector)
        return set(applies)

    # -- groups -------------------------------------------------------------------------

    def _scoped(self, ids: Iterable[str], tenant: str | None) -> frozenset[str]:
        if tenant is None:
            return frozenset(ids)
        return frozenset(self.by_tenant.get(tenant, set()).intersection(ids))

    def _selected(self, selector: Selector, tenant: str | None) -> frozenset[str]:
        return self._scoped(self.index.matches_view(selector_id(selector)), tenant)

    def _direct_members(self, group: Group) -> set[str]:
        found = {m for m in group.members if m in self.workloads}
        if group.selector is not None:
            found |= self._selected(group.selector, group.tenant)
        return found

    def _members_of(self, key: str) -> frozenset[str]:
        if key not in self._members:
            group = self.config.groups[key]
            found = self._direct_members(group)
            for child in group.groups:
                found |= self._members_of(child)
            self._members[key] = frozenset(found)
        return self._members[key]

    def _cidrs_of(self, key: str) -> frozenset[str]:
        if key not in self._group_cidrs:
            group = self.config.groups[key]
            found = set(group.cidrs)
            for child in group.groups:
                found |= self._cidrs_of(child)
            self._group_cidrs[key] = frozenset(found)
        return self._group_cidrs[key]

    def _refresh_groups(self, dirty: set[str]) -> set[str]:
        """Recompute the memberships of `dirty` groups and their ancestors; return changed."""
        pending = set(dirty)
        frontier = list(dirty)
        while frontier:
            for parent in self._parents.get(frontier.pop(), ()):
                if parent not in pending:
                    pending.add(parent)
                    frontier.append(parent)
        old = {key: self._members.pop(key) for key in pending if key in self._members}
        changed = {key for key in pending if self._members_of(key) != old.get(key)}
        for key in changed:
            self._gival.pop(key, None)
        return changed

    def _group_intervals(self, key: str) -> tuple[tuple[Interval, ...], tuple[Interval, ...]]:
        """A group's addresses (members' and CIDRs), merged; cached until it changes."""
        found = self._gival.get(key)
        if found is None:
            v4, v6 = split_families(self._cidrs_of(key))
            found = self._merge_workloads(self._members_of(key), v4, v6)
            self._gival[key] = found
        return found

    def _merge_workloads(
        self, members: Iterable[str], v4: Iterable[Interval] = (), v6: Iterable[Interval] = ()
    ) -> tuple[tuple[Interval, ...], tuple[Interval, ...]]:
        all4, all6 = list(v4), list(v6)
        for wk in members:
            w4, w6 = self._wint[wk]
            all4.extend(w4)
            all6.extend(w6)
        return merge(all4), merge(all6)

    # -- address sets -------------------------------------------------------------------

    def _register_set(self, name: str, peers: tuple[Peer, ...]) -> None:
        if name in self._set_peers:
            return
        self._set_peers[name] = peers
        for p in peers:
            if p.kind == "group":
                self._sets_by_group[p.value].add(name)
            elif p.kind == "workload":
                self._sets_by_wpeer[p.value].add(name)
            elif p.kind == "selector":
                assert p.selector is not None
                self._sets_by_sid[selector_id(p.selector)].add(name)

    def _compute_set(self, name: str) -> AddressSet:
        peers = self._set_peers[name]
        if len(peers) == 1 and peers[0].kind == "group":
            return AddressSet(name, *self._group_intervals(peers[0].value))
        v4: list[Interval] = []
        v6: list[Interval] = []
        members: set[str] = set()
        for p in peers:
            if p.kind == "group":
                g4, g6 = self._group_intervals(p.value)
                v4.extend(g4)
                v6.extend(g6)
            elif p.kind == "workload":
                if p.value in self.workloads:
                    members.add(p.value)
            elif p.kind == "selector":
                assert p.selector is not None
                members |= self._selected(p.selector, p.scope)
            else:
                c4, c6 = split_families([p.value])
                v4.extend(c4)
                v6.extend(c6)
        return AddressSet(name, *self._merge_workloads(members, v4, v6))

    def address_set(self, name: str) -> AddressSet:
        found = self._sets.get(name)
        if found is None:
            found = self._sets[name] = self._compute_set(name)
        return found

    def _refresh_sets(self, names: set[str]) -> None:
        """Recompute cached sets; chains that read a changed set are dropped."""
        for name in names:
            old = self._sets.get(name)
            if old is None:
                continue
            new = self._compute_set(name)
            if new != old:  # an equal set keeps its identity: chains and diffs skip it
                self._sets[name] = new
                for chain in list(self._chains_by_set.get(name, ())):
                    self._drop_chain(chain)

    # -- chains -------------------------------------------------------------------------

    def _drop_chain(self, name: str) -> None:
        compiled = self._chains.pop(name, None)
        if compiled is not None:
            for s in compiled.all_sets:
                self._chains_by_set[s].discard(name)

    def _rule_sets(self, rule: RuleDef) -> tuple[str | None, str | None]:
        src = peers_set_name(rule.sources)
        dst = peers_set_name(rule.destinations)
        if src is not None:
            self._register_set(src, rule.sources)
        if dst is not None:
            self._register_set(dst, rule.destinations)
        return src, dst

    def _entries(self, rules: Iterable[RuleDef]) -> list[Entry]:
        """Each rule as folding sees it (`Entry`), from the current address sets: its set
        names (registered) and block elements, or None for a rule with `log` or more than
        `fold_limit` elements. Runs once per rule of a fresh compile, so it is written for
        speed: one loop, locals, the common shapes without calls."""
        sets, registered, limit, plain = self._sets, self._set_peers, self.fold_limit, _PLAIN_PREFIX
        out: list[Entry] = []
        for rule in rules:
            sources, destinations = rule.sources, rule.destinations
            if not sources:
                src = None
                s4, s6 = FULL_V4, FULL_V6
            else:
                prefix = plain.get(sources[0].kind) if len(sources) == 1 else None
                src = prefix + sources[0].value if prefix is not None else peers_set_name(sources)
                assert src is not None
                if src not in registered:
                    self._register_set(src, sources)
                found = sets.get(src) or self.address_set(src)
                s4, s6 = found.v4, found.v6
            if not destinations:
                dst = None
                d4, d6 = FULL_V4, FULL_V6
            else:
                prefix = plain.get(destinations[0].kind) if len(destinations) == 1 else None
                dst = (
                    prefix + destinations[0].value
                    if prefix is not None
                    else peers_set_name(destinations)
                )
                assert dst is not None
                if dst not in registered:
                    self._register_set(dst, destinations)
                found = sets.get(dst) or self.address_set(dst)
                d4, d6 = found.v4, found.v6
            if rule.log:
                out.append(Entry(rule, src, dst, None))
                continue
            k4, k6 = _services_by_family(rule.services)
            n4, n6 = len(s4) * len(d4) * len(k4), len(s6) * len(d6) * len(k6)
            if n4 + n6 > limit:
                out.append(Entry(rule, src, dst, None))
            elif n4 == 1 and n6 == 0:
                (sl, sh), (dl, dh), (proto, low, high) = s4[0], d4[0], k4[0]
                element = (4, sl, sh, dl, dh, proto, low, high, rule.id)
                out.append(Entry(rule, src, dst, (element,)))
            else:
                out.append(Entry(rule, src, dst, _product(rule.id, (s4, d4, k4), (s6, d6, k6))))
        return out

    def chain(self, name: str) -> _CompiledChain:
        found = self._chains.get(name)
        if found is None:
            found = self._chains[name] = self._compile_chain(name)
            for s in found.all_sets:
                self._chains_by_set[s].add(name)
        return found

    def _compile_chain(self, name: str) -> _CompiledChain:
        direction, _, key = name.partition(":")
        policy = self.config.policies[key]
        state = self._chain_states.get(name)
        if state is not None and state.policy_rules is policy.rules:
            rules = state.rules
        elif self._directions[key] <= {direction, "both"}:
            rules = policy.rules
        else:
            rules = tuple(r for r in policy.rules if r.direction in (direction, "both"))
        if state is None:
            entries = self._entries(rules)
            readers, read = self._readers(entries)
            state = _ChainState(policy.rules, rules, entries, readers, read, fold(name, entries))
        else:
            state = self._update_chain(state, policy.rules, rules)
        self._chain_states[name] = state
        f = state.fold
        return _CompiledChain(f.chain, f.blocks, f.match_sets, frozenset(state.readers))

    def _readers(self, entries: list[Entry]) -> tuple[dict[str, list[int]], dict[str, AddressSet]]:
        readers: dict[str, list[int]] = {}
        for k, e in enumerate(entries):
            if e.src is not None:
                readers.setdefault(e.src, []).append(k)
            if e.dst is not None and e.dst != e.src:
                readers.setdefault(e.dst, []).append(k)
        return readers, {name: self.address_set(name) for name in readers}

    def _update_chain(
        self, state: _ChainState, policy_rules: tuple[RuleDef, ...], rules: tuple[RuleDef, ...]
    ) -> _ChainState:
        """The chain again after a change: only rules that changed, or read an address set
        that changed, are expanded again; the fold is patched (`fold.refold`)."""
        n_old, n = len(state.rules), len(rules)
        prefix, suffix = common_ends(state.rules, rules)
        shift = n - n_old
        entries = [
            *state.entries[:prefix],
            *self._entries(rules[prefix : n - suffix]),
            *state.entries[n_old - suffix :],
        ]
        dirty: set[int] = set()
        for set_name, positions in state.readers.items():
            if self._sets.get(set_name) is state.read[set_name]:
                continue
            kept = [
                k if k < prefix else k + shift
                for k in positions
                if k < prefix or k >= n_old - suffix
            ]
            if not kept:
                continue
            self._rule_sets(rules[kept[0]])  # registers the set again if it was forgotten
            if self.address_set(set_name) is not state.read[set_name]:
                dirty.update(kept)
        stale = sorted(dirty)
        for k, entry in zip(stale, self._entries(rules[k] for k in stale), strict=True):
            entries[k] = entry
        if shift or any(
            (entries[k].src, entries[k].dst) != (state.entries[k].src, state.entries[k].dst)
            for k in range(prefix, n - suffix)
        ):
            readers, read = self._readers(entries)
        else:
            readers, read = state.readers, state.read
            for set_name in read:
                read[set_name] = self.address_set(set_name)
        maybe_changed = dirty.union(range(prefix, n - suffix)) if n == n_old else None
        return _ChainState(
            policy_rules, rules, entries, readers, read, refold(state.fold, entries, maybe_changed)
        )

    # -- applied-to and endpoints -------------------------------------------------------

    def _compute_applies(self, policy: PolicyDef) -> frozenset[str]:
        scope = self.workloads.keys() if policy.tenant is None else self.by_tenant[policy.tenant]
        target = policy.applied_to
        if target is None:
            return frozenset(scope)
        if target.kind == "selector":
            assert target.selector is not None
            picked: Iterable[str] = self._selected(target.selector, target.scope)
        elif target.kind == "group":
            picked = self._members_of(target.value)
        else:
            picked = {target.value} if target.value in self.workloads else set()
        return frozenset(scope & set(picked))

    def _set_applies(self, key: str, applies: frozenset[str] | None) -> None:
        """Policy `key` applies to `applies` now (None: the policy is gone); keeps the
        reverse map (workload -> policies) that endpoints are built from."""
        old = self._applies.get(key, frozenset())
        new = applies or frozenset()
        for wk in old - new:
            self._applied[wk].discard(key)
        for wk in new - old:
            self._applied[wk].add(key)
        if applies is None:
            self._applies.pop(key, None)
        else:
            self._applies[key] = applies

    def _refresh_applies(self, policies: set[str]) -> set[str]:
        """Recompute applied-to of `policies`; return the workloads whose policy list changed."""
        touched: set[str] = set()
        for key in policies:
            policy = self.config.policies.get(key)
            if policy is None:
                continue
            old = self._applies.get(key, frozenset())
            new = self._compute_applies(policy)
            if new == old:
                continue
            self._set_applies(key, new)
            touched |= old ^ new
        return touched

    def _has_rules(self, policy: PolicyDef, direction: Dir) -> bool:
        return not self._directions[policy.key].isdisjoint((direction, "both"))

    def endpoints(self, wk: str) -> tuple[Endpoint, ...]:
        found = self._endpoints.get(wk)
        if found is None:
            found = self._endpoints[wk] = self._build_endpoints(self.workloads[wk])
        return found

    def _build_endpoints(self, w: Workload) -> tuple[Endpoint, ...]:
        policies = sorted(
            (self.config.policies[k] for k in self._applied.get(w.key, ())),
            key=PolicyDef.order_key,
        )
        dispatch: dict[Dir, list[list[str]]] = {"in": [[] for _ in range(TIERS)], "out": []}
        dispatch["out"] = [[] for _ in range(TIERS)]
        for policy in policies:
            for direction in ("in", "out"):
                if self._has_rules(policy, direction):
                    dispatch[direction][TIER_ORDER[policy.tier]].append(f"{direction}:{policy.key}")
        tenant = self.config.tenants.get(w.tenant) if w.tenant else None
        ingress = tuple(tuple(t) for t in dispatch["in"])
        egress = tuple(tuple(t) for t in dispatch["out"])
        return tuple(
            Endpoint(
                key=f"{w.key}/{iface.name}",
                workload=w.key,
                interface=iface.name,
                tenant=w.tenant,
                mac=iface.mac,
                ips=iface.ips,
                ingress=ingress,
                egress=egress,
                default=tenant.default_action if tenant else "drop",
                log_default=tenant.log_default if tenant else False,
            )
            for iface in w.interfaces
        )

    # -- inventory changes --------------------------------------------------------------

    def _place(self, w: Workload) -> None:
        self.workloads[w.key] = w
        self._wint[w.key] = split_families(w.ips())
        self.by_host[w.host].add(w.key)
        self.by_tenant[w.tenant].add(w.key)

    def _unplace(self, w: Workload) -> None:
        del self.workloads[w.key]
        del self._wint[w.key]
        self.by_host[w.host].discard(w.key)
        self.by_tenant[w.tenant].discard(w.key)

    def set_workload(self, w: Workload) -> None:
        """Add or update a workload (labels, addresses, host)."""
        old = self.workloads.get(w.key)
        if old == w:
            return
        if old is not None:
            self._unplace(old)
        self._place(w)
        changed_sids = self.index.set_workload(w.key, w.selector_labels())
        self._propagate(
            w.key, changed_sids, membership=old is None, ips=old is None or old.ips() != w.ips()
        )

    def remove_workload(self, key: str) -> None:
        old = self.workloads.get(key)
        if old is None:
            return
        self._unplace(old)
        changed_sids = self.index.remove_workload(key)
        self._propagate(key, changed_sids, membership=True, ips=True)
        self._endpoints.pop(key, None)

    def _in_scope(self, peer: Peer | None, sid: str, tenant: str | None) -> bool:
        """Whether `peer` is a selector `sid` whose scope can pick a workload of `tenant`."""
        return (
            peer is not None
            and peer.selector is not None
            and selector_id(peer.selector) == sid
            and peer.scope in (None, tenant)
        )

    def _propagate(self, wk: str, changed_sids: set[str], membership: bool, ips: bool) -> None:
        tenant = _scope_of(wk)
        groups = self.config.groups
        dirty_groups = {
            g
            for sid in changed_sids
            for g in self._groups_by_sid.get(sid, ())
            if groups[g].tenant in (None, tenant)
        }
        if membership:
            dirty_groups |= self._groups_by_member.get(wk, set())
        changed_groups = self._refresh_groups(dirty_groups)
        dirty_sets: set[str] = set()
        for g in changed_groups:
            dirty_sets |= self._sets_by_group.get(g, set())
        for sid in changed_sids:
            dirty_sets |= {
                name
                for name in self._sets_by_sid.get(sid, ())
                if any(self._in_scope(p, sid, tenant) for p in self._set_peers[name])
            }
        if membership:
            dirty_sets |= self._sets_by_wpeer.get(wk, set())
        if ips:
            dirty_sets |= self._sets_containing(wk)
        self._refresh_sets(dirty_sets)
        policies = self.config.policies
        dirty_policies = {
            p
            for sid in changed_sids
            for p in self._policies_by_sid.get(sid, ())
            if self._in_scope(policies[p].applied_to, sid, tenant)
        }
        for g in changed_groups:
            dirty_policies |= self._policies_by_group.get(g, set())
        if membership:
            dirty_policies |= self._policies_by_wpeer.get(wk, set())
            self._rescope(wk)
        for touched in self._refresh_applies(dirty_policies) | {wk}:
            self._endpoints.pop(touched, None)

    def _sets_containing(self, wk: str) -> set[str]:
        """Address sets whose addresses include workload `wk`'s (its IPs changed)."""
        found = set(self._sets_by_wpeer.get(wk, ()))
        for key, members in self._members.items():
            if wk in members:
                self._gival.pop(key, None)
                found |= self._sets_by_group.get(key, set())
        if wk in self.workloads:
            for sid in self.index.selectors_for(wk):
                found |= self._sets_by_sid.get(sid, set())
        return found

    def _rescope(self, wk: str) -> None:
        """A workload came or went: adjust the policies without appliedTo in its scope."""
        present = wk in self.workloads
        tenant = wk.rpartition("/")[0] or None
        for key in self._scope_policies:
            if self.config.policies[key].tenant not in (None, tenant):
                continue
            applies = self._applies[key]
            self._applies[key] = applies | {wk} if present else applies - {wk}
            if present:
                self._applied[wk].add(key)
            else:
                self._applied[wk].discard(key)

    # -- assembly -----------------------------------------------------------------------

    def host_program(self, host: str) -> HostProgram:
        endpoints: dict[str, Endpoint] = {}
        chain_names: set[str] = set()
        for wk in sorted(self.by_host.get(host, ())):
            for ep in self.endpoints(wk):
                endpoints[ep.key] = ep
                for tier in (*ep.ingress, *ep.egress):
                    chain_names.update(tier)
        chains: dict[str, Chain] = {}
        blocks: dict[str, BlockSet] = {}
        set_names: set[str] = set()
        for name in sorted(chain_names):
            compiled = self.chain(name)
            chains[name] = compiled.chain
            blocks.update(compiled.blocks)
            set_names |= compiled.match_sets
        sets = {name: self.address_set(name) for name in sorted(set_names)}
        return HostProgram(host, sets, blocks, chains, endpoints)

    def hosts(self) -> list[str]:
        return sorted(h for h, ws in self.by_host.items() if ws)


def compile_host(
    config: PolicyConfig, workloads: Mapping[str, Workload] | Iterable[Workload], host: str
) -> HostProgram:
    """The pure function: documents' config + inventory + host name -> the host's program."""
    items = workloads.values() if isinstance(workloads, Mapping) else workloads
    return FleetCompiler(config, items).host_program(host)
