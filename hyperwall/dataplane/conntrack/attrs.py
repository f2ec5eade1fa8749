"""A conntrack entry as ctnetlink attributes (`CTA_*`), both ways, with `struct`. Pure.

Counterpart of `conntrack.entry` (the value) and `conntrack.messages` (which frames these
attributes into netlink messages). The attributes written are those the kernel reads on
`IPCTNL_MSG_CT_NEW` (net/netfilter/nf_conntrack_netlink.c, `ctnetlink_create_conntrack`):
both tuples (required), `CTA_TIMEOUT` (required), `CTA_STATUS`, `CTA_PROTOINFO`,
`CTA_MARK`, `CTA_ZONE` (or `CTA_TUPLE_ZONE` in a tuple for a directional zone) and
`CTA_LABELS`. Numbers are in network byte order; labels are the kernel's bitmap as is.

Two details of the kernel shape what is written:
- The status must carry `IPS_CONFIRMED` (the kernel sets it on a new entry and refuses a
  status that differs in it with EBUSY): `encode` always adds it.
- A dump reports TCP flags with a zero mask, and the kernel applies `flags & mask`: `encode`
  writes mask 0xff so the flags are set, not ignored.
"""

from __future__ import annotations

import struct
from ipaddress import IPv4Address, IPv6Address

from hyperwall.dataplane.conntrack.entry import (
    ICMP_PROTOCOLS,
    IPS_CONFIRMED,
    IPPROTO_ICMPV6,
    IPPROTO_TCP,
    PORT_PROTOCOLS,
    ZONE_DIR_BOTH,
    ZONE_DIR_ORIG,
    ZONE_DIR_REPLY,
    Address,
    Entry,
    TcpInfo,
    Tuple,
)

NLA_F_NESTED = 0x8000
NLA_TYPE_MASK = 0x3FFF

CTA_TUPLE_ORIG = 1
CTA_TUPLE_REPLY = 2
CTA_STATUS = 3
CTA_PROTOINFO = 4
CTA_TIMEOUT = 7
CTA_MARK = 8
CTA_ZONE = 18
CTA_LABELS = 22
CTA_FILTER = 25

CTA_TUPLE_IP = 1
CTA_TUPLE_PROTO = 2
CTA_TUPLE_ZONE = 3
CTA_IP_V4_SRC = 1
CTA_IP_V4_DST = 2
CTA_IP_V6_SRC = 3
CTA_IP_V6_DST = 4
CTA_PROTO_NUM = 1
CTA_PROTO_SRC_PORT = 2
CTA_PROTO_DST_PORT = 3
CTA_PROTO_ICMP_ID = 4
CTA_PROTO_ICMP_TYPE = 5
CTA_PROTO_ICMP_CODE = 6
CTA_PROTO_ICMPV6_ID = 7
CTA_PROTO_ICMPV6_TYPE = 8
CTA_PROTO_ICMPV6_CODE = 9
CTA_PROTOINFO_TCP = 1
CTA_PROTOINFO_TCP_STATE = 1
CTA_PROTOINFO_TCP_WSCALE_ORIGINAL = 2
CTA_PROTOINFO_TCP_WSCALE_REPLY = 3
CTA_PROTOINFO_TCP_FLAGS_ORIGINAL = 4
CTA_PROTOINFO_TCP_FLAGS_REPLY = 5
CTA_FILTER_ORIG_FLAGS = 1
CTA_FILTER_F_IP_SRC = 1 << 0
CTA_FILTER_F_IP_DST = 1 << 1

LABELS_BYTES = 16

_NLA = struct.Struct("=HH")


def _u8(kind: int, value: int) -> bytes:
    return struct.pack("=HHB3x", 5, kind, value)


def _be16(kind: int, value: int) -> bytes:
    return struct.pack("=HH", 6, kind) + struct.pack(">H2x", value)


def _be32(kind: int, value: int) -> bytes:
    return struct.pack("=HH", 8, kind) + struct.pack(">I", value)


