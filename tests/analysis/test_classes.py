"""Equivalence classes (`hyperwall.analysis.classes`) against brute force on small ranges."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from hyperwall.analysis.classes import (
    cut_points,
    distinct_pair,
    intersect,
    outside,
    point_outside,
    points_within,
    split,
    subtract,
    without,
)
from hyperwall.compiler.intervals import Interval, merge

TOP = 40


@st.composite
def interval_lists(draw: st.DrawFn) -> tuple[Interval, ...]:
    pairs = draw(st.lists(st.tuples(st.integers(0, TOP), st.integers(0, 6)), max_size=4))
    return merge((low, min(TOP, low + width)) for low, width in pairs)


def members(intervals: tuple[Interval, ...]) -> set[int]:
    return {v for low, high in intervals for v in range(low, high + 1)}


@given(st.lists(interval_lists(), max_size=4), interval_lists())
def test_classes_cover_the_target_and_are_uniform(
    sets: list[tuple[Interval, ...]], target: tuple[Interval, ...]
) -> None:
    classes = split(target, cut_points(sets))
    covered = [v for low, high in classes for v in range(low, high + 1)]
    assert covered == sorted(members(target))  # a partition, in order
    for low, high in classes:
        for s in sets:
            inside = members(s)
            assert len({v in inside for v in range(low, high + 1)}) == 1


@given(interval_lists(), interval_lists())
def test_intersect_and_subtract(a: tuple[Interval, ...], b: tuple[Interval, ...]) -> None:
    assert members(intersect(a, b)) == members(a) & members(b)
    assert members(subtract(a, b)) == members(a) - members(b)
    assert subtract(a, b) == merge(subtract(a, b))


@given(interval_lists(), st.integers(0, TOP + 1))
def test_without_one_value_is_subtract(a: tuple[Interval, ...], x: int) -> None:
    assert without(a, x) == subtract(a, ((x, x),))


@given(
    interval_lists(), st.lists(st.integers(0, TOP), unique=True), st.none() | st.integers(0, TOP)
)
def test_points(a: tuple[Interval, ...], taken: list[int], avoid: int | None) -> None:
    taken.sort()
    free = members(a) - set(taken) - {avoid}
    assert point_outside(a, taken, avoid) == (min(free) if free else None)
    assert points_within(a, taken) == sorted(members(a) & set(taken))
    assert members(outside(a, taken)) == members(a) - set(taken)
    assert outside(a, taken) == merge(outside(a, taken))


@given(interval_lists(), interval_lists(), st.lists(st.integers(0, TOP), unique=True))
def test_distinct_pair(a: tuple[Interval, ...], b: tuple[Interval, ...], taken: list[int]) -> None:
    taken.sort()
    free_a, free_b = members(a) - set(taken), members(b) - set(taken)
    possible = any(x != y for x in free_a for y in free_b)
    found = distinct_pair(a, b, taken)
    assert (found is not None) == possible
    if found is not None:
        assert found[0] in free_a and found[1] in free_b and found[0] != found[1]
