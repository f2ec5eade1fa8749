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
from typing import Any

from hyperwall.dataplane.conntrack.entry import (
    ICMP_PROTOCOLS,
    IPPROTO_ICMPV6,
    IPPROTO_TCP,
    IPS_CONFIRMED,
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


def _swap16(value: int) -> int:
    """A host-order u16 as it reads in big-endian (headers inside a '>' struct format)."""
    return int.from_bytes(struct.pack("=H", value), "big")


class _Template:
    """A tuple's attributes (without its own header) as '>' structs: the attribute headers
    are constants (byte-swapped into big-endian), the rest are the tuple's values. Encodes
    in one `pack`; decodes in two `unpack_from` (headers, to check the shape; values) when
    the headers match, which they do for what the kernel dumps (same attributes, order)."""

    def __init__(self, fields: list[tuple[str, int | None]]) -> None:
        self.struct = struct.Struct(">" + "".join(f for f, _ in fields))
        self.size = self.struct.size
        self.consts = tuple(_swap16(c) for _, c in fields if c is not None)
        self.const_at = [i for i, (_, c) in enumerate(fields) if c is not None]
        self.value_at = [i for i, (_, c) in enumerate(fields) if c is None]
        pads = [f if c is not None else f"{struct.calcsize('>' + f)}x" for f, c in fields]
        vals = [f if c is None else "2x" for f, c in fields]
        self.headers = struct.Struct(">" + "".join(pads))
        self.values = struct.Struct(">" + "".join(vals))
        self._header = struct.Struct("=HH")

    def pack(self, kind: int, values: tuple[object, ...]) -> bytes:
        args: list[object] = [0] * (len(self.const_at) + len(self.value_at))
        for i, c in zip(self.const_at, self.consts, strict=True):
            args[i] = c
        for i, v in zip(self.value_at, values, strict=True):
            args[i] = v
        return self._header.pack(4 + self.size, kind | NLA_F_NESTED) + self.struct.pack(*args)

    def unpack(self, data: bytes | memoryview, start: int) -> tuple[Any, ...] | None:
        if self.headers.unpack_from(data, start) != self.consts:
            return None
        return self.values.unpack_from(data, start)


def _h(length: int, kind: int) -> list[tuple[str, int | None]]:
    return [("H", length), ("H", kind)]


def _ip_fields(v6: bool) -> list[tuple[str, int | None]]:
    size, src, dst = (16, CTA_IP_V6_SRC, CTA_IP_V6_DST) if v6 else (4, CTA_IP_V4_SRC, CTA_IP_V4_DST)
    return [
        *_h(4 + 2 * (4 + size), CTA_TUPLE_IP | NLA_F_NESTED),
        *_h(4 + size, src),
        (f"{size}s", None),
        *_h(4 + size, dst),
        (f"{size}s", None),
    ]


def _u8_fields(kind: int) -> list[tuple[str, int | None]]:
    return [*_h(5, kind), ("B3x", None)]


def _be16_fields(kind: int) -> list[tuple[str, int | None]]:
    return [*_h(6, kind), ("H2x", None)]


def _templates() -> dict[tuple[bool, str], _Template]:
    out = {}
    for v6 in (False, True):
        icmp = CTA_PROTO_ICMPV6_ID if v6 else CTA_PROTO_ICMP_ID
        shapes = {
            "ports": [
                *_u8_fields(CTA_PROTO_NUM),
                *_be16_fields(CTA_PROTO_SRC_PORT),
                *_be16_fields(CTA_PROTO_DST_PORT),
            ],
            "icmp": [
                *_u8_fields(CTA_PROTO_NUM),
                *_be16_fields(icmp),
                *_u8_fields(icmp + 1),
                *_u8_fields(icmp + 2),
            ],
            "other": _u8_fields(CTA_PROTO_NUM),
        }
        for shape, proto in shapes.items():
            length = 4 + 8 * (len(proto) // 3)
            fields = [*_ip_fields(v6), *_h(length, CTA_TUPLE_PROTO | NLA_F_NESTED), *proto]
            out[(v6, shape)] = _Template(fields)
    return out


_TEMPLATES = _templates()
_BY_SIZE: dict[int, list[tuple[str, _Template]]] = {}
for (_, _shape_name), _template in _TEMPLATES.items():
    _BY_SIZE.setdefault(_template.size, []).append((_shape_name, _template))


def _shape(proto: int) -> str:
    if proto in PORT_PROTOCOLS:
        return "ports"
    return "icmp" if proto in ICMP_PROTOCOLS else "other"


def encode_tuple(kind: int, t: Tuple, zone: int | None = None) -> bytes:
    """`CTA_TUPLE_ORIG`/`CTA_TUPLE_REPLY` (`kind`) for `t`; `zone` adds `CTA_TUPLE_ZONE`."""
    if zone is None:
        template = _TEMPLATES[(t.family == 6, _shape(t.proto))]
        values: tuple[object, ...] = (t.src.packed, t.dst.packed, t.proto)
        if t.proto in PORT_PROTOCOLS:
            values += (t.sport, t.dport)
        elif t.proto in ICMP_PROTOCOLS:
            values += (t.sport, t.icmp_type, t.icmp_code)
        return template.pack(kind, values)
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


def _fast_encoder(size: int) -> tuple[struct.Struct, tuple[bytes, ...]]:
    """One struct for a whole entry of a port protocol (TCP, UDP, ...) with addresses of
    `size` bytes and TCP info, and its constant attribute headers: one `pack` per entry."""

    def h(length: int, kind: int) -> bytes:
        return _NLA.pack(length, kind)

    tuple_len = 4 + (4 + 2 * (4 + size)) + 28
    ip = h(4 + 2 * (4 + size), CTA_TUPLE_IP | NLA_F_NESTED)
    head = [
        h(tuple_len, CTA_TUPLE_ORIG | NLA_F_NESTED) + ip + h(4 + size, 3 if size == 16 else 1),
        h(4 + size, 4 if size == 16 else 2),
        h(28, CTA_TUPLE_PROTO | NLA_F_NESTED) + h(5, CTA_PROTO_NUM),
        h(6, CTA_PROTO_SRC_PORT),
        h(6, CTA_PROTO_DST_PORT),
        h(tuple_len, CTA_TUPLE_REPLY | NLA_F_NESTED) + ip + h(4 + size, 3 if size == 16 else 1),
        h(4 + size, 4 if size == 16 else 2),
        h(28, CTA_TUPLE_PROTO | NLA_F_NESTED) + h(5, CTA_PROTO_NUM),
        h(6, CTA_PROTO_SRC_PORT),
        h(6, CTA_PROTO_DST_PORT),
        h(8, CTA_STATUS),
        h(8, CTA_TIMEOUT),
        h(8, CTA_MARK),
        h(48, CTA_PROTOINFO | NLA_F_NESTED)
        + h(44, CTA_PROTOINFO_TCP | NLA_F_NESTED)
        + h(5, CTA_PROTOINFO_TCP_STATE),
        h(5, CTA_PROTOINFO_TCP_WSCALE_ORIGINAL),
        h(5, CTA_PROTOINFO_TCP_WSCALE_REPLY),
        h(6, CTA_PROTOINFO_TCP_FLAGS_ORIGINAL),
        h(6, CTA_PROTOINFO_TCP_FLAGS_REPLY),
    ]
    a = f"{size}s"
    tup = f"{len(head[0])}s{a}4s{a}8sB3x4sH2x4sH2x"
    fmt = ">" + tup + tup + "4sI4sI4sI" + "12sB3x4sB3x4sB3x4sBB2x4sBB2x"
    return struct.Struct(fmt), tuple(head)


_FAST = {4: _fast_encoder(4), 6: _fast_encoder(16)}


def _encode_fast(entry: Entry, tcp: TcpInfo, confirmed: int) -> bytes:
    o, r = entry.orig, entry.reply
    packer, h = _FAST[o.family]
    return packer.pack(
        h[0], o.src.packed, h[1], o.dst.packed, h[2], o.proto, h[3], o.sport, h[4], o.dport,
        h[5], r.src.packed, h[6], r.dst.packed, h[7], r.proto, h[8], r.sport, h[9], r.dport,
        h[10], entry.status | confirmed, h[11], entry.timeout, h[12], entry.mark,
        h[13], tcp.state, h[14], tcp.wscale_orig, h[15], tcp.wscale_reply,
        h[16], tcp.flags_orig, 0xFF, h[17], tcp.flags_reply, 0xFF,
    )  # fmt: skip


def encode(entry: Entry, for_kernel: bool = True) -> bytes:
    """The attributes of an `IPCTNL_MSG_CT_NEW` that creates (or updates) `entry`.
    `for_kernel` adds `IPS_CONFIRMED` to the status (without it, the status is as is)."""
    confirmed = IPS_CONFIRMED if for_kernel else 0
    tcp = entry.tcp
    if tcp is not None and entry.orig.proto == IPPROTO_TCP and entry.zone_dir == ZONE_DIR_BOTH:
        body = _encode_fast(entry, tcp, confirmed)
        if entry.zone:
            body += _be16(CTA_ZONE, entry.zone)
        if entry.labels:
            body += attr(CTA_LABELS, entry.labels.to_bytes(LABELS_BYTES, "little"))
        return body
    zone, orig_zone, reply_zone = zone_attrs(entry)
    parts = [
        encode_tuple(CTA_TUPLE_ORIG, entry.orig, orig_zone),
        encode_tuple(CTA_TUPLE_REPLY, entry.reply, reply_zone),
        zone,
        _be32(CTA_STATUS, entry.status | confirmed),
        _be32(CTA_TIMEOUT, entry.timeout),
        _be32(CTA_MARK, entry.mark),
    ]
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


AddressCache = dict[bytes, Address]


def _cached(cache: AddressCache, raw: bytes) -> Address:
    found = cache.get(raw)
    if found is None:
        found = cache[raw] = IPv4Address(raw) if len(raw) == 4 else IPv6Address(raw)
    return found


def _fast_tuple(
    data: bytes | memoryview, span: tuple[int, int], cache: AddressCache
) -> Tuple | None:
    """The tuple by one of the templates, or None if it is not in a template's shape."""
    for shape, template in _BY_SIZE.get(span[1] - span[0], ()):
        got = template.unpack(data, span[0])
        if got is None:
            continue
        src, dst, proto = _cached(cache, got[0]), _cached(cache, got[1]), got[2]
        if _shape(proto) != shape:
            return None
        rest = got[3:]
        if shape == "ports":
            return Tuple(src, dst, proto, rest[0], rest[1])
        if shape == "icmp":
            return Tuple(src, dst, proto, rest[0], 0, rest[1], rest[2])
        return Tuple(src, dst, proto)
    return None


def decode_tuple(
    data: bytes | memoryview, span: tuple[int, int], cache: AddressCache | None = None
) -> tuple[Tuple, int | None]:
    """A tuple attribute's payload: the tuple and its `CTA_TUPLE_ZONE`, if any. `cache`
    shares address objects between entries (a VM's address is in each of its entries)."""
    fast = _fast_tuple(data, span, {} if cache is None else cache)
    if fast is not None:
        return fast, None
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


_TCP_DUMPED = struct.Struct("=HHHHB3xHHB3xHHB3xHHBB2xHHBB2x")
_TCP_HEADERS = (
    44, CTA_PROTOINFO_TCP | NLA_F_NESTED, 5, CTA_PROTOINFO_TCP_STATE,
    5, CTA_PROTOINFO_TCP_WSCALE_ORIGINAL, 5, CTA_PROTOINFO_TCP_WSCALE_REPLY,
    6, CTA_PROTOINFO_TCP_FLAGS_ORIGINAL, 6, CTA_PROTOINFO_TCP_FLAGS_REPLY,
)  # fmt: skip


def decode_tcp(data: bytes | memoryview, span: tuple[int, int]) -> TcpInfo | None:
    if span[1] - span[0] == _TCP_DUMPED.size:
        g = _TCP_DUMPED.unpack_from(data, span[0])
        if (g[0], g[1], g[2], g[3], g[5], g[6], g[8], g[9], g[11], g[12], g[15], g[16]) == (
            _TCP_HEADERS
        ):
            return TcpInfo(g[4], g[7], g[10], g[13], g[17])
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


def decode(
    data: bytes | memoryview,
    start: int = 0,
    end: int | None = None,
    cache: AddressCache | None = None,
) -> Entry:
    """The entry described by the attributes in data[start:end] (a `CT_NEW` or a dumped
    entry). Attributes that are not kept (see `conntrack.entry`) are skipped."""
    top = parse(data, start, len(data) if end is None else end)
    if CTA_TUPLE_ORIG not in top or CTA_TUPLE_REPLY not in top:
        raise DecodeError("entry without both tuples")
    cache = {} if cache is None else cache
    orig, orig_zone = decode_tuple(data, top[CTA_TUPLE_ORIG], cache)
    reply, reply_zone = decode_tuple(data, top[CTA_TUPLE_REPLY], cache)
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
        tcp = decode_tcp(data, top[CTA_PROTOINFO])
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
