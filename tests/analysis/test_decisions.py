"""`decisions.runs` (the classes of a whole address family, as `Decider` builds them)
against the general sweep `segments` and against brute force over a small space; a
`Decider` patched where boxes' addresses moved (`Decider.patched`) against one built
afresh from the new boxes."""

from __future__ import annotations

from bisect import bisect_right
from itertools import pairwise

from hypothesis import given
from hypothesis import strategies as st

from hyperwall.analysis.decisions import (
    FULL,
    Box,
    Decider,
    RuleBox,
    flips,
    own_boxes,
    own_cuts,
    runs,
    segments,
)
from hyperwall.compiler.intervals import Interval, merge
from hyperwall.policy.model import Action, Verdict

SPAN: Interval = (0, 63)

intervals = st.lists(
    st.tuples(st.integers(0, 63), st.integers(0, 63)).map(lambda t: (min(t), max(t))),
    max_size=4,
).map(lambda found: merge(found))
boxes = st.lists(intervals, max_size=6).map(
    lambda others: [Box(0, "allow", f"r{i}", other, None) for i, other in enumerate(others)]
)


@given(boxes)
def test_runs_are_the_classes_of_the_sweep(found: list[Box]) -> None:
    lows, highs, masks = runs(found, SPAN)
    assert list(zip(zip(lows, highs, strict=True), masks, strict=True)) == list(
        segments(found, (SPAN,))
    )


@given(boxes)
def test_runs_partition_the_span_into_maximal_uniform_classes(found: list[Box]) -> None:
    lows, highs, masks = runs(found, SPAN)
    result = list(zip(zip(lows, highs, strict=True), masks, strict=True))
    assert result[0][0][0] == SPAN[0] and result[-1][0][1] == SPAN[1]
    for ((_, high), mask), ((low, _), next_mask) in pairwise(result):
        assert low == high + 1 and mask != next_mask
    for (low, high), mask in result:
        for address in range(low, high + 1):
            inside = sum(
                1 << i
                for i, box in enumerate(found)
                if any(a <= address <= b for a, b in box.other)
            )
            assert inside == mask


ACTIONS: list[Action] = ["allow", "drop", "pass"]
DEFAULTS: list[Verdict] = ["allow", "drop"]
ports = st.one_of(
    st.none(),
    st.tuples(st.integers(1, 20), st.integers(1, 20)).map(lambda t: ((6, min(t), max(t)),)),
)
rule_boxes = st.lists(
    st.tuples(st.integers(0, 2), st.sampled_from(ACTIONS), intervals, ports),
    max_size=6,
).map(
    lambda found: [
        Box(tier, action, f"r{i}", other, p) for i, (tier, action, other, p) in enumerate(found)
    ]
)
SPACE = {6: ((1, 30),), 17: ((1, 30),)}


@given(rule_boxes, st.data(), st.booleans(), st.sampled_from(DEFAULTS))
def test_a_patched_decider_equals_one_built_from_the_new_boxes(
    old: list[Box], data: st.DataObject, warm: bool, default: Verdict
) -> None:
    new = [
        Box(b.tier, b.action, b.rule, data.draw(intervals), b.ports)
        if data.draw(st.booleans())
        else b
        for b in old
    ]
    decider = Decider(old, default, 4)
    if warm:  # swept and decided before the patch (as a kept decider is)
        list(decider.cells((SPAN,), SPACE))
    patched = decider.patched(new)
    assert patched is not None
    fresh = Decider(new, default, 4)
    assert patched.swept == fresh.swept == runs(new, FULL[4][0])
    assert list(patched.cells((SPAN,), SPACE)) == list(fresh.cells((SPAN,), SPACE))
    # the old decider is untouched (other endpoints may still run it)
    assert decider.swept == runs(old, FULL[4][0])
    again = Decider(old, default, 4)
    assert list(decider.cells((SPAN,), SPACE)) == list(again.cells((SPAN,), SPACE))


@given(rule_boxes.filter(bool), st.data())
def test_a_decider_is_not_patched_across_a_change_of_rule_tier_action_or_ports(
    old: list[Box], data: st.DataObject
) -> None:
    i = data.draw(st.integers(0, len(old) - 1))
    b = old[i]
    changed = data.draw(
        st.sampled_from(
            [
                Box(b.tier + 1, b.action, b.rule, b.other, b.ports),
                Box(b.tier, "drop" if b.action == "allow" else "allow", b.rule, b.other, b.ports),
                Box(b.tier, b.action, b.rule + "x", b.other, b.ports),
                Box(b.tier, b.action, b.rule, b.other, ((17, 1, 1),)),
            ]
        )
    )
    assert Decider(old, "drop", 4).patched([*old[:i], changed, *old[i + 1 :]]) is None
    assert Decider(old, "drop", 4).patched(old[:-1]) is None


@given(st.lists(intervals, min_size=1, max_size=3), st.data())
def test_flips_are_the_symmetric_differences_of_the_moved_boxes(
    shared: list[tuple[Interval, ...]], data: st.DataObject
) -> None:
    # long other-end tuples that differ in a few intervals, as a label change moves them
    base = merge(
        [(64 * k + low, 64 * k + high) for k, found in enumerate(shared) for low, high in found]
    )
    old = [Box(0, "allow", f"r{i}", base, None) for i in range(3)]
    new = [
        Box(0, "allow", b.rule, merge([*b.other, *data.draw(intervals)]), None)
        if data.draw(st.booleans())
        else b
        for b in old
    ]
    found = flips(old, new)
    assert found is not None
    for i, (a, b) in enumerate(zip(old, new, strict=True)):
        flipped = {x for (low, high), bit in found if bit == 1 << i for x in range(low, high + 1)}
        inside = {x for low, high in a.other for x in range(low, high + 1)}
        assert flipped == inside ^ {x for low, high in b.other for x in range(low, high + 1)}


@given(
    st.lists(st.one_of(st.none(), intervals), max_size=6), st.integers(0, 70), st.integers(0, 70)
)
def test_own_addresses_between_the_same_own_cuts_select_the_same_boxes(
    owns: list[tuple[Interval, ...] | None], a: int, b: int
) -> None:
    chain = [RuleBox("allow", f"r{i}", own, ((0, 9),), None) for i, own in enumerate(owns)]
    cuts = own_cuts(chain)
    if bisect_right(cuts, a) == bisect_right(cuts, b):
        assert own_boxes(chain, a) == own_boxes(chain, b)
    assert own_boxes(chain, a) == tuple(
        rb for rb in chain if rb.own is None or any(lo <= a <= hi for lo, hi in rb.own)
    )
