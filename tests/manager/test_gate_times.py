"""The gate's duration histogram: each bucket counts the observations at or below its bound."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from hyperwall.manager.gate_times import BUCKETS, GateTimes


@given(st.lists(st.floats(min_value=0, max_value=30, allow_nan=False), max_size=40))
def test_cumulative_buckets_count_what_lies_at_or_below_each_bound(values: list[float]) -> None:
    times = GateTimes()
    for v in values:
        times.observe(v, 2)
    found = times.cumulative()
    assert [bound for bound, _ in found] == [*map(str, BUCKETS), "+Inf"]
    for (_, n), bound in zip(found, (*BUCKETS, float("inf")), strict=True):
        assert n == sum(1 for v in values if v <= bound)
    assert times.count == len(values)
    assert times.checked == 2 * len(values)
    assert abs(times.total - sum(values)) < 1e-6
