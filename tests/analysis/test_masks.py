"""Decisions as masks (`hyperwall.analysis.masks`): against `decisions.decide` on every
workload address and port of small random boxes (tiers, `pass`, port lists, any-protocol)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from hyperwall.analysis.decisions import Box, decide
from hyperwall.analysis.masks import AddressBits, allowed_pieces, positions
from hyperwall.compiler.intervals import contains, merge
from hyperwall.policy.model import Action, Verdict

ADDRESSES = 24
PORTS = 12
SPACE = {6: ((1, PORTS),), 17: ((1, PORTS),)}

intervals = st.lists(
    st.tuples(st.integers(0, ADDRESSES - 1), st.integers(0, 5)).map(lambda t: (t[0], t[0] + t[1])),
    min_size=1,
    max_size=3,
).map(lambda found: merge(found))
port_lists = st.none() | st.lists(
    st.tuples(st.sampled_from([0, 6, 17]), st.integers(0, PORTS), st.integers(0, 3)).map(
        lambda t: (t[0], t[1], t[1] + t[2])
    ),
    min_size=1,
    max_size=3,
).map(tuple)
actions: st.SearchStrategy[Action] = st.sampled_from(["allow", "drop", "reject", "pass"])


@st.composite
def box_lists(draw: st.DrawFn) -> list[Box]:
    found = []
    for i in range(draw(st.integers(0, 7))):
        tier = draw(st.integers(0, 2))
        found.append(
            (tier, i, Box(tier, draw(actions), f"r{i}", draw(intervals), draw(port_lists)))
        )
    return [b for _, _, b in sorted(found, key=lambda t: (t[0], t[1]))]


@settings(max_examples=300, deadline=None)
@given(
    boxes=box_lists(),
    default=st.sampled_from(["allow", "drop"]),
    taken=st.sets(st.integers(0, ADDRESSES + 4), min_size=1).map(sorted),
    restrict=st.integers(0, 2**ADDRESSES),
)
def test_pieces_agree_with_first_match_per_address_and_port(
    boxes: list[Box], default: Verdict, taken: list[int], restrict: int
) -> None:
    bits = AddressBits(taken)
    universe = restrict & ((1 << len(taken)) - 1)
    pieces = allowed_pieces(boxes, default, SPACE, bits, universe)
    for proto, ((low, high),) in SPACE.items():
        for port in range(low, high + 1):
            for i, address in enumerate(taken):
                holding = [
                    p
                    for p in pieces
                    if p.proto == proto and p.low <= port <= p.high and p.mask >> i & 1
                ]
                if not universe >> i & 1:
                    assert holding == []
                    continue
                verdict, rule = decide(
                    [b for b in boxes if contains(b.other, address)], proto, port, default
                )
                if verdict == "allow":
                    assert [p.rule for p in holding] == [rule], (proto, port, address)
                else:
                    assert holding == [], (proto, port, address)


def test_a_mask_is_the_positions_of_the_addresses_inside() -> None:
    bits = AddressBits([3, 5, 9, 10, 40])
    assert bits.mask(((4, 10),)) == 0b1110
    assert bits.mask(((0, 2), (41, 50))) == 0
    assert bits.mask(((0, 100),)) == 0b11111
    assert bits.bit(40) == 0b10000


@given(st.sets(st.integers(0, 3000)))
def test_positions_are_the_set_bits(found: set[int]) -> None:
    assert positions(sum(1 << i for i in found)) == sorted(found)
