"""Flow records: the JSON-lines form round-trips, bad lines are named by field."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hyperwall.flows.record import (
    ATTRIBUTES,
    FIELD_NAMES,
    FlowRecord,
    decode,
    decode_lines,
    encode,
    from_json,
    proto_name,
)

EXAMPLE = (
    '{"time": "2026-12-03T07:00:00.123456Z", "host": "hv1", "workload": "acme/db-1",'
    ' "direction": "in", "action": "drop", "rule": "acme/pci-guard/deny-rest",'
    ' "src": "10.1.0.21", "dst": "10.1.0.41", "proto": "tcp", "sport": 40312, "dport": 5432}'
)


def test_the_contract_example_round_trips() -> None:
    record = decode(EXAMPLE)
    assert record.rule == "acme/pci-guard/deny-rest"
    assert record.sport == 40312
    assert record.icmp_type is None
    assert json.loads(encode(record)) == json.loads(EXAMPLE)
    assert encode(record).endswith(b"\n")
    assert encode(record).count(b"\n") == 1


def test_fields_are_every_attribute() -> None:
    from dataclasses import fields

    assert set(ATTRIBUTES.values()) | {"extra"} == {f.name for f in fields(FlowRecord)}
    assert FIELD_NAMES[0] == "time"


def test_icmp_and_unknown_fields_are_kept() -> None:
    line = json.dumps(
        {
            "time": "2026-12-03T07:00:00.000001Z",
            "workload": None,
            "proto": "icmpv6",
            "icmpType": 128,
            "icmpCode": 0,
            "future": {"x": [1]},
        }
    )
    record = decode(line)
    assert record.icmp_type == 128
    assert record.workload is None
    assert record.extra == {"future": {"x": [1]}}
    out = json.loads(encode(record))
    assert out["future"] == {"x": [1]}
    assert out["workload"] is None  # a decision without a workload says so
    assert "sport" not in out


def test_connection_and_summary_records() -> None:
    conn = FlowRecord(
        time=1, kind="connection", rule="default", start=1, end=2_000_001,
        src_packets=3, src_bytes=180, dst_packets=2, dst_bytes=120,
    )  # fmt: skip
    out = json.loads(encode(conn))
    assert out["start"] == "1970-01-01T00:00:00.000001Z"
    assert out["end"] == "1970-01-01T00:00:02.000001Z"
    assert (out["srcPackets"], out["dstBytes"]) == (3, 120)
    assert "workload" not in out  # only decisions say "no workload" with a null
    assert decode(encode(conn)) == conn
    summary = FlowRecord(time=5, kind="suppressed", rule="acme/p/r", suppressed=7)
    assert decode(encode(summary)) == summary


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        ([], "a flow record is a JSON object"),
        ({}, "time: missing"),
        ({"time": "yesterday"}, "time: 'yesterday' is not an RFC 3339 time"),
        ({"time": "2026-12-03T07:00:00Z", "sport": -1}, "sport: -1 is not a non-negative"),
        ({"time": "2026-12-03T07:00:00Z", "sport": True}, "sport: True"),
        ({"time": "2026-12-03T07:00:00Z", "direction": "up"}, "direction: 'up' is not one of"),
        ({"time": "2026-12-03T07:00:00Z", "proto": 1.5}, "proto: 1.5 is neither"),
        ({"time": "2026-12-03T07:00:00Z", "rule": 3}, "rule: 3 is not a string"),
        ({"time": "2026-12-03T07:00:00Z", "kind": "x"}, "kind: 'x' is not one of"),
    ],
)
def test_bad_records_name_the_field(obj: object, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        from_json(obj)


def test_decode_lines_names_the_line() -> None:
    good = encode(FlowRecord(time=0, rule="default"))
    assert [n for n, _ in decode_lines([good, b"\n", good])] == [1, 3]
    with pytest.raises(ValueError, match="line 2: not JSON"):
        list(decode_lines([good, b'{"time": "2026-12-0']))


def test_proto_name() -> None:
    assert [proto_name(n) for n in (1, 6, 17, 58, 132)] == ["icmp", "tcp", "udp", "icmpv6", 132]


_names = st.text("abcdefghijklmnopqrstuvwxyz0123456789-/.", min_size=1, max_size=40)
_small = st.none() | st.integers(0, 2**40)
_times = st.integers(0, 2**52)
_PACKET = {  # a decision's packet fields
    "src": st.none() | st.ip_addresses().map(str),
    "dst": st.none() | st.ip_addresses().map(str),
    "proto": st.none() | st.sampled_from(["tcp", "udp", "icmp", "icmpv6"]) | st.integers(0, 255),
    "sport": _small,
    "dport": _small,
    "icmp_type": _small,
    "icmp_code": _small,
}
records = st.builds(
    FlowRecord,
    time=_times,
    host=st.none() | _names,
    workload=st.none() | _names,
    direction=st.none() | st.sampled_from(["in", "out"]),
    action=st.none() | st.sampled_from(["allow", "drop", "reject", "pass"]),
    rule=st.none() | _names,
    **_PACKET,
    kind=st.none() | st.sampled_from(["connection", "suppressed"]),
    suppressed=_small,
    start=st.none() | _times,
    end=st.none() | _times,
    src_packets=_small,
    src_bytes=_small,
    dst_packets=_small,
    dst_bytes=_small,
    extra=st.dictionaries(st.sampled_from(["zz", "later"]), st.integers() | st.text(max_size=5)),
)


@given(records)
def test_encode_decode_round_trip(record: FlowRecord) -> None:
    line = encode(record)
    assert line.count(b"\n") == 1 and line.endswith(b"\n")
    assert decode(line) == record


@given(st.binary(max_size=200))
def test_decode_fails_only_with_value_error(data: bytes) -> None:
    try:
        record = decode(data)
    except ValueError:
        return
    assert decode(encode(record)) == record


_any_text = st.none() | st.text(max_size=12)  # escapes, non-ASCII: what json.dumps writes
decisions = st.builds(
    FlowRecord,
    time=_times,
    host=_any_text,
    workload=_any_text,
    direction=st.none() | st.sampled_from(["in", "out"]),
    action=_any_text,
    rule=_any_text,
    **_PACKET,
)


@given(decisions | records)
def test_encode_writes_what_the_json_encoder_writes(record: FlowRecord) -> None:
    """The fast path for decision records (cached rule fields, no dict) is byte for byte
    the reference: the standard encoder over `to_json()`."""
    reference = json.dumps(record.to_json(), separators=(",", ":")) + "\n"
    assert encode(record) == reference.encode()
    assert encode(record) == reference.encode()  # and again, from the cached rule fields
