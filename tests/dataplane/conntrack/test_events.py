"""`conntrack.events`: NEW/DESTROY messages decode to what the kernel put in them; garbage is
counted, never raised."""

from __future__ import annotations

from ipaddress import IPv4Address

from hypothesis import given
from hypothesis import strategies as st

from hyperwall.dataplane.conntrack import messages
from hyperwall.dataplane.conntrack.entry import Tuple
from hyperwall.dataplane.conntrack.events import Counters, Event, decode_events, event_message

from .strategies import tuples, u32

u64 = st.integers(0, 2**64 - 1)
counters = st.builds(Counters, u64, u64)
# nanoseconds that survive the round trip through float seconds
stamps = st.integers(1_600_000_000, 2_000_000_000).map(float)


@st.composite
def events(draw: st.DrawFn) -> Event:
    orig, _ = draw(tuples())
    destroy = draw(st.booleans())
    start = draw(st.none() | stamps)
    return Event(
        kind="destroy" if destroy else "new",
        id=draw(u32),
        orig=orig,
        mark=draw(u32),
        orig_counters=draw(counters) if destroy else None,
        reply_counters=draw(counters) if destroy else None,
        start=start,
        stop=draw(st.none() | stamps) if destroy and start is not None else None,
    )


@given(st.lists(events(), max_size=8))
def test_events_round_trip(batch: list[Event]) -> None:
    data = b"".join(event_message(e, messages.family_of(e.orig.family)) for e in batch)
    assert decode_events(data) == (batch, 0)


@given(events(), st.binary(max_size=64))
def test_unknown_attributes_after_the_known_are_skipped(event: Event, junk: bytes) -> None:
    # an attribute of a type we do not read (CTA_USE, 11), then whatever
    extra = b"\x08\x00\x0b\x00\x00\x00\x00\x01"
    data = event_message(event, messages.family_of(event.orig.family), extra)
    assert decode_events(data) == ([event], 0)
    decode_events(data + junk)  # never raises


@given(st.binary(max_size=512))
def test_garbage_never_raises(data: bytes) -> None:
    found, bad = decode_events(data)
    assert bad >= 0 and isinstance(found, list)


def test_an_event_without_an_id_is_counted_not_decoded() -> None:
    orig = Tuple(IPv4Address("10.0.0.1"), IPv4Address("10.0.0.2"), 6, 40000, 80)
    good = Event("new", 7, orig, 0)
    data = bytearray(event_message(good, 2))
    # rename CTA_ID (12) to an attribute nobody reads (30)
    at = data.find(b"\x08\x00\x0c\x00")
    data[at + 2] = 30
    assert decode_events(bytes(data)) == ([], 1)


def test_other_messages_are_ignored() -> None:
    dump_done = messages.message(messages.IPCTNL_MSG_CT_GET, 0, 0, 2, b"")
    assert decode_events(dump_done) == ([], 0)
