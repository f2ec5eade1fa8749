"""Snapshot and delta: applying the delta to the pre-copy gives the source's final state."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given
from hypothesis import strategies as st

from hyperwall.dataplane.conntrack.entry import Entry
from hyperwall.dataplane.conntrack.transfer import apply, delta, snapshot
from tests.dataplane.conntrack.strategies import entries


@given(st.lists(entries(), max_size=15), st.lists(entries(), max_size=15), st.data())
def test_delta_brings_the_copy_to_the_source(
    old: list[Entry], new: list[Entry], data: st.DataObject
) -> None:
    before = snapshot(old)
    # The source's later state: some entries gone, some counted down, some changed, new ones.
    kept = [e for e in before.values() if data.draw(st.booleans())]
    aged = [replace(e, timeout=max(0, e.timeout - data.draw(st.integers(0, 5)))) for e in kept]
    after = snapshot([*aged, *new])
    result = apply(before, delta(before, after))
    assert result.keys() == after.keys()
    for key, entry in result.items():
        assert replace(entry, timeout=0) == replace(after[key], timeout=0)
        assert entry.timeout >= after[key].timeout


def test_counting_down_is_no_change_a_refresh_is(sample: Entry | None = None) -> None:
    e = _entry()
    assert len(delta(snapshot([e]), snapshot([replace(e, timeout=e.timeout - 3)]))) == 0
    refreshed = delta(snapshot([e]), snapshot([replace(e, timeout=e.timeout + 30)]))
    assert refreshed.changed and not refreshed.removed
    gone = delta(snapshot([e]), snapshot([]))
    assert gone.removed == (e,) and not gone.changed


def _entry() -> Entry:
    from ipaddress import IPv4Address

    from hyperwall.dataplane.conntrack.entry import Tuple

    a, b = IPv4Address("10.0.0.1"), IPv4Address("10.0.0.2")
    return Entry(Tuple(a, b, 17, 1, 2), Tuple(b, a, 17, 2, 1), timeout=100)
