"""Chains: each policy's rules of one direction compiled into a `Chain` and its block sets,
and the state kept to compile it again in proportion to a change.

A rule becomes an `Entry` (its `from` and `to` set names and, unless it logs or is larger
than `fold_limit`, its block elements: sources x destinations x services per family);
`compiler.fold` folds a chain's entries into lookup blocks and patches that fold
(`refold`) when only some entries changed. A `ChainState` outlives its compiled chain (a
chain is dropped whenever a set it reads changes), so that compiling it again only expands
the rules that changed or read a changed set.

Counterparts: `compiler.fold` (folding), `compiler.address_sets` (what entries read),
`compiler.fleet` (which drops chains and says which policy a chain compiles).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from itertools import compress, count, islice
from operator import is_not

from hyperwall.compiler.address_sets import AddressSets
from hyperwall.compiler.fold import Entry, Fold, fold, refold
from hyperwall.compiler.intervals import Interval, merge
from hyperwall.compiler.naming import DIRECTIONS, chain_name, chain_policy
from hyperwall.compiler.program import AddressSet, BlockElement, BlockSet, Chain
from hyperwall.policy.model import PolicyDef, RuleDef
from hyperwall.policy.ports import PORT_PROTOS, PROTO_NUMBERS, PortMatch

FOLD_LIMIT = 64  # a rule with more elements than this stays a MatchRule over named sets
_ANY_SERVICE = ((0, 0, 65535),)
_PORT_PROTO_NUMBERS = {p: PROTO_NUMBERS[p] for p in PORT_PROTOS}
_ANY_BOTH = (_ANY_SERVICE, _ANY_SERVICE)


@dataclass(frozen=True, slots=True)
class CompiledChain:
    """A chain as compiled now: the chain, its block sets, and the address sets it uses."""

    chain: Chain
    blocks: Mapping[str, BlockSet]
    match_sets: frozenset[str]  # address sets the chain's MatchRules name
    all_sets: frozenset[str]  # every set its rules depend on (folding reads them too)


@dataclass(slots=True)
class ChainState:
    """What a chain was compiled from, to compile it again in proportion to a change:
    the policy's rules, those of the chain's direction, their entries, which entries read which
    address set (`readers`: positions) and the set objects they were computed from."""

    policy_rules: tuple[RuleDef, ...]  # all the policy's rules
    rules: tuple[RuleDef, ...]  # those of the chain's direction
    entries: list[Entry]
    readers: dict[str, list[int]]
    read: dict[str, AddressSet]
    fold: Fold


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


class Chains:
    """The compiled chains (lazy; dropped when a set they read changes) and their states
    (`states`: kept across drops and config reloads, pruned when the policy goes)."""

    def __init__(
        self, sets: AddressSets, states: dict[str, ChainState], fold_limit: int = FOLD_LIMIT
    ) -> None:
        self._sets = sets
        self.states = states
        self.fold_limit = fold_limit
        self._compiled: dict[str, CompiledChain] = {}
        self._by_set: dict[str, set[str]] = defaultdict(set)  # set name -> chains reading it

    def get(
        self,
        name: str,
        policies: Mapping[str, PolicyDef],
        directions: Mapping[str, frozenset[str]],
    ) -> CompiledChain:
        """Chain `name`, of `policies[chain_policy(name)]`, whose rules have `directions`."""
        found = self._compiled.get(name)
        if found is None:
            key = chain_policy(name)
            found = self._compiled[name] = self._compile(name, policies[key], directions[key])
            for s in found.all_sets:
                self._by_set[s].add(name)
        return found

    def drop(self, name: str) -> None:
        compiled = self._compiled.pop(name, None)
        if compiled is not None:
            for s in compiled.all_sets:
                self._by_set[s].discard(name)

    def drop_readers(self, set_name: str) -> None:
        """Drop the chains that read address set `set_name`."""
        for chain in list(self._by_set.get(set_name, ())):
            self.drop(chain)

    def drop_policy(self, key: str, forget: bool = False) -> None:
        """Drop the chains of policy `key`; `forget`: their states too (the policy is gone)."""
        for direction in DIRECTIONS:
            self.drop(chain_name(direction, key))
            if forget:
                self.states.pop(chain_name(direction, key), None)

    def prune(self, policies: Mapping[str, PolicyDef]) -> None:
        """Forget the states of chains whose policy is not in `policies`."""
        for name in [n for n in self.states if chain_policy(n) not in policies]:
            del self.states[name]

    def _compile(self, name: str, policy: PolicyDef, directions: frozenset[str]) -> CompiledChain:
        direction = name.partition(":")[0]
        state = self.states.get(name)
        if state is not None and state.policy_rules is policy.rules:
            rules = state.rules
        elif directions <= {direction, "both"}:
            rules = policy.rules
        else:
            rules = tuple(r for r in policy.rules if r.direction in (direction, "both"))
        if state is None:
            entries = self._entries(rules)
            readers, read = self._readers(entries)
            state = ChainState(policy.rules, rules, entries, readers, read, fold(name, entries))
        else:
            state = self._update(state, policy.rules, rules)
        self.states[name] = state
        f = state.fold
        return CompiledChain(f.chain, f.blocks, f.match_sets, frozenset(state.readers))

    def _entries(self, rules: Iterable[RuleDef]) -> list[Entry]:
        """Each rule as folding sees it (`Entry`), from the current address sets: its set
        names (registered) and block elements, or None for a rule with `log` or more than
        `fold_limit` elements. Runs once per rule of a fresh compile, so it is written for
        speed: one loop, locals, one block element built inline."""
        side, limit = self._sets.side, self.fold_limit
        out: list[Entry] = []
        for rule in rules:
            src, s4, s6 = side(rule.sources)
            dst, d4, d6 = side(rule.destinations)
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

    def _readers(self, entries: list[Entry]) -> tuple[dict[str, list[int]], dict[str, AddressSet]]:
        """Which entries (positions) read which address set, and the sets they read."""
        readers: dict[str, list[int]] = {}
        for k, e in enumerate(entries):
            for name in (e.src, e.dst) if e.dst != e.src else (e.src,):
                if name is not None:
                    readers.setdefault(name, []).append(k)
        return readers, {name: self._sets.get(name) for name in readers}

    def _update(
        self, state: ChainState, policy_rules: tuple[RuleDef, ...], rules: tuple[RuleDef, ...]
    ) -> ChainState:
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
            if self._sets.cached(set_name) is state.read[set_name]:
                continue
            kept = [
                k if k < prefix else k + shift
                for k in positions
                if k < prefix or k >= n_old - suffix
            ]
            if not kept:
                continue
            reader = rules[kept[0]]  # registers the set again if it was forgotten
            self._sets.register(reader.sources)
            self._sets.register(reader.destinations)
            if self._sets.get(set_name) is not state.read[set_name]:
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
                read[set_name] = self._sets.get(set_name)
        maybe_changed = dirty.union(range(prefix, n - suffix)) if n == n_old else None
        return ChainState(
            policy_rules, rules, entries, readers, read, refold(state.fold, entries, maybe_changed)
        )
