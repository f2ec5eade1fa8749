"""Per-rule hit counters, read from the kernel's listing of our table. Pure.

Counterpart of `nft.render` (which the attribution mirrors) and `agent.hits` (which reads
the listing, keeps totals across counter resets and the time of the last hit). Where the
kernel counts a rule's hits:

- a `MatchRule`: the `counter` of each nft rule it renders to (one per family and service
  alternative) in its policy chain `p_*`;
- a folded rule (in a `LookupRule`): the counters of its elements in the block sets `k_*`
  (`SetSpec.counter`: the kernel gives each element a counter of its own; a lookup that hits
  an element counts the packet there, at no extra lookup). The fold keeps a block's rules
  disjoint, so each element belongs to exactly one rule; the lookup rule's own counter, the
  sum of its rules', is not read;
- a tenant's default: the `counter` of the last rule of each dispatch chain `d_*` (one per
  tenant: `base_chains.render_dispatch`).

Only policy decisions of new connections are counted (established packets never reach
these chains): `packets` counts first packets, that is connections, and `bytes` their size.
Each kernel counter has an id (`chain#index` for an nft rule, `set|element` for an
element) so that `agent.hits` can follow each on its own: a chain rendered again (its rules
replaced) or an element deleted and added starts at 0 again, which shows as that counter
going down, whatever the rule's other counters do. Reading is in two steps so that it costs
little when little happened: the rules of the whole table without set elements
(`rule_counters`, from `nft -t` output), which include each block set's lookup counter (the
sum of its elements'); then only the sets whose lookup counter moved (`element_counters`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from hyperwall.compiler.program import Chain, HostProgram, LookupRule
from hyperwall.dataplane.nft.base_chains import render_dispatch
from hyperwall.dataplane.nft.blocks import Local, block_clip, split_element
from hyperwall.dataplane.nft.policy_chains import passing_chains, render_policy_chain
from hyperwall.dataplane.nft.readback import element
from hyperwall.dataplane.nft.table import (
    SHAPES,
    Element,
    SetSpec,
    TableState,
    block_set_name,
    block_set_shape,
    policy_chain_name,
)

DEFAULT = "default"  # the rule id `trace` prints for a tenant's default


def default_key(tenant: str | None) -> str:
    """The counter key of a tenant's default (`default@acme`; `default@` for provider
    endpoints); every other key is a rule id as `trace` prints it."""
    return f"{DEFAULT}@{tenant or ''}"


@dataclass(frozen=True, slots=True)
class Hits:
    packets: int = 0
    bytes: int = 0

    def __add__(self, other: Hits) -> Hits:
        return Hits(self.packets + other.packets, self.bytes + other.bytes)


Counter = tuple[str, Hits]  # the rule key a kernel counter counts for, and its value


@dataclass(frozen=True, slots=True)
class Attribution:
    """Which kernel counter counts for which rule: per chain, the key of each of its nft
    rules in order (None: not a decision, or a block lookup counted by its elements), and
    the set each block lookup rule looks up; per block set, each element's rule."""

    rules: Mapping[str, tuple[str | None, ...]] = field(default_factory=dict)
    elements: Mapping[str, Mapping[Element, str]] = field(default_factory=dict)
    lookups: Mapping[str, Mapping[int, str]] = field(default_factory=dict)

    def keys(self) -> set[str]:
        """Every rule key this table counts."""
        out = {k for keys in self.rules.values() for k in keys if k is not None}
        for by_element in self.elements.values():
            out.update(by_element.values())
        return out


def _chain_keys(
    chain: Chain, shapes: Mapping[str, frozenset[str]]
) -> tuple[tuple[str | None, ...], dict[int, str]]:
    """The key of each nft rule of the chain, and the set of each block lookup rule."""
    keys: list[str | None] = []
    lookups: dict[int, str] = {}
    for item in chain.items:
        # the item alone renders to exactly the nft rules it has in the whole chain
        alone = render_policy_chain(Chain(chain.name, (item,)), lambda b: shapes.get(b, ()))[0]
        if isinstance(item, LookupRule):  # one rule per filled shape, in `SHAPES` order
            filled = [s for s in SHAPES if s in shapes.get(item.block, ())]
            for shape in filled:
                lookups[len(keys)] = block_set_name(item.block, shape)
                keys.append(None)
        else:
            keys.extend(item.rule for _ in alone.rules)
    return tuple(keys), lookups


