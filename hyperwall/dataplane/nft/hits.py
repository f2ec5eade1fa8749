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
A chain rendered again (its rules replaced) or an element deleted and added starts at 0:
`agent.hits` treats a counter that went down as a restart.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
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


@dataclass(frozen=True, slots=True)
class Attribution:
    """Which kernel counter counts for which rule: per chain, the key of each of its nft
    rules in order (None: not a decision, or a block lookup counted by its elements); per
    block set, each element's rule."""

    rules: Mapping[str, tuple[str | None, ...]] = field(default_factory=dict)
    elements: Mapping[str, Mapping[Element, str]] = field(default_factory=dict)

    def keys(self) -> set[str]:
        """Every rule key this table counts."""
        out = {k for keys in self.rules.values() for k in keys if k is not None}
        for by_element in self.elements.values():
            out.update(by_element.values())
        return out


def _chain_keys(chain: Chain, shapes: Mapping[str, frozenset[str]]) -> tuple[str | None, ...]:
    keys: list[str | None] = []
    for item in chain.items:
        # the item alone renders to exactly the nft rules it has in the whole chain
        alone = render_policy_chain(Chain(chain.name, (item,)), lambda b: shapes.get(b, ()))[0]
        key = None if isinstance(item, LookupRule) else item.rule
        keys.extend(key for _ in alone.rules)
    return tuple(keys)


def attribution(program: HostProgram, state: TableState, local: Local | None) -> Attribution:
    """The attribution of the table `state` rendered from `program`, block sets clipped to
    `local` (the backend's `state`, `program` and `local` after its last success)."""
    shapes = {
        b: frozenset(s for s in SHAPES if state.elements.get(block_set_name(b, s)))
        for b in program.block_sets
    }
    rules: dict[str, tuple[str | None, ...]] = {
        policy_chain_name(c.name): _chain_keys(c, shapes) for c in program.chains.values()
    }
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
    return Attribution(rules, elements)


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


def read_hits(listing: Mapping[str, Any], attribution: Attribution) -> dict[str, Hits]:
    """Hits per rule key in a listing of our inet table (`nft -j list table`), summed over
    the kernel counters that count for it. Keys of `attribution` with no counter listed
    (an empty block set on this host) are absent."""
    out: dict[str, Hits] = {}
    position: dict[str, int] = {}
    for entry in _listed(listing):
        if "rule" in entry:
            raw = entry["rule"]
            chain = raw.get("chain")
            keys = attribution.rules.get(chain)
            if keys is None:
                continue
            index = position[chain] = position.get(chain, -1) + 1
            key = keys[index] if index < len(keys) else None
            hits = _counter(raw.get("expr", []))
            if key is not None and hits is not None:
                out[key] = out.get(key, Hits()) + hits
        elif "set" in entry:
            raw = entry["set"]
            by_element = attribution.elements.get(raw.get("name"))
            if not by_element:
                continue
            types = raw["type"] if isinstance(raw["type"], list) else [raw["type"]]
            interval = "interval" in raw.get("flags", [])
            spec = SetSpec(raw["name"], tuple(types), interval, counter=True)
            if block_set_shape(spec.name) not in SHAPES:
                continue
            for listed in raw.get("elem", []):
                if not isinstance(listed, dict) or "elem" not in listed:
                    continue  # an element without a counter
                counter = listed["elem"].get("counter")
                rule = by_element.get(element(spec, listed))
                if rule is None or not isinstance(counter, dict):
                    continue
                hits = Hits(int(counter.get("packets", 0)), int(counter.get("bytes", 0)))
                out[rule] = out.get(rule, Hits()) + hits
    return out
