"""The steady path's rendering (`NftBackend._step`) against a full render. Pure.

A policy chain renders one lookup per block set shape that holds elements, so a change that
empties or fills a shape must re-render the chains that look the block up, even when the
delta does not touch those chains. Block sets are clipped to the host's own addresses, so a
VM that comes, goes or changes address must re-render the blocks whose elements it falls in.
Whatever sequence of block contents and endpoints, the table the step leaves must equal
`render_program` of the new program: same sets, elements and chains.
"""

from __future__ import annotations

from typing import cast

from hypothesis import given, settings
from hypothesis import strategies as st

from hyperwall.compiler.delta import diff
from hyperwall.compiler.program import (
    BlockElement,
    BlockSet,
    Chain,
    Endpoint,
    HostProgram,
    LookupRule,
)
from hyperwall.dataplane.nft.backend import NftBackend
from hyperwall.dataplane.nft.blocks import local_addresses
from hyperwall.dataplane.nft.kernel_api import Kernel
from hyperwall.dataplane.nft.render import Options, render_program
from hyperwall.dataplane.nft.table import TableState

V4 = 0x0A000000
ANY4 = (0, 0xFFFFFFFF)

# Elements of different shapes: exact TCP (4e6), a source with any destination (4s17),
# a port range (4p), ICMP (4i), any protocol (4a).
CHOICES: tuple[BlockElement, ...] = (
    (4, V4 + 1, V4 + 1, V4 + 2, V4 + 2, 6, 80, 80, "r1"),
    (4, V4 + 3, V4 + 3, V4 + 2, V4 + 2, 6, 443, 443, "r1"),
    (4, V4 + 1, V4 + 1, *ANY4, 17, 53, 53, "r2"),
    (4, V4 + 1, V4 + 1, V4 + 2, V4 + 2, 6, 1000, 2000, "r2"),
    (4, V4 + 4, V4 + 7, V4 + 2, V4 + 2, 1, 8, 8, "r3"),
    (4, V4 + 9, V4 + 9, V4 + 2, V4 + 2, 0, 0, 0, "r3"),
)
blocks = st.frozensets(st.sampled_from(CHOICES), max_size=len(CHOICES))
# The host's endpoints' addresses: some of the addresses the elements name, or none.
ADDRESSES = tuple(f"10.0.0.{n}" for n in (1, 2, 3, 4, 5, 9))
local = st.frozensets(st.sampled_from(ADDRESSES), max_size=4)
IN, OUT = "b:in:t/p:r1", "b:out:t/q:r2"


def endpoints(addresses: frozenset[str]) -> dict[str, Endpoint]:
    out = {}
    for n, ip in enumerate(sorted(addresses)):
        key = f"t/vm{ip.rsplit('.', 1)[1]}/eth0"
        dispatch = ((), (), (), ("in:t/p",))
        out[key] = Endpoint(
            key,
            key[:-5],
            "eth0",
            "t",
            f"52:54:00:00:00:{n:02x}",
            (ip,),
            dispatch,
            ((), (), (), ("out:t/q",)),
            "drop",
            False,
        )
    return out


def program(
    first: frozenset[BlockElement],
    second: frozenset[BlockElement],
    two_chains: bool,
    addresses: frozenset[str] = frozenset(),
) -> HostProgram:
    block_sets = {IN: BlockSet(IN, first), OUT: BlockSet(OUT, second)}
    chains = {
        "in:t/p": Chain("in:t/p", (LookupRule(IN, "allow", ("r1",)),)),
        "out:t/q": Chain("out:t/q", (LookupRule(OUT, "drop", ("r2",)),)),
    }
    if two_chains:  # a second chain looking up the same block
        chains["in:t/r"] = Chain("in:t/r", (LookupRule(IN, "reject", ("r9",)),))
    return HostProgram("h1", {}, block_sets, chains, endpoints(addresses))


def comparable(state: TableState) -> tuple[object, ...]:
    return (
        state.sets,
        {n: frozenset(e) for n, e in state.elements.items()},
        {n: c.rules for n, c in state.chains.items()},
    )


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(blocks, blocks, st.booleans(), local), min_size=2, max_size=6),
    st.booleans(),
)
def test_step_equals_a_full_render(
    history: list[tuple[frozenset[BlockElement], frozenset[BlockElement], bool, frozenset[str]]],
    clip: bool,
) -> None:
    options = Options(clip=clip)
    backend = NftBackend(cast(Kernel, None), options)  # no kernel needed: no apply
    old = program(*history[0])
    backend.program, backend.state = old, render_program(old, options)
    backend.local = local_addresses(old) if clip else None
    for contents in history[1:]:
        new = program(*contents)
        step = backend._step(diff(old, new), new, local_addresses(new) if clip else None)
        assert comparable(step.commit()) == comparable(render_program(new, options))
        backend.program, backend.state, old = new, step.state, new
        backend.local = local_addresses(new) if clip else None


def test_only_shapes_with_elements_are_looked_up() -> None:
    exact = program(frozenset(CHOICES[:2]), frozenset(), False, frozenset({"10.0.0.2"}))
    state = render_program(exact, Options())
    chain = next(c for n, c in state.chains.items() if c.comment == "in:t/p")
    assert len(chain.rules) == 1 and chain.rules[0].count("@k_") == 1  # not 24 lookups
    assert '_4e6"' in chain.rules[0]  # the exact TCP hash set
    empty = next(c for n, c in state.chains.items() if c.comment == "out:t/q")
    assert empty.rules == ()


def test_blocks_hold_only_the_hosts_own_addresses() -> None:
    """An `in` block keeps the elements whose destination is a local VM, clipped to it; an
    `out` block those whose source is."""
    elements = frozenset(
        [
            (4, V4 + 1, V4 + 1, V4 + 2, V4 + 3, 6, 80, 80, "r1"),  # to .2-.3: .2 is local
            (4, V4 + 1, V4 + 1, V4 + 7, V4 + 7, 6, 81, 81, "r1"),  # to .7: not here
            (4, V4 + 1, V4 + 1, *ANY4, 6, 82, 82, "r1"),  # to any: kept as it is
        ]
    )
    prog = program(elements, elements, False, frozenset({"10.0.0.2", "10.0.0.9"}))
    state = render_program(prog, Options())
    inbound = {e for n, v in state.elements.items() if n.endswith("_4e6") for e in v}
    assert (V4 + 1, V4 + 1, V4 + 2, V4 + 2, 6, 80, 80) in inbound
    assert all(e[2] != V4 + 3 and e[2] != V4 + 7 for e in inbound)
    assert any(n.endswith("_4s6") and v for n, v in state.elements.items())
    unclipped = render_program(prog, Options(clip=False))
    assert sum(map(len, unclipped.elements.values())) > sum(map(len, state.elements.values()))
