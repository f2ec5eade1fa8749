"""`nft.hits`: every rule of a program has the kernel counters that count for it, and a
listing from the kernel reads back as hits per rule: an element's count goes to the rule it
belongs to (real packets: `tests/lab/test_visibility.py`)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hyperwall.compiler.fleet import FleetCompiler
from hyperwall.compiler.program import HostProgram, LookupRule, MatchRule
from hyperwall.dataplane.nft.backend import NftBackend
from hyperwall.dataplane.nft.blocks import local_addresses
from hyperwall.dataplane.nft.hits import (
    Hits,
    attribution,
    default_key,
    read_hits,
    rule_counters,
)
from hyperwall.dataplane.nft.kernel import NftKernel
from hyperwall.dataplane.nft.readback import element
from hyperwall.dataplane.nft.render import Options, render_program
from hyperwall.dataplane.nft.table import policy_chain_name
from hyperwall.io.files import load_catalog

from .hwe_netns import nft_in_namespace


@pytest.fixture
def nft() -> Iterator[NftKernel]:
    with nft_in_namespace() as kernel:
        yield kernel


EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


@pytest.fixture(scope="module")
def programs() -> dict[str, HostProgram]:
    catalog = load_catalog([EXAMPLES])
    compiler = FleetCompiler(catalog.config, catalog.workloads.values())
    return {h: compiler.host_program(h) for h in ("hv1", "hv2")}


@pytest.mark.parametrize("host", ["hv1", "hv2"])
def test_every_decision_of_the_program_is_counted(
    programs: dict[str, HostProgram], host: str
) -> None:
    program = programs[host]
    state = render_program(program, Options())
    found = attribution(program, state, local_addresses(program))
    for chain in program.chains.values():
        rendered = state.chains[policy_chain_name(chain.name)]
        assert len(found.rules[rendered.name]) == len(rendered.rules)
    match_rules = {
        i.rule for c in program.chains.values() for i in c.items if isinstance(i, MatchRule)
    }
    folded = {
        e[8]
        for c in program.chains.values()
        for i in c.items
        if isinstance(i, LookupRule)
        for e in program.block_sets[i.block].elements
    }
    defaults = {default_key(ep.tenant) for ep in program.endpoints.values()}
    keys = found.keys()
    assert match_rules | defaults <= keys
    assert keys - match_rules - defaults <= folded
    assert any(isinstance(i, LookupRule) for c in program.chains.values() for i in c.items)
    # a folded rule whose elements are all clipped away on this host has nothing to count
    assert len(keys & folded) > 0


def _counted_rules(listing: dict[str, Any]) -> dict[str, list[bool]]:
    """Per chain, whether each of its rules has a counter."""
    out: dict[str, list[bool]] = {}
    for entry in listing["nftables"]:
        if "rule" in entry:
            expr = entry["rule"]["expr"]
            out.setdefault(entry["rule"]["chain"], []).append(any("counter" in s for s in expr))
    return out


@pytest.mark.kernel
def test_kernel_counters_are_attributed_to_their_rules(
    nft: NftKernel, programs: dict[str, HostProgram]
) -> None:
    backend = NftBackend(nft)
    backend.sync(programs["hv1"])
    assert backend.state is not None
    found = attribution(programs["hv1"], backend.state, backend.local)
    listing = nft.list_table()
    assert listing is not None
    assert read_hits(listing, found) == {}  # nothing hit yet
    rules = nft.list_rules()
    # the netlink dump has every rule of libnftables' listing, chain by chain, in order
    assert _counted_rules(rules) == _counted_rules(listing)
    counters, lookups = rule_counters(rules, found)
    assert counters == {}
    filled = {n for n, e in backend.state.elements.items() if n.startswith("k_") and e}
    assert set(lookups) == filled and set(lookups.values()) == {Hits()}
    # an element re-added with a count, as if connections had hit it 5 times
    name = sorted(n for n in filled if not backend.state.sets[n].interval)[0]
    raw = nft.list_set(name)["nftables"][1]["set"]["elem"][0]["elem"]["val"]
    text = " . ".join(str(part) for part in raw["concat"])
    nft.command(f"delete element inet hyperwall {name} {{ {text} }}")
    nft.command(f"add element inet hyperwall {name} {{ {text} counter packets 5 bytes 500 }}")
    spec = backend.state.sets[name]
    rule = found.elements[name][element(spec, {"elem": {"val": raw}})]
    assert read_hits(nft.list_set(name), found) == {rule: Hits(5, 500)}
    assert read_hits(nft.list_table() or {}, found) == {rule: Hits(5, 500)}
