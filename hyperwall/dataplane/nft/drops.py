"""Drops by reason from the kernel's counters, for the agent's metrics. Pure.

- `spoofed`, `misdirected`: the `counter` that opens the base chains of those names
  (`base_chains`: every packet that goes there is dropped). Read from a listing of just
  those chains (`DROP_CHAINS`), so a scrape costs the same on any table size. Routed mode
  only: in bridge mode the anti-spoofing drops happen in the bridge table's set lookups,
  which count nothing.
- `default`, `rule`: policy decisions, from the per-rule hit totals of `agent.hits` (E's
  counters: first packets of new connections): the totals of tenants' defaults whose
  verdict drops or rejects, and of rules whose action drops or rejects (`dropping_keys`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from hyperwall.compiler.program import HostProgram, LookupRule
from hyperwall.dataplane.nft.hits import default_key

DROP_CHAINS = ("spoofed", "misdirected")
DROPPING = frozenset({"drop", "reject"})


def chain_drops(listing: Mapping[str, Any]) -> int:
    """Packets counted by the first `counter` of a chain listing (`nft -j list chain`)."""
    for entry in listing.get("nftables", []):
        rule = entry.get("rule") if isinstance(entry, dict) else None
        if not isinstance(rule, dict):
            continue
        for statement in rule.get("expr", []):
            counter = statement.get("counter") if isinstance(statement, dict) else None
            if isinstance(counter, dict):
                return int(counter.get("packets", 0))
    return 0


def dropping_keys(program: HostProgram) -> tuple[frozenset[str], frozenset[str]]:
    """(rule ids whose action drops or rejects, default keys of tenants whose default does)."""
    rules: set[str] = set()
    for chain in program.chains.values():
        for item in chain.items:
            if item.action in DROPPING:
                rules.update(item.rules if isinstance(item, LookupRule) else (item.rule,))
    defaults = {
        default_key(ep.tenant) for ep in program.endpoints.values() if ep.default in DROPPING
    }
    return frozenset(rules), frozenset(defaults)


def policy_drops(program: HostProgram, totals: Iterable[tuple[str, int]]) -> tuple[int, int]:
    """(packets dropped by rules, by defaults) from hit totals per rule key."""
    rules, defaults = dropping_keys(program)
    by_rule = by_default = 0
    for key, packets in totals:
        if key in rules:
            by_rule += packets
        elif key in defaults:
            by_default += packets
    return by_rule, by_default