def attr(kind: int, payload: bytes) -> bytes:
    """One attribute, padded to 4 bytes."""
    return _NLA.pack(4 + len(payload), kind) + payload + b"\0" * (-len(payload) % 4)


def nest(kind: int, *parts: bytes) -> bytes:
    body = b"".join(parts)
    return _NLA.pack(4 + len(body), kind | NLA_F_NESTED) + body


def encode_tuple(kind: int, t: Tuple, zone: int | None = None) -> bytes:
    """`CTA_TUPLE_ORIG`/`CTA_TUPLE_REPLY` (`kind`) for `t`; `zone` adds `CTA_TUPLE_ZONE`."""
    if t.family == 4:
        ip = nest(
            CTA_TUPLE_IP, attr(CTA_IP_V4_SRC, t.src.packed), attr(CTA_IP_V4_DST, t.dst.packed)
        )
    else:
        ip = nest(
            CTA_TUPLE_IP, attr(CTA_IP_V6_SRC, t.src.packed), attr(CTA_IP_V6_DST, t.dst.packed)
        )
    proto = [_u8(CTA_PROTO_NUM, t.proto)]
    if t.proto in PORT_PROTOCOLS:
        proto += [_be16(CTA_PROTO_SRC_PORT, t.sport), _be16(CTA_PROTO_DST_PORT, t.dport)]
    elif t.proto in ICMP_PROTOCOLS:
        base = CTA_PROTO_ICMPV6_ID if t.proto == IPPROTO_ICMPV6 else CTA_PROTO_ICMP_ID
        proto += [
            _be16(base, t.sport),
            _u8(base + 1, t.icmp_type),
            _u8(base + 2, t.icmp_code),
        ]
    parts = [ip, nest(CTA_TUPLE_PROTO, *proto)]
    if zone is not None:
        parts.append(_be16(CTA_TUPLE_ZONE, zone))
    return nest(kind, *parts)


def _encode_tcp(info: TcpInfo) -> bytes:
    return nest(
        CTA_PROTOINFO,
        nest(
            CTA_PROTOINFO_TCP,
            _u8(CTA_PROTOINFO_TCP_STATE, info.state),
            _u8(CTA_PROTOINFO_TCP_WSCALE_ORIGINAL, info.wscale_orig),
            _u8(CTA_PROTOINFO_TCP_WSCALE_REPLY, info.wscale_reply),
            attr(CTA_PROTOINFO_TCP_FLAGS_ORIGINAL, bytes((info.flags_orig, 0xFF))),
            attr(CTA_PROTOINFO_TCP_FLAGS_REPLY, bytes((info.flags_reply, 0xFF))),
        ),
    )


def zone_attrs(entry: Entry) -> tuple[bytes, int | None, int | None]:
    """(`CTA_ZONE` or nothing, zone of the original tuple, zone of the reply tuple)."""
    if entry.zone == 0:
        return b"", None, None
    if entry.zone_dir == ZONE_DIR_BOTH:
        return _be16(CTA_ZONE, entry.zone), None, None
    orig = entry.zone if entry.zone_dir == ZONE_DIR_ORIG else None
    reply = entry.zone if entry.zone_dir == ZONE_DIR_REPLY else None
    return b"", orig, reply


def encode(entry: Entry) -> bytes:
    """The attributes of an `IPCTNL_MSG_CT_NEW` that creates (or updates) `entry`."""
    zone, orig_zone, reply_zone = zone_attrs(entry)
    parts = [
        encode_tuple(CTA_TUPLE_ORIG, entry.orig, orig_zone),
        encode_tuple(CTA_TUPLE_REPLY, entry.reply, reply_zone),
        zone,
        _be32(CTA_STATUS, entry.status | IPS_CONFIRMED),
        _be32(CTA_TIMEOUT, entry.timeout),
    ]
    if entry.mark:
        parts.append(_be32(CTA_MARK, entry.mark))
    if entry.tcp is not None:
        parts.append(_encode_tcp(entry.tcp))
    if entry.labels:
        parts.append(attr(CTA_LABELS, entry.labels.to_bytes(LABELS_BYTES, "little")))
    return b"".join(parts)


