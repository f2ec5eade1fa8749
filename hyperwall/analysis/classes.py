"""Equivalence classes: a target set of addresses (or ports) cut at every boundary in play.

Two addresses in one class lie in exactly the same of the given interval sets, so every rule
that looks only at those sets decides them alike: checking one representative per class is
checking every member. Pure; the checker (`analysis.assertions`) and `reach` use it.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Sequence

from hyperwall.compiler.intervals import V6_MAX, Interval, merge


def cut_points(interval_sets: Iterable[Iterable[Interval]]) -> list[int]:
    """Every boundary of `interval_sets`: each interval (low, high) cuts before low and after
    high. Sorted, without repeats."""
    points: set[int] = set()
    for intervals in interval_sets:
        for low, high in intervals:
            points.add(low)
            points.add(high + 1)
    return sorted(points)


def split(target: Sequence[Interval], cuts: Sequence[int]) -> list[Interval]:
    """The pieces of the sorted, merged `target` intervals cut at `cuts` (sorted)."""
    out: list[Interval] = []
    for low, high in target:
        pos = low
        for i in range(bisect_right(cuts, low), bisect_left(cuts, high + 1)):
            out.append((pos, cuts[i] - 1))
            pos = cuts[i]
        out.append((pos, high))
    return out


def intersect(a: Sequence[Interval], b: Sequence[Interval]) -> tuple[Interval, ...]:
    """The intersection of two sorted, merged interval lists."""
    out: list[Interval] = []
    i = j = 0
    while i < len(a) and j < len(b):
        low, high = max(a[i][0], b[j][0]), min(a[i][1], b[j][1])
        if low <= high:
            out.append((low, high))
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return tuple(out)


def subtract(a: Sequence[Interval], b: Sequence[Interval]) -> tuple[Interval, ...]:
    """`a` without `b` (both sorted and merged)."""
    out: list[Interval] = []
    j = 0
    for low, high in a:
        pos = low
        while j < len(b) and b[j][1] < pos:
            j += 1
        k = j
        while k < len(b) and b[k][0] <= high:
            if b[k][0] > pos:
                out.append((pos, b[k][0] - 1))
            pos = max(pos, b[k][1] + 1)
            k += 1
        if pos <= high:
            out.append((pos, high))
    return merge(out)


def without(intervals: tuple[Interval, ...], x: int) -> tuple[Interval, ...]:
    """`intervals` (sorted, merged) without the single value `x`: `subtract(intervals,
    ((x, x),))` by bisection, with no pass over the other intervals."""
    i = bisect_right(intervals, (x, V6_MAX + 1)) - 1
    if i < 0 or intervals[i][1] < x:
        return intervals
    low, high = intervals[i]
    pieces = tuple(p for p in ((low, x - 1), (x + 1, high)) if p[0] <= p[1])
    return intervals[:i] + pieces + intervals[i + 1 :]


def point_outside(
    intervals: Sequence[Interval], taken: Sequence[int], avoid: int | None = None
) -> int | None:
    """The lowest value in `intervals` that is not in the sorted `taken` and is not `avoid`;
    None if there is none."""
    for low, high in intervals:
        value = low
        i = bisect_left(taken, value)
        while value <= high:
            if i < len(taken) and taken[i] == value:
                value += 1
                i += 1
            elif value == avoid:
                value += 1
            else:
                return value
    return None


def outside(intervals: Sequence[Interval], points: Sequence[int]) -> tuple[Interval, ...]:
    """`intervals` (sorted, merged) without the sorted `points`."""
    out: list[Interval] = []
    for low, high in intervals:
        pos = low
        for point in points[bisect_left(points, low) : bisect_right(points, high)]:
            if point > pos:
                out.append((pos, point - 1))
            pos = point + 1
        if pos <= high:
            out.append((pos, high))
    return tuple(out)


def points_within(intervals: Sequence[Interval], points: Sequence[int]) -> list[int]:
    """The sorted `points` that lie in `intervals`."""
    out: list[int] = []
    for low, high in intervals:
        out.extend(points[bisect_left(points, low) : bisect_right(points, high)])
    return out


def distinct_pair(
    sources: Sequence[Interval], targets: Sequence[Interval], taken: Sequence[int]
) -> tuple[int, int] | None:
    """Two different values, one in `sources` and one in `targets`, neither in `taken`;
    None if there are none."""
    s = point_outside(sources, taken)
    d = None if s is None else point_outside(targets, taken, avoid=s)
    if d is None:
        d = point_outside(targets, taken)
        s = None if d is None else point_outside(sources, taken, avoid=d)
    return None if s is None or d is None else (s, d)
