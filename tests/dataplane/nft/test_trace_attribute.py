"""`nft.trace_attribute`: kernel trace events back to the rule ids `trace` prints.

Pure: the examples' programs rendered as the backend renders them; event sequences shaped
as the kernel sends them (the lab test `tests/e2e/test_live_trace.py` checks the real ones).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from hyperwall.compiler.fleet import FleetCompiler
from hyperwall.compiler.program import Chain, HostProgram, LookupRule, MatchRule
from hyperwall.dataplane.nft.hits import attribution
from hyperwall.dataplane.nft.policy_chains import render_policy_chain
from hyperwall.dataplane.nft.render import Options, render_program
from hyperwall.dataplane.nft.table import SHAPES, TableState, block_set_name, policy_chain_name
from hyperwall.dataplane.nft.trace_attribute import (
    attribute,
    decided,
    first_packet,
    rule_of,
)
from hyperwall.dataplane.nft.trace_netlink import TraceEvent
from hyperwall.evaluator.packet import Packet
from hyperwall.io.files import load_catalog

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


@pytest.fixture(scope="module")
def programs() -> dict[str, tuple[HostProgram, TableState]]:
    catalog = load_catalog([EXAMPLES])
    compiler = FleetCompiler(catalog.config, catalog.workloads.values())
    out = {}
    for host in ("hv1", "hv2"):
        program = compiler.host_program(host)
        out[host] = (program, render_program(program, Options()))
    return out


def test_every_position_maps_to_its_item(
    programs: dict[str, tuple[HostProgram, TableState]],
) -> None:
    """Each rendered rule of each policy chain of the examples, given its position in the
    kernel, names the rule of the item it renders (a block lookup: one of the block's)."""
    packet = Packet("10.1.0.21", "10.1.0.41", 6, 40000, 5432)
    lookups = 0
    for program, state in programs.values():
        table = attribution(program, state, None)
        for chain in program.chains.values():
            name = policy_chain_name(chain.name)
            rendered = render_policy_chain(chain, _shapes(state))[0].rules
            handles = list(range(100, 100 + len(rendered)))
            assert len(handles) == len(state.chains[name].rules)
            position = 0
            for item in chain.items:
                alone = render_policy_chain(Chain(chain.name, (item,)), _shapes(state))[0]
                for handle in handles[position : position + len(alone.rules)]:
                    got = rule_of(table, program, name, handle, handles, packet)
                    if isinstance(item, MatchRule):
                        assert got == item.rule
                    else:
                        assert isinstance(item, LookupRule) and got in item.rules
                        lookups += 1
                position += len(alone.rules)
            # one rule more or less in the kernel: nothing can be mapped
            assert rule_of(table, program, name, 100, [*handles, 999], packet).startswith("kernel:")
    assert lookups  # the examples fold some rules into block lookups


def _shapes(state: TableState) -> Callable[[str], frozenset[str]]:
    return lambda block: frozenset(
        s for s in SHAPES if state.elements.get(block_set_name(block, s))
    )


def _chain_of(program: HostProgram, state: TableState, rule: str) -> tuple[str, int]:
    """The nft chain and position of the first rendered rule of policy rule `rule`."""
    for chain in program.chains.values():
        position = 0
        for item in chain.items:
            if isinstance(item, MatchRule) and item.rule == rule:
                return policy_chain_name(chain.name), position
            alone = render_policy_chain(Chain(chain.name, (item,)), _shapes(state))[0]
            position += len(alone.rules)
    raise AssertionError(rule)


def _ev(chain: str, verdict: str | None, target: str | None = None, handle: int = 1) -> TraceEvent:
    return TraceEvent(42, "rule", "hyperwall", chain, handle, verdict, target)


def test_a_logged_allow_at_each_end_and_a_pass(
    programs: dict[str, tuple[HostProgram, TableState]],
) -> None:
    program, state = programs["hv1"]
    chain, position = _chain_of(program, state, "acme/shop/app-to-db")
    size = len(state.chains[chain].rules)
    handles = {chain: list(range(10, 10 + size))}
    packet = Packet("10.1.0.31", "10.1.0.41", 6, 40000, 5432)
    events = [
        TraceEvent(41, "rule", "hyperwall_trace", "lt_x", 1, "continue"),  # our trace rule
        _ev("forward", "jump", "d_a"),
        _ev("d_a", "jump", "t_a"),
        _ev("t_a", "jump", "p_pass"),
        _ev("p_pass", "return"),  # a pass: no decision
        _ev("t_a", "return"),
        _ev("d_a", "jump", "t_b"),
        _ev("t_b", "jump", chain),
        _ev(chain, "goto", "l_x", handle=10 + position),
        _ev("l_x", "continue"),
        _ev("l_x", "goto", "to_vm"),
        _ev("to_vm", "jump", "d_b"),
        _ev("d_b", "jump", "t_c"),
        _ev("t_c", "jump", chain),
        _ev(chain, "accept", handle=10 + position),
        TraceEvent(43, "rule", "hyperwall", "forward", 2, "goto", "established"),  # a later packet
    ]
    assert decided(events[-2])
    assert [e.id for e in first_packet(events)] == [42] * 14
    hits = attribute(events, program, state, handles, packet)
    assert [(h.end, h.verdict, h.rule) for h in hits] == [
        ("egress", "allow", "acme/shop/app-to-db"),
        ("ingress", "allow", "acme/shop/app-to-db"),
    ]


def test_default_reject_spoofed_and_a_changed_chain(
    programs: dict[str, tuple[HostProgram, TableState]],
) -> None:
    program, state = programs["hv1"]
    packet = Packet("10.1.0.21", "10.1.0.41", 6, 40000, 5432)
    default = [_ev("forward", "goto", "to_vm"), _ev("to_vm", "jump", "d_b"), _ev("d_b", "drop")]
    assert [(h.end, h.verdict, h.rule) for h in attribute(default, program, state, {}, packet)] == [
        ("ingress", "drop", "default")
    ]
    spoofed = [_ev("forward", "goto", "spoofed"), _ev("spoofed", "drop")]
    assert [(h.end, h.rule) for h in attribute(spoofed, program, state, {}, packet)] == [
        ("egress", "anti-spoofing")
    ]
    chain, position = _chain_of(program, state, "acme/shop/web-to-db")
    size = len(state.chains[chain].rules)
    rejected = [
        _ev("forward", "jump", "d_a"),
        _ev("d_a", "jump", "t_a"),
        _ev("t_a", "jump", chain),
        _ev(chain, "jump", "reject", handle=position),
        _ev("reject", "drop"),
    ]
    good = {chain: list(range(size))}
    hits = attribute(rejected, program, state, good, packet)
    assert [(h.verdict, h.rule) for h in hits] == [("reject", "acme/shop/web-to-db")]
    short = {chain: list(range(size - 1)) if position < size - 1 else list(range(1, size))}
    hits = attribute(rejected, program, state, short, packet)
    assert hits[0].rule.startswith(f"kernel:{chain}#")
