"""Drops by reason: the first counter of a chain listing, and which rule keys drop (every
rule id of a dropping or rejecting rule, folded or not; tenants' dropping defaults)."""

from __future__ import annotations

from pathlib import Path

from hyperwall.compiler.fleet import FleetCompiler
from hyperwall.compiler.program import LookupRule
from hyperwall.dataplane.nft.drops import chain_drops, dropping_keys, policy_drops
from hyperwall.dataplane.nft.hits import default_key
from hyperwall.io.files import load_catalog

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"

LISTING = {
    "nftables": [
        {"metainfo": {"json_schema_version": 1}},
        {"chain": {"family": "inet", "table": "hyperwall", "name": "spoofed"}},
        {
            "rule": {
                "chain": "spoofed",
                "expr": [
                    {"counter": {"packets": 7, "bytes": 420}},
                    {"log": {"prefix": "hw 3 drop "}},
                ],
            }
        },
        {"rule": {"chain": "spoofed", "expr": [{"counter": {"packets": 99}}, {"drop": None}]}},
    ]
}


def test_chain_drops_reads_the_first_counter() -> None:
    assert chain_drops(LISTING) == 7
    assert chain_drops({"nftables": []}) == 0
    assert chain_drops({"nftables": [{"rule": {"expr": [{"drop": None}]}}]}) == 0


def test_dropping_keys_of_the_examples() -> None:
    catalog = load_catalog([EXAMPLES])
    program = FleetCompiler(catalog.config, catalog.workloads.values()).host_program("hv2")
    rules, defaults = dropping_keys(program)
    expected: set[str] = set()
    kept: set[str] = set()
    for chain in program.chains.values():
        for item in chain.items:
            ids = item.rules if isinstance(item, LookupRule) else (item.rule,)
            (expected if item.action in ("drop", "reject") else kept).update(ids)
    assert rules == expected and rules and not rules & kept
    tenants = {ep.tenant: ep.default for ep in program.endpoints.values()}
    assert defaults == {default_key(t) for t, d in tenants.items() if d != "allow"}
    some_rule, some_default = sorted(rules)[0], default_key(None)
    totals = [(some_rule, 5), (sorted(kept)[0], 100), (some_default, 3)]
    by_rule, by_default = policy_drops(program, totals)
    assert by_rule == 5
    assert by_default == (3 if some_default in defaults else 0)