def encode_key(entry: Entry) -> bytes:
    """The attributes that name `entry` in a kernel (for `IPCTNL_MSG_CT_DELETE`)."""
    zone, orig_zone, _ = zone_attrs(entry)
    if entry.zone and entry.zone_dir == ZONE_DIR_REPLY:
        return encode_tuple(CTA_TUPLE_REPLY, entry.reply, entry.zone)
    return encode_tuple(CTA_TUPLE_ORIG, entry.orig, orig_zone) + zone


def address_filter(address: Address, field: int) -> bytes:
    """Attributes of a dump or flush limited in the kernel (`CTA_FILTER`) to entries whose
    original source (`field` = `CTA_FILTER_F_IP_SRC`) or destination (`CTA_FILTER_F_IP_DST`)
    is `address`; the message's family must be the address's."""
    v4 = address.version == 4
    if field == CTA_FILTER_F_IP_SRC:
        ip = attr(CTA_IP_V4_SRC if v4 else CTA_IP_V6_SRC, address.packed)
    else:
        ip = attr(CTA_IP_V4_DST if v4 else CTA_IP_V6_DST, address.packed)
    return nest(CTA_TUPLE_ORIG, nest(CTA_TUPLE_IP, ip)) + nest(
        CTA_FILTER, attr_u32(CTA_FILTER_ORIG_FLAGS, field)
    )


def attr_u32(kind: int, value: int) -> bytes:
    """A host-order u32 attribute (`CTA_FILTER_*_FLAGS` are NLA_U32, not big-endian)."""
    return struct.pack("=HHI", 8, kind, value)


# Decoding ------------------------------------------------------------------------------


class DecodeError(ValueError):
    """Attributes that do not describe a conntrack entry we can carry."""


def parse(data: bytes | memoryview, start: int, end: int) -> dict[int, tuple[int, int]]:
    """The attributes in data[start:end]: type (flags stripped) -> (payload start, end)."""
    found: dict[int, tuple[int, int]] = {}
    unpack = _NLA.unpack_from
    while start + 4 <= end:
        length, kind = unpack(data, start)
        if length < 4:
            raise DecodeError(f"attribute of length {length}")
        found[kind & NLA_TYPE_MASK] = (start + 4, start + length)
        start += (length + 3) & ~3
    return found


def _address(data: bytes | memoryview, span: tuple[int, int]) -> Address:
    raw = bytes(data[span[0] : span[1]])
    if len(raw) == 4:
        return IPv4Address(raw)
    if len(raw) == 16:
        return IPv6Address(raw)
    raise DecodeError(f"address of {len(raw)} bytes")


def _be16_at(data: bytes | memoryview, span: tuple[int, int] | None) -> int:
    return 0 if span is None else int.from_bytes(data[span[0] : span[0] + 2], "big")


def _u8_at(data: bytes | memoryview, span: tuple[int, int] | None) -> int:
    return 0 if span is None else data[span[0]]


