"""Entries through ctnetlink attributes and the wire form and back (property tests)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hyperwall.dataplane.conntrack import attrs, messages, wire
from hyperwall.dataplane.conntrack.entry import IPS_CONFIRMED, Entry
from tests.dataplane.conntrack.strategies import entries


@given(entries())
def test_attributes_round_trip(entry: Entry) -> None:
    assert attrs.decode(attrs.encode(entry, for_kernel=False)) == entry


@given(entries())
def test_for_the_kernel_the_entry_is_confirmed(entry: Entry) -> None:
    got = attrs.decode(attrs.encode(entry))
    assert got.status == entry.status | IPS_CONFIRMED


@given(st.lists(entries(), max_size=20))
def test_wire_round_trip(batch: list[Entry]) -> None:
    assert wire.loads(wire.dumps(batch)) == batch


@given(st.lists(entries(), min_size=1, max_size=20))
def test_messages_carry_each_entry_and_ack_the_last(batch: list[Entry]) -> None:
    data = messages.new_messages(batch, 100, update=True)
    got = list(messages.replies(data))
    assert [r.seq for r in got] == list(range(100, 100 + len(batch)))
    assert [attrs.decode(data, r.start, r.end).orig for r in got] == [e.orig for e in batch]


def test_truncated_wire_is_an_error() -> None:
    data = wire.dumps([])
    assert wire.loads(data) == []
    with pytest.raises(wire.WireError):
        wire.loads(data[:-1])
    with pytest.raises(wire.WireError):
        wire.loads(b"XXXX" + data[4:])
