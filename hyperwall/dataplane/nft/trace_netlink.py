"""nftables trace events (`NFT_MSG_TRACE`, multicast group `NFNLGRP_NFTRACE`) as values. Pure.

The kernel sends one message per step of a packet whose `nf_trace` bit is set (`meta
nftrace set 1`): a rule that matched with a verdict or `continue`, the end of a chain
(`return`) or a base chain's policy. Each carries the trace id (one per packet and hook),
table, chain, rule handle, the verdict (code and, for jump/goto, the target chain) and the
packet's headers. `parse_messages` turns a buffer read from the netlink socket
(`nft.trace_kernel`) into `TraceEvent`s; `encode_event` is its inverse (tests, and the
property test that the two round-trip). Attribute numbers: linux/netfilter/nf_tables.h.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass

NFNL_SUBSYS_NFTABLES = 10
NFT_MSG_TRACE = 17
NFNLGRP_NFTRACE = 9
NLMSG_ERROR = 2
NLMSG_DONE = 3

NFTA_TRACE_TABLE = 1
NFTA_TRACE_CHAIN = 2
NFTA_TRACE_RULE_HANDLE = 3
NFTA_TRACE_TYPE = 4
NFTA_TRACE_VERDICT = 5
NFTA_TRACE_ID = 6
NFTA_TRACE_NETWORK_HEADER = 8
NFTA_TRACE_TRANSPORT_HEADER = 9
NFTA_TRACE_IIF = 10
NFTA_TRACE_OIF = 12
NFTA_TRACE_MARK = 14
NFTA_TRACE_NFPROTO = 15
NFTA_VERDICT_CODE = 1
NFTA_VERDICT_CHAIN = 2

TRACE_TYPES = {1: "policy", 2: "return", 3: "rule"}
# Verdict codes: NF_DROP, NF_ACCEPT, NF_STOLEN, NF_QUEUE and the nftables-internal ones.
VERDICTS = {
    0: "drop",
    1: "accept",
    2: "stolen",
    3: "queue",
    -1: "continue",
    -2: "break",
    -3: "jump",
    -4: "goto",
    -5: "return",
}
_CODES = {name: code for code, name in VERDICTS.items()}

_NLMSG = struct.Struct("=IHHII")
_NFGEN = struct.Struct("=BBH")
_NLA = struct.Struct("=HH")
NLA_TYPE_MASK = 0x3FFF


class TraceDecodeError(ValueError):
    """A trace message that does not parse (truncated or malformed)."""


@dataclass(frozen=True, slots=True)
class TraceEvent:
    """One step of a traced packet."""

    id: int  # the packet's trace id (per hook traversal)
    type: str  # "rule", "return", "policy" (or "unknown-N")
    table: str
    chain: str
    handle: int | None  # the rule's handle (rule events)
    verdict: str | None  # "accept", "drop", "jump", "goto", "continue", "return", ...
    target: str | None = None  # the chain of a jump or goto
    family: int = 0  # NFPROTO_*: 1 inet, 2 ipv4, 10 ipv6
    iif: int | None = None
    oif: int | None = None
    mark: int | None = None
    network: bytes = b""  # the network header and what follows it, as much as the kernel sent
    transport: bytes = b""


def _attrs(data: bytes | memoryview, start: int, end: int) -> dict[int, tuple[int, int]]:
    out: dict[int, tuple[int, int]] = {}
    pos = start
    while pos + 4 <= end:
        length, kind = _NLA.unpack_from(data, pos)
        if length < 4 or pos + length > end:
            raise TraceDecodeError(f"attribute {kind} of length {length} overruns the message")
        out[kind & NLA_TYPE_MASK] = (pos + 4, pos + length)
        pos += (length + 3) & ~3
    return out


def _text(data: bytes | memoryview, span: tuple[int, int] | None) -> str:
    if span is None:
        return ""
    return bytes(data[span[0] : span[1]]).split(b"\0", 1)[0].decode(errors="replace")


def _int(data: bytes | memoryview, span: tuple[int, int] | None, fmt: str) -> int | None:
    if span is None:
        return None
    size = struct.calcsize(fmt)
    if span[1] - span[0] < size:
        raise TraceDecodeError(f"attribute too short for {fmt}")
    value: int = struct.unpack_from(fmt, data, span[0])[0]
    return value


def decode_event(data: bytes | memoryview, start: int, end: int) -> TraceEvent:
    """The event in one message's payload (after the netlink header): nfgenmsg, attributes."""
    if end - start < _NFGEN.size:
        raise TraceDecodeError("trace message without its nfgenmsg header")
    family = data[start]
    a = _attrs(data, start + _NFGEN.size, end)
    verdict = target = None
    if NFTA_TRACE_VERDICT in a:
        vs, ve = a[NFTA_TRACE_VERDICT]
        v = _attrs(data, vs, ve)
        code = _int(data, v.get(NFTA_VERDICT_CODE), "!i")
        if code is not None:
            verdict = VERDICTS.get(code, f"verdict-{code}")
        target = _text(data, v[NFTA_VERDICT_CHAIN]) if NFTA_VERDICT_CHAIN in v else None
    kind = _int(data, a.get(NFTA_TRACE_TYPE), "!I") or 0

    def raw(key: int) -> bytes:
        return bytes(data[a[key][0] : a[key][1]]) if key in a else b""

    return TraceEvent(
        id=_int(data, a.get(NFTA_TRACE_ID), "!I") or 0,
        type=TRACE_TYPES.get(kind, f"unknown-{kind}"),
        table=_text(data, a.get(NFTA_TRACE_TABLE)),
        chain=_text(data, a.get(NFTA_TRACE_CHAIN)),
        handle=_int(data, a.get(NFTA_TRACE_RULE_HANDLE), "!Q"),
        verdict=verdict,
        target=target,
        family=family,
        iif=_int(data, a.get(NFTA_TRACE_IIF), "!I"),
        oif=_int(data, a.get(NFTA_TRACE_OIF), "!I"),
        mark=_int(data, a.get(NFTA_TRACE_MARK), "!I"),
        network=raw(NFTA_TRACE_NETWORK_HEADER),
        transport=raw(NFTA_TRACE_TRANSPORT_HEADER),
    )


