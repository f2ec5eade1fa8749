"""The steady path's rendering (`NftBackend._step`) against a full render. Pure.

A policy chain renders one lookup per block set shape that holds elements, so a change that
empties or fills a shape must re-render the chains that look the block up, even when the
delta does not touch those chains. Whatever sequence of block contents, the table the step
leaves must equal `render_program` of the new program: same sets, elements and chains.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from hyperwall.compiler.delta import diff
from hyperwall.compiler.program import BlockElement, BlockSet, Chain, HostProgram, LookupRule
from hyperwall.dataplane.nft.backend import NftBackend
from hyperwall.dataplane.nft.render import Options, TableState, render_program

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


def program(
    first: frozenset[BlockElement], second: frozenset[BlockElement], two_chains: bool
) -> HostProgram:
    block_sets = {"b1": BlockSet("b1", first), "b2": BlockSet("b2", second)}
    chains = {
        "in:t/p": Chain("in:t/p", (LookupRule("b1", "allow", ("r1",)),)),
        "out:t/q": Chain("out:t/q", (LookupRule("b2", "drop", ("r2",)),)),
    }
    if two_chains:  # a second chain looking up the same block
        chains["in:t/r"] = Chain("in:t/r", (LookupRule("b1", "reject", ("r9",)),))
    return HostProgram("h1", {}, block_sets, chains, {})


def comparable(state: TableState) -> tuple[object, ...]:
    return (
        state.sets,
        {n: frozenset(e) for n, e in state.elements.items()},
        {n: c.rules for n, c in state.chains.items()},
    )


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(blocks, blocks, st.booleans()), min_size=2, max_size=6))
def test_step_equals_a_full_render(
    history: list[tuple[frozenset[BlockElement], frozenset[BlockElement], bool]],
) -> None:
    options = Options()
    backend = NftBackend(options=options)  # its client is never used: no apply
    old = program(*history[0])
    backend.program, backend.state = old, render_program(old, options)
    for contents in history[1:]:
        new = program(*contents)
        step = backend._step(diff(old, new), new)
        assert comparable(step.commit()) == comparable(render_program(new, options))
        backend.program, backend.state, old = new, step.state, new


def test_only_shapes_with_elements_are_looked_up() -> None:
    exact = program(frozenset(CHOICES[:2]), frozenset(), False)
    state = render_program(exact, Options())
    chain = next(c for n, c in state.chains.items() if c.comment == "in:t/p")
    assert len(chain.rules) == 1 and chain.rules[0].count("@k_") == 1  # not 24 lookups
    assert '_4e6"' in chain.rules[0]  # the exact TCP hash set
    empty = next(c for n, c in state.chains.items() if c.comment == "out:t/q")
    assert empty.rules == ()
