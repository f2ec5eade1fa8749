"""Tests for `hyperwall.compiler.intervals`: address sets as merged integer intervals.

Checks `merge`, `contains`, `split_families`, `address_interval` and `format_interval` on
hand-picked cases, and with hypothesis that `merge` covers exactly the integers its input
covers, in sorted, disjoint, non-adjacent intervals.
"""

from __future__ import annotations

import ipaddress
from itertools import pairwise

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hyperwall.compiler.intervals import (
    FULL_V4,
    FULL_V6,
    V4_MAX,
    V6_MAX,
    Interval,
    address_interval,
    contains,
    format_interval,
    merge,
    split_families,
)


def v4(text: str) -> int:
    return int(ipaddress.IPv4Address(text))


def v6(text: str) -> int:
    return int(ipaddress.IPv6Address(text))


# --- merge -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given_intervals", "merged"),
    [
        ([], ()),
        ([(5, 5)], ((5, 5),)),
        ([(5, 9), (1, 3)], ((1, 3), (5, 9))),  # sorted
        ([(1, 3), (4, 6)], ((1, 6),)),  # adjacent: merged
        ([(1, 3), (5, 6)], ((1, 3), (5, 6))),  # a gap of one: kept apart
        ([(1, 10), (2, 3)], ((1, 10),)),  # contained
        ([(1, 5), (3, 8)], ((1, 8),)),  # overlapping
        ([(3, 8), (1, 5), (8, 12), (20, 20), (13, 13)], ((1, 13), (20, 20))),
        ([(2, 2), (2, 2)], ((2, 2),)),  # duplicates
        ([(0, V4_MAX), (7, 9)], FULL_V4),
        ([(0, 0), (V6_MAX, V6_MAX)], ((0, 0), (V6_MAX, V6_MAX))),
    ],
)
def test_merge(given_intervals: list[Interval], merged: tuple[Interval, ...]) -> None:
    assert merge(given_intervals) == merged


def test_merge_accepts_any_iterable() -> None:
    assert merge(iter([(4, 6), (1, 3)])) == ((1, 6),)


def covered(intervals: list[Interval] | tuple[Interval, ...]) -> set[int]:
    return {n for low, high in intervals for n in range(low, high + 1)}


small_intervals = st.lists(
    st.tuples(st.integers(0, 60), st.integers(0, 12)).map(lambda t: (t[0], t[0] + t[1])),
    max_size=12,
)


@given(small_intervals)
def test_merge_covers_exactly_the_same_integers(intervals: list[Interval]) -> None:
    merged = merge(intervals)
    assert covered(merged) == covered(intervals)
    for low, high in merged:
        assert low <= high
    for (_, high), (low, _) in pairwise(merged):
        assert high + 1 < low  # sorted, disjoint and not adjacent


@given(small_intervals, st.integers(-2, 80))
def test_contains_agrees_with_brute_force(intervals: list[Interval], value: int) -> None:
    assert contains(merge(intervals), value) == (value in covered(intervals))


@given(small_intervals)
def test_merge_is_idempotent(intervals: list[Interval]) -> None:
    assert merge(merge(intervals)) == merge(intervals)


# --- contains ----------------------------------------------------------------------------


def test_contains_at_the_edges() -> None:
    intervals = ((10, 20), (30, 30), (40, 50))
    for inside in (10, 15, 20, 30, 40, 50):
        assert contains(intervals, inside)
    for outside in (0, 9, 21, 29, 31, 39, 51, V6_MAX):
        assert not contains(intervals, outside)


def test_contains_on_empty_and_full_sets() -> None:
    assert not contains((), 0)
    assert contains(FULL_V4, 0)
    assert contains(FULL_V4, V4_MAX)
    assert contains(FULL_V6, V6_MAX)
    assert not contains(FULL_V4, V4_MAX + 1)


# --- addresses ---------------------------------------------------------------------------


def test_address_interval() -> None:
    assert address_interval("10.0.0.0/8") == (4, (v4("10.0.0.0"), v4("10.255.255.255")))
    assert address_interval("10.1.2.3") == (4, (v4("10.1.2.3"), v4("10.1.2.3")))
    assert address_interval("192.0.2.10/32") == (4, (v4("192.0.2.10"), v4("192.0.2.10")))
    assert address_interval("0.0.0.0/0") == (4, FULL_V4[0])
    assert address_interval("::/0") == (6, FULL_V6[0])
    assert address_interval("fd00:1::/64") == (
        6,
        (v6("fd00:1::"), v6("fd00:1::ffff:ffff:ffff:ffff")),
    )
    assert address_interval("fd00::53") == (6, (v6("fd00::53"), v6("fd00::53")))


def test_split_families() -> None:
    found = split_families(
        ["10.0.0.2", "fd00::1", "10.0.0.1", "10.0.0.0/31", "192.0.2.0/24", "fd00::/127"]
    )
    assert found == (
        ((v4("10.0.0.0"), v4("10.0.0.2")), (v4("192.0.2.0"), v4("192.0.2.255"))),
        ((v6("fd00::"), v6("fd00::1")),),
    )


def test_split_families_of_nothing_and_of_one_family() -> None:
    assert split_families([]) == ((), ())
    assert split_families(["2001:db8::/32"])[0] == ()
    assert split_families(["198.51.100.0/24"])[1] == ()


def test_ipv4_and_ipv6_numbers_do_not_mix() -> None:
    # ::a00:1 has the same integer value as 10.0.0.1 but belongs to the other family
    v4s, v6s = split_families(["10.0.0.1", "::a00:1"])
    assert v4s == v6s == ((v4("10.0.0.1"), v4("10.0.0.1")),)
    assert split_families(["10.0.0.1"])[1] == ()


# --- format_interval ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("family", "interval", "text"),
    [
        (4, (v4("10.0.0.1"), v4("10.0.0.1")), "10.0.0.1"),
        (4, (v4("10.0.0.0"), v4("10.255.255.255")), "10.0.0.0/8"),
        (4, (v4("10.0.0.0"), v4("10.0.0.1")), "10.0.0.0/31"),
        (4, (v4("10.0.0.1"), v4("10.0.0.2")), "10.0.0.1-10.0.0.2"),
        (4, (v4("10.0.0.0"), v4("10.0.0.2")), "10.0.0.0-10.0.0.2"),
        (4, FULL_V4[0], "0.0.0.0/0"),
        (6, (v6("fd00::53"), v6("fd00::53")), "fd00::53"),
        (6, (v6("fd00:1::"), v6("fd00:1::ffff:ffff:ffff:ffff")), "fd00:1::/64"),
        (6, (v6("fd00::1"), v6("fd00::2")), "fd00::1-fd00::2"),
        (6, FULL_V6[0], "::/0"),
    ],
)
def test_format_interval(family: int, interval: Interval, text: str) -> None:
    assert format_interval(family, interval) == text


@given(st.integers(0, V4_MAX), st.integers(0, 2**12))
def test_format_interval_round_trips_through_address_interval(low: int, width: int) -> None:
    high = min(low + width, V4_MAX)
    text = format_interval(4, (low, high))
    if "-" in text:
        first, last = text.split("-")
        assert (v4(first), v4(last)) == (low, high)
    else:
        assert address_interval(text) == (4, (low, high))
