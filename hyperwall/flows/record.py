"""A flow record: one logged decision (or one connection, or one suppression summary) as
one JSON object per line (`shared/POLICY.md` "Flow log records", docs/policy.md). Pure.

Counterparts: `flows.writer` appends encoded records to the agent's flow log,
`agent.flowlog` makes them from NFLOG messages, `flows.filter` selects them, and the
manager's flow store keeps them as JSON objects (so it needs only `time`, `workload`,
`rule`, `action`).

Fields, in the order `encode` writes them (a field that is None is left out):

- `time` (RFC 3339, microseconds, UTC: `2026-12-03T07:00:00.123456Z`; held as
  microseconds since the epoch), `host`;
- `workload` (the enforcing end: `tenant/name`, or `name` for a provider workload; null
  when the interface belongs to no workload, e.g. an `unknown-interface` drop),
  `direction` (`out` at the sender, `in` at the receiver), `action`
  (`allow`/`drop`/`reject`/`pass`), `rule` (the id `trace` prints: `tenant/policy/rule`,
  `policy/rule`, `default`, `anti-spoofing`, `misdirected`, `unknown-interface`);
- `src`, `dst`, `proto` (`tcp`, `udp`, `icmp`, `icmpv6`, or the protocol number),
  `sport`/`dport` (TCP/UDP only), `icmpType`/`icmpCode` (ICMP and ICMPv6 only).

Extensions (all optional, left out when None):

- `kind`: absent for a logged decision; `connection` for a connection record (from
  conntrack events: the connection the rule `rule` admitted), `suppressed` for a summary of
  records the kernel's per-rule rate limit suppressed (`suppressed`: how many, since the
  previous summary of that rule; `time` is when they were counted);
- connection records: `start`, `end` (RFC 3339 like `time`), `srcPackets`, `srcBytes`
  (sent by `src`, the connection's originator), `dstPackets`, `dstBytes` (sent back);
- any other field a newer writer adds is kept in `extra` and written back unchanged, so
  a reader never loses what it does not know.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from hyperwall.flows.filter import time_us, us_time

PROTO_NAMES = {1: "icmp", 6: "tcp", 17: "udp", 58: "icmpv6"}
PORT_PROTOS = frozenset({"tcp", "udp"})
ICMP_PROTOS = frozenset({"icmp", "icmpv6"})
KINDS = frozenset({"connection", "suppressed"})

# record field -> dataclass attribute, in the order `encode` writes them
_JSON_NAMES = {
    "time": "time",
    "host": "host",
    "workload": "workload",
    "direction": "direction",
    "action": "action",
    "rule": "rule",
    "src": "src",
    "dst": "dst",
    "proto": "proto",
    "sport": "sport",
    "dport": "dport",
    "icmpType": "icmp_type",
    "icmpCode": "icmp_code",
    "kind": "kind",
    "suppressed": "suppressed",
    "start": "start",
    "end": "end",
    "srcPackets": "src_packets",
    "srcBytes": "src_bytes",
    "dstPackets": "dst_packets",
    "dstBytes": "dst_bytes",
}
_TIMES = frozenset({"time", "start", "end"})
_INTS = frozenset(
    {
        "sport",
        "dport",
        "icmpType",
        "icmpCode",
        "suppressed",
        "srcPackets",
        "srcBytes",
        "dstPackets",
        "dstBytes",
    }
)
_STRINGS = frozenset({"host", "workload", "direction", "action", "rule", "src", "dst", "kind"})
_CHOICES = {"direction": frozenset({"in", "out"}), "kind": KINDS}
_NO_EXTRA: Mapping[str, Any] = MappingProxyType({})  # shared: most records have no extra
_FIELDS = tuple((name, attr, name in _TIMES) for name, attr in _JSON_NAMES.items())
_last_second: list[tuple[int, str]] = [(-1, "")]  # the last second formatted (one entry)


def _time_text(us: int) -> str:
    """`us_time`, with the second's text kept from the previous call (records come in
    bursts within one second)."""
    seconds, micros = divmod(us, 1_000_000)
    cached_second, text = _last_second[0]
    if seconds != cached_second:
        text = us_time(seconds * 1_000_000)[:-8]  # without ".000000Z"
        _last_second[0] = (seconds, text)
    return f"{text}.{micros:06d}Z"


def proto_name(number: int) -> str | int:
    """`tcp` for 6, ...; the number itself for a protocol without a name here."""
    return PROTO_NAMES.get(number, number)


@dataclass(frozen=True, slots=True)
class FlowRecord:
    """One line of a flow log. Times are microseconds since the epoch (UTC)."""

    time: int
    host: str | None = None
    workload: str | None = None
    direction: str | None = None
    action: str | None = None
    rule: str | None = None
    src: str | None = None
    dst: str | None = None
    proto: str | int | None = None
    sport: int | None = None
    dport: int | None = None
    icmp_type: int | None = None
    icmp_code: int | None = None
    kind: str | None = None
    suppressed: int | None = None
    start: int | None = None
    end: int | None = None
    src_packets: int | None = None
    src_bytes: int | None = None
    dst_packets: int | None = None
    dst_bytes: int | None = None
    extra: Mapping[str, Any] = field(default_factory=lambda: _NO_EXTRA)

    def to_json(self) -> dict[str, Any]:
        """The record's JSON object (None fields left out; `workload` kept as null on a
        decision record, where it says "no workload")."""
        out: dict[str, Any] = {}
        for name, attr, is_time in _FIELDS:
            value = getattr(self, attr)
            if value is not None:
                out[name] = _time_text(value) if is_time else value
            elif name == "workload" and self.kind is None:
                out[name] = None
        for key, value in self.extra.items():
            out.setdefault(key, value)
        return out


_ENCODER = json.JSONEncoder(separators=(",", ":"))
_quote: Callable[[str], str] = json.encoder.encode_basestring_ascii  # what _ENCODER uses
# a decision record's packet fields: (attribute, '"name":')
_PACKET = tuple(
    (attr, _quote(name) + ":")
    for name, attr in _JSON_NAMES.items()
    if name in ("src", "dst", "proto", "sport", "dport", "icmpType", "icmpCode")
)
_HEADS: dict[tuple[str | None, ...], str] = {}  # (host, ..., rule) -> their JSON text
_MAX_HEADS = 4096
_NONE4 = (None, None, None, None)


def _head(key: tuple[str | None, ...]) -> str:
    """`,"host":...,"rule":...` of a decision record (made once per distinct key)."""
    text = _HEADS.get(key)
    if text is None:
        host, workload, direction, action, rule = key
        fields = FlowRecord(0, host, workload, direction, action, rule).to_json()
        del fields["time"]
        text = "," + _ENCODER.encode(fields)[1:-1] if fields else ""
        if len(_HEADS) >= _MAX_HEADS:
            _HEADS.clear()
        _HEADS[key] = text
    return text


def encode(record: FlowRecord) -> bytes:
    """One line of JSON, newline included: the bytes `_ENCODER` makes of `to_json()`. A
    decision record (no `kind`, no `extra`, none of the other kinds' fields) is written
    from a cached text of its rule's fields and its packet's, without the dict."""
    r = record
    if (
        r.extra
        or type(r.time) is not int
        or (r.kind, r.suppressed, r.start, r.end) != _NONE4
        or (r.src_packets, r.src_bytes, r.dst_packets, r.dst_bytes) != _NONE4
    ):
        return (_ENCODER.encode(r.to_json()) + "\n").encode()
    head = _head((r.host, r.workload, r.direction, r.action, r.rule))
    src, dst, proto, sport, dport = r.src, r.dst, r.proto, r.sport, r.dport
    if (  # the common one, a TCP or UDP packet: one format
        type(src) is str
        and type(dst) is str
        and type(proto) is str
        and type(sport) is int
        and type(dport) is int
        and r.icmp_type is None
        and r.icmp_code is None
    ):
        return (
            f'{{"time":"{_time_text(r.time)}"{head},"src":{_quote(src)},"dst":{_quote(dst)},'
            f'"proto":{_quote(proto)},"sport":{sport},"dport":{dport}}}\n'
        ).encode()
    parts = ['{"time":"', _time_text(r.time), '"', head]
    for attr, key in _PACKET:
        value = getattr(r, attr)
        if value is None:
            continue
        kind = type(value)
        if kind is str:
            parts += (",", key, _quote(value))
        elif kind is int:
            parts += (",", key, int.__repr__(value))
        else:
            parts += (",", key, _ENCODER.encode(value))
    parts.append("}\n")
    return "".join(parts).encode()


def _field_value(name: str, value: Any) -> Any:
    if value is None:
        if name == "time":
            raise ValueError("time: missing")
        return None
    if name in _TIMES:
        if not isinstance(value, str):
            raise ValueError(f"{name}: {value!r} is not an RFC 3339 time")
        try:
            return time_us(value)
        except ValueError:
            raise ValueError(f"{name}: {value[:40]!r} is not an RFC 3339 time") from None
    if name in _INTS:
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ValueError(f"{name}: {value!r} is not a non-negative integer")
        return value
    if name == "proto":
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise ValueError(f"proto: {value!r} is neither a name nor a number")
        return value
    if not isinstance(value, str):
        raise ValueError(f"{name}: {value!r} is not a string")
    choices = _CHOICES.get(name)
    if choices is not None and value not in choices:
        raise ValueError(f"{name}: {value!r} is not one of {', '.join(sorted(choices))}")
    return value


def from_json(obj: object) -> FlowRecord:
    """The record of a JSON object; ValueError naming the field that is wrong."""
    if not isinstance(obj, Mapping):
        raise ValueError("a flow record is a JSON object")
    values: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for key, value in obj.items():
        attr = _JSON_NAMES.get(key)
        if attr is None:
            extra[str(key)] = value
        else:
            values[attr] = _field_value(key, value)
    if "time" not in values:
        raise ValueError("time: missing")
    return FlowRecord(**values, extra=extra)


def decode(line: bytes | str) -> FlowRecord:
    """The record of one line; ValueError (naming the field) if it is not one."""
    try:
        obj = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"not JSON: {exc}") from None
    return from_json(obj)


def decode_lines(lines: Iterator[bytes] | list[bytes]) -> Iterator[tuple[int, FlowRecord]]:
    """(line number from 1, record) of each line that is a record; a line that is not one
    (a torn last line, a line some other program wrote) raises ValueError naming it."""
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            yield number, decode(line)
        except ValueError as exc:
            raise ValueError(f"line {number}: {exc}") from None


FIELD_NAMES = tuple(_JSON_NAMES)  # the record's known fields, in the order `encode` writes
ATTRIBUTES = dict(_JSON_NAMES)  # record field -> `FlowRecord` attribute