def parse_messages(data: bytes | memoryview) -> Iterator[TraceEvent]:
    """The trace events in one buffer read from the socket; other messages are skipped."""
    pos = 0
    while pos + _NLMSG.size <= len(data):
        length, kind, _flags, _seq, _pid = _NLMSG.unpack_from(data, pos)
        if length < _NLMSG.size or pos + length > len(data):
            raise TraceDecodeError(f"netlink message of length {length} overruns the buffer")
        if kind == (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_TRACE:
            yield decode_event(data, pos + _NLMSG.size, pos + length)
        pos += (length + 3) & ~3


# -- the inverse, for tests ----------------------------------------------------------------


def _attr(kind: int, payload: bytes) -> bytes:
    head = _NLA.pack(4 + len(payload), kind)
    return head + payload + b"\0" * (-len(payload) % 4)


def encode_event(event: TraceEvent) -> bytes:
    """One netlink message carrying `event`, as the kernel would send it."""
    parts = [
        _attr(NFTA_TRACE_TABLE, event.table.encode() + b"\0"),
        _attr(NFTA_TRACE_CHAIN, event.chain.encode() + b"\0"),
        _attr(NFTA_TRACE_ID, struct.pack("!I", event.id)),
    ]
    codes = {v: k for k, v in TRACE_TYPES.items()}
    if event.type in codes:
        parts.append(_attr(NFTA_TRACE_TYPE, struct.pack("!I", codes[event.type])))
    if event.handle is not None:
        parts.append(_attr(NFTA_TRACE_RULE_HANDLE, struct.pack("!Q", event.handle)))
    if event.verdict is not None:
        inner = _attr(NFTA_VERDICT_CODE, struct.pack("!i", _CODES[event.verdict]))
        if event.target is not None:
            inner += _attr(NFTA_VERDICT_CHAIN, event.target.encode() + b"\0")
        parts.append(_attr(NFTA_TRACE_VERDICT | 0x8000, inner))
    for key, value in ((NFTA_TRACE_IIF, event.iif), (NFTA_TRACE_OIF, event.oif)):
        if value is not None:
            parts.append(_attr(key, struct.pack("!I", value)))
    if event.mark is not None:
        parts.append(_attr(NFTA_TRACE_MARK, struct.pack("!I", event.mark)))
    if event.network:
        parts.append(_attr(NFTA_TRACE_NETWORK_HEADER, event.network))
    if event.transport:
        parts.append(_attr(NFTA_TRACE_TRANSPORT_HEADER, event.transport))
    body = _NFGEN.pack(event.family, 0, 0) + b"".join(parts)
    kind = (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_TRACE
    return _NLMSG.pack(_NLMSG.size + len(body), kind, 0, 0, 0) + body
