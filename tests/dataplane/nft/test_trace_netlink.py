"""`nft.trace_netlink`: trace events round-trip through the kernel's message layout, and
no input makes the parser fail other than with `TraceDecodeError`."""

from __future__ import annotations

import contextlib
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hyperwall.dataplane.nft.trace_netlink import (
    TRACE_TYPES,
    VERDICTS,
    TraceDecodeError,
    TraceEvent,
    encode_event,
    parse_messages,
)

names = st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=30)
events = st.builds(
    TraceEvent,
    id=st.integers(0, 2**32 - 1),
    type=st.sampled_from(sorted(TRACE_TYPES.values())),
    table=names,
    chain=names,
    handle=st.none() | st.integers(0, 2**64 - 1),
    verdict=st.none() | st.sampled_from(sorted(VERDICTS.values())),
    target=st.none(),
    family=st.sampled_from([1, 2, 10]),
    iif=st.none() | st.integers(0, 2**32 - 1),
    oif=st.none() | st.integers(0, 2**32 - 1),
    mark=st.none() | st.integers(0, 2**32 - 1),
    network=st.binary(max_size=60),
    transport=st.binary(max_size=40),
)


@given(st.lists(events, max_size=5))
def test_events_round_trip(batch: list[TraceEvent]) -> None:
    data = b"".join(encode_event(e) for e in batch)
    assert list(parse_messages(data)) == batch


@given(events, names)
def test_jump_targets_round_trip(event: TraceEvent, target: str) -> None:
    jump = TraceEvent(event.id, "rule", event.table, event.chain, 7, "goto", target)
    assert list(parse_messages(encode_event(jump))) == [jump]


def test_other_messages_are_skipped() -> None:
    done = struct.pack("=IHHII", 20, 3, 0, 0, 0) + b"\0" * 4
    event = TraceEvent(1, "policy", "hyperwall", "forward", None, "accept")
    assert list(parse_messages(done + encode_event(event))) == [event]


def test_a_truncated_message_is_an_error() -> None:
    data = encode_event(TraceEvent(1, "rule", "t", "c", 3, "drop"))
    overrun = bytearray(data)
    overrun[20:22] = struct.pack("=H", len(data))  # the first attribute runs past the end
    with pytest.raises(TraceDecodeError):
        list(parse_messages(bytes(overrun)))
    broken = bytearray(data)
    broken[0:4] = struct.pack("=I", len(data) + 8)
    with pytest.raises(TraceDecodeError):
        list(parse_messages(bytes(broken)))


@given(st.binary(max_size=300))
def test_fuzz_only_decode_errors(data: bytes) -> None:
    with contextlib.suppress(TraceDecodeError):
        list(parse_messages(data))