def attribution(program: HostProgram, state: TableState, local: Local | None) -> Attribution:
    """The attribution of the table `state` rendered from `program`, block sets clipped to
    `local` (the backend's `state`, `program` and `local` after its last success)."""
    shapes = {
        b: frozenset(s for s in SHAPES if state.elements.get(block_set_name(b, s)))
        for b in program.block_sets
    }
    rules: dict[str, tuple[str | None, ...]] = {}
    lookups: dict[str, dict[int, str]] = {}
    for c in program.chains.values():
        name = policy_chain_name(c.name)
        rules[name], lookups[name] = _chain_keys(c, shapes)
    passing = passing_chains(program)
    for ep in program.endpoints.values():
        for direction in ("out", "in"):
            d, _ = render_dispatch(ep, direction, passing)
            rules[d.name] = (*(None for _ in d.rules[:-1]), default_key(ep.tenant))
    elements: dict[str, dict[Element, str]] = {}
    for chain in program.chains.values():
        for item in chain.items:
            if not isinstance(item, LookupRule):
                continue
            block = program.block_sets[item.block]
            clip = block_clip(block.name, local)
            for e in block.elements:
                for shape, value in split_element(e, clip):
                    elements.setdefault(block_set_name(block.name, shape), {})[value] = e[8]
    return Attribution(rules, elements, lookups)


def _counter(expr: list[dict[str, Any]]) -> Hits | None:
    for statement in expr:
        found = statement.get("counter")
        if isinstance(found, dict):
            return Hits(int(found.get("packets", 0)), int(found.get("bytes", 0)))
    return None


def _listed(listing: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    for entry in listing.get("nftables", []):
        if isinstance(entry, dict):
            yield entry


def rule_counters(
    listing: Mapping[str, Any], attribution: Attribution
) -> tuple[dict[str, Counter], dict[str, Hits]]:
    """From a listing of our table (elements not needed): the nonzero counters of decision
    rules by id (`chain#index`), and each block set's lookup counter (zero included)."""
    counters: dict[str, Counter] = {}
    lookups: dict[str, Hits] = {}
    position: dict[str, int] = {}
    for entry in _listed(listing):
        raw = entry.get("rule")
        if raw is None:
            continue
        chain = raw.get("chain")
        keys = attribution.rules.get(chain)
        if keys is None:
            continue
        index = position[chain] = position.get(chain, -1) + 1
        hits = _counter(raw.get("expr", []))
        if hits is None:
            continue
        looked_up = attribution.lookups.get(chain, {}).get(index)
        key = keys[index] if index < len(keys) else None
        if looked_up is not None:
            lookups[looked_up] = hits
        elif key is not None and hits.packets:
            counters[f"{chain}#{index}"] = (key, hits)
    return counters, lookups


def element_counters(listing: Mapping[str, Any], attribution: Attribution) -> dict[str, Counter]:
    """The nonzero element counters of the block sets in `listing` (one set, or the whole
    table) by id (`set|element`)."""
    out: dict[str, Counter] = {}
    for entry in _listed(listing):
        raw = entry.get("set")
        if raw is None:
            continue
        by_element = attribution.elements.get(raw.get("name"))
        if not by_element or block_set_shape(raw["name"]) not in SHAPES:
            continue
        types = raw["type"] if isinstance(raw["type"], list) else [raw["type"]]
        spec = SetSpec(raw["name"], tuple(types), "interval" in raw.get("flags", []), counter=True)
        for listed in raw.get("elem", []):
            counter = listed.get("elem", {}).get("counter") if isinstance(listed, dict) else None
            if not isinstance(counter, dict) or not counter.get("packets"):
                continue  # most elements were never hit: not even parsed
            value = element(spec, listed)
            rule = by_element.get(value)
            if rule is not None:
                hits = Hits(int(counter["packets"]), int(counter.get("bytes", 0)))
                out[f"{spec.name}|{json.dumps(value)}"] = (rule, hits)
    return out


def read_hits(listing: Mapping[str, Any], attribution: Attribution) -> dict[str, Hits]:
    """Hits per rule key in a whole listing of our table (elements included), summed over
    the kernel counters that count for it; keys never hit are absent."""
    counters, _ = rule_counters(listing, attribution)
    counters.update(element_counters(listing, attribution))
    return sum_by_key(counters.values())


def sum_by_key(counters: Iterable[Counter]) -> dict[str, Hits]:
    out: dict[str, Hits] = {}
    for key, hits in counters:
        out[key] = out.get(key, Hits()) + hits
    return out
