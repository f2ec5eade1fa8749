"""`decisions.runs` (the classes of a whole address family, as `Decider` builds them)
against the general sweep `segments` and against brute force over a small space."""

from __future__ import annotations

from itertools import pairwise

from hypothesis import given
from hypothesis import strategies as st

from hyperwall.analysis.decisions import Box, runs, segments
from hyperwall.compiler.intervals import Interval, merge

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
