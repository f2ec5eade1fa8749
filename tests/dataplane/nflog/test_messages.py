"""NFLOG messages: the parser inverts the encoder (hypothesis), never fails on garbage
except with NflogDecodeError, and the bind requests carry the group in network order."""

from __future__ import annotations

import struct
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hyperwall.dataplane.nflog.messages import (
    MSG_CONFIG,
    LogMessage,
    NflogDecodeError,
    attribute,
    config_messages,
    encode_message,
    parse_messages,
)

_opt32 = st.none() | st.integers(0, 2**32 - 1)
messages = st.builds(
    LogMessage,
    group=st.integers(0, 65535),
    family=st.sampled_from([2, 7, 10]),
    prefix=st.text(st.characters(codec="utf-8", exclude_characters="\0"), max_size=126),
    hook=st.none() | st.integers(0, 255),
    hw_protocol=st.none() | st.integers(0, 65535),
    mark=_opt32,
    timestamp_us=st.none() | st.integers(0, 2**60),
    indev=_opt32,
    outdev=_opt32,
    physindev=_opt32,
    physoutdev=_opt32,
    payload=st.binary(max_size=200),
)


def _normal(m: LogMessage) -> LogMessage:
    """What survives a round trip: the header's two fields travel together."""
    if (m.hook is None) != (m.hw_protocol is None):
        return replace(m, hook=m.hook or 0, hw_protocol=m.hw_protocol or 0)
    return m


@given(st.lists(messages, min_size=1, max_size=4))
def test_parse_inverts_encode(batch: list[LogMessage]) -> None:
    data = b"".join(encode_message(m) for m in batch)
    assert list(parse_messages(data)) == [_normal(m) for m in batch]


@given(st.binary(max_size=300))
def test_garbage_fails_only_with_decode_error(data: bytes) -> None:
    try:
        items = list(parse_messages(data))
    except NflogDecodeError:
        return
    assert all(isinstance(i, LogMessage | int) for i in items)


@given(messages, st.integers(1, 60))
def test_a_truncated_message_is_a_decode_error_or_nothing(message: LogMessage, cut: int) -> None:
    data = encode_message(message)
    short = data[: max(0, len(data) - cut)]
    try:
        out = list(parse_messages(short))
    except NflogDecodeError:
        return
    assert out == []  # too short for even a netlink header


def test_bind_requests() -> None:
    requests = config_messages(100, 128, 65536, 5, 64)
    assert len(requests) == 5
    for request in requests:
        length, kind, flags = struct.unpack_from("=IHH", request)
        assert length == len(request) and kind == MSG_CONFIG and flags == 5  # request, ack
        assert request[16:20] == bytes([0, 0, 0, 100])  # AF_UNSPEC, version 0, group 100
    assert requests[0][20:] == attribute(1, b"\x01")  # NFULNL_CFG_CMD_BIND


def test_an_error_answer_yields_its_errno() -> None:
    error = struct.pack("=IHHII", 36, 2, 0, 1, 0) + struct.pack("=i", -16) + bytes(16)
    assert list(parse_messages(error)) == [-16]
    with pytest.raises(NflogDecodeError):
        list(parse_messages(struct.pack("=IHHII", 16, 2, 0, 1, 0)))