def decode_tuple(data: bytes | memoryview, span: tuple[int, int]) -> tuple[Tuple, int | None]:
    """A tuple attribute's payload: the tuple and its `CTA_TUPLE_ZONE`, if any."""
    top = parse(data, *span)
    if CTA_TUPLE_IP not in top or CTA_TUPLE_PROTO not in top:
        raise DecodeError("tuple without addresses or protocol")
    ip = parse(data, *top[CTA_TUPLE_IP])
    if CTA_IP_V4_SRC in ip:
        src, dst = _address(data, ip[CTA_IP_V4_SRC]), _address(data, ip[CTA_IP_V4_DST])
    elif CTA_IP_V6_SRC in ip:
        src, dst = _address(data, ip[CTA_IP_V6_SRC]), _address(data, ip[CTA_IP_V6_DST])
    else:
        raise DecodeError("tuple of an unknown family")
    pr = parse(data, *top[CTA_TUPLE_PROTO])
    proto = _u8_at(data, pr.get(CTA_PROTO_NUM))
    zone = _be16_at(data, top[CTA_TUPLE_ZONE]) if CTA_TUPLE_ZONE in top else None
    if proto in PORT_PROTOCOLS:
        sport = _be16_at(data, pr.get(CTA_PROTO_SRC_PORT))
        dport = _be16_at(data, pr.get(CTA_PROTO_DST_PORT))
        return Tuple(src, dst, proto, sport, dport), zone
    if proto in ICMP_PROTOCOLS:
        base = CTA_PROTO_ICMPV6_ID if proto == IPPROTO_ICMPV6 else CTA_PROTO_ICMP_ID
        ident = _be16_at(data, pr.get(base))
        kind, code = _u8_at(data, pr.get(base + 1)), _u8_at(data, pr.get(base + 2))
        return Tuple(src, dst, proto, ident, 0, kind, code), zone
    return Tuple(src, dst, proto), zone


def _decode_tcp(data: bytes | memoryview, span: tuple[int, int]) -> TcpInfo | None:
    info = parse(data, *span)
    if CTA_PROTOINFO_TCP not in info:
        return None
    tcp = parse(data, *info[CTA_PROTOINFO_TCP])
    return TcpInfo(
        state=_u8_at(data, tcp.get(CTA_PROTOINFO_TCP_STATE)),
        wscale_orig=_u8_at(data, tcp.get(CTA_PROTOINFO_TCP_WSCALE_ORIGINAL)),
        wscale_reply=_u8_at(data, tcp.get(CTA_PROTOINFO_TCP_WSCALE_REPLY)),
        flags_orig=_u8_at(data, tcp.get(CTA_PROTOINFO_TCP_FLAGS_ORIGINAL)),
        flags_reply=_u8_at(data, tcp.get(CTA_PROTOINFO_TCP_FLAGS_REPLY)),
    )


def decode(data: bytes | memoryview, start: int = 0, end: int | None = None) -> Entry:
    """The entry described by the attributes in data[start:end] (a `CT_NEW` or a dumped
    entry). Attributes that are not kept (see `conntrack.entry`) are skipped."""
    top = parse(data, start, len(data) if end is None else end)
    if CTA_TUPLE_ORIG not in top or CTA_TUPLE_REPLY not in top:
        raise DecodeError("entry without both tuples")
    orig, orig_zone = decode_tuple(data, top[CTA_TUPLE_ORIG])
    reply, reply_zone = decode_tuple(data, top[CTA_TUPLE_REPLY])
    zone, zone_dir = 0, ZONE_DIR_BOTH
    if CTA_ZONE in top:
        zone = _be16_at(data, top[CTA_ZONE])
    elif orig_zone is not None:
        zone, zone_dir = orig_zone, ZONE_DIR_ORIG
    elif reply_zone is not None:
        zone, zone_dir = reply_zone, ZONE_DIR_REPLY

    def be32(kind: int) -> int:
        span = top.get(kind)
        return 0 if span is None else int.from_bytes(data[span[0] : span[0] + 4], "big")

    labels = 0
    if CTA_LABELS in top:
        s, e = top[CTA_LABELS]
        labels = int.from_bytes(data[s:e], "little")
    tcp = None
    if orig.proto == IPPROTO_TCP and CTA_PROTOINFO in top:
        tcp = _decode_tcp(data, top[CTA_PROTOINFO])
    return Entry(
        orig=orig,
        reply=reply,
        status=be32(CTA_STATUS),
        timeout=be32(CTA_TIMEOUT),
        mark=be32(CTA_MARK),
        labels=labels,
        zone=zone,
        zone_dir=zone_dir,
        tcp=tcp,
    )
