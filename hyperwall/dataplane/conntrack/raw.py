"""Conntrack entries kept as the kernel's own attributes, not decoded: the bulk path of a
handover. Pure.

Counterpart of `conntrack.attrs` (which decodes the same attributes into an `Entry`). A
handover of 100,000 entries spent most of its time building `Entry` values only to encode
them again (about 20 us an entry each way on this machine). Neither end needs them: the
source dumps and sends, the destination injects, and of each entry they need only

- its **key**: the original tuple's attribute and `CTA_ZONE`, byte for byte as the kernel
  wrote them. Every key we compare comes from a kernel (a dump, a `CT_GET` answer, an
  event), so one entry has one key whichever of those it came from (tested);
- its **timeout**, to find the entries that could expire before traffic reaches the
  destination;
- its attributes **for a `CT_NEW`** on the other host (`copy`): the kept attributes
  (`conntrack.entry` says which) with `IPS_CONFIRMED` in the status, `CTA_MARK` always
  (an update also clears a mark), the TCP flags written with mask 0xff and, as the copy of
  a TCP entry on another host, `IP_CT_TCP_FLAG_BE_LIBERAL` in both directions
  (docs/design/migration.md). The key comes first in them (`key_of`). They decode
  (`attrs.decode`) to what `attrs.encode` writes for the decoded entry made liberal
  (property test).

Speed: `copy` parses an entry once, generically, and learns its layout (`_Layout`: where
each attribute header is, what to copy, where the TCP flags are); an entry with the same
headers at the same places (what a dump is made of) is then checked with one `unpack` and
copied by slicing.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from hyperwall.dataplane.conntrack import attrs
from hyperwall.dataplane.conntrack.entry import IPS_CONFIRMED, Entry

AF_INET = 2
AF_INET6 = 10
TCP_BE_LIBERAL = 0x08  # IP_CT_TCP_FLAG_BE_LIBERAL
_NLA = struct.Struct("=HH")
_BE32 = struct.Struct(">I")
# Copied after the key, in this order; anything else a dump carries (id, use, counters,
# timestamps, NAT, helpers, secctx, ...) is left out, as `attrs.decode` leaves it out.
_AFTER_KEY = (attrs.CTA_TUPLE_REPLY, attrs.CTA_TIMEOUT, attrs.CTA_MARK, attrs.CTA_LABELS)
_ZERO_MARK = _NLA.pack(8, attrs.CTA_MARK) + _BE32.pack(0)
_TCP = struct.Struct("=HHHHHHB3xHHB3xHHB3xHHBB2xHHBB2x")  # CTA_PROTOINFO as dumped
_TCP_HEADERS = (
    48, attrs.CTA_PROTOINFO | attrs.NLA_F_NESTED,
    44, attrs.CTA_PROTOINFO_TCP | attrs.NLA_F_NESTED,
    5, attrs.CTA_PROTOINFO_TCP_STATE,
    5, attrs.CTA_PROTOINFO_TCP_WSCALE_ORIGINAL,
    5, attrs.CTA_PROTOINFO_TCP_WSCALE_REPLY,
    6, attrs.CTA_PROTOINFO_TCP_FLAGS_ORIGINAL,
    6, attrs.CTA_PROTOINFO_TCP_FLAGS_REPLY,
)  # fmt: skip
_TCP_FLAGS = (36, 44)  # offsets of the two (flags, mask) pairs in `_TCP`


class RawError(ValueError):
    """Attributes that are not an entry we can carry."""


@dataclass(frozen=True, slots=True)
class RawEntry:
    """An entry as attributes for a `CT_NEW` (`body`, the key first), its key, and its
    remaining seconds when it was read (0 if not known)."""

    key: bytes
    body: bytes
    timeout: int = 0

    @property
    def family(self) -> int:
        return family_of(self.key)


def _spans(data: bytes | memoryview, start: int, end: int) -> list[tuple[int, int, int]]:
    """(type, attribute start, attribute end) of each top-level attribute, header included."""
    out = []
    unpack = _NLA.unpack_from
    while start + 4 <= end:
        length, kind = unpack(data, start)
        if length < 4 or start + length > end:
            raise RawError(f"attribute of length {length} at {start}")
        out.append((kind & attrs.NLA_TYPE_MASK, start, start + length))
        start += (length + 3) & ~3
    return out


def _padded(data: bytes | memoryview, s: int, e: int) -> bytes:
    return bytes(data[s:e]) + b"\0" * (-(e - s) % 4)


def _tcp_dumped(data: bytes | memoryview, s: int, e: int) -> bool:
    """Whether data[s:e] is a TCP `CTA_PROTOINFO` in the layout the kernel dumps."""
    if e - s != _TCP.size:
        return False
    g = _TCP.unpack_from(data, s)
    return (g[0], g[1], g[2], g[3], g[4], g[5], g[7], g[8], g[10], g[11], g[13], g[14], g[17],
            g[18]) == _TCP_HEADERS  # fmt: skip


def _liberal(protoinfo: bytes) -> bytes:
    """A dumped TCP `CTA_PROTOINFO` with both directions' flags liberal, mask 0xff."""
    o, r = _TCP_FLAGS
    return (
        protoinfo[:o]
        + bytes((protoinfo[o] | TCP_BE_LIBERAL, 0xFF))
        + protoinfo[o + 2 : r]
        + bytes((protoinfo[r] | TCP_BE_LIBERAL, 0xFF))
        + protoinfo[r + 2 :]
    )


def _tcp_as_dumped(data: bytes | memoryview, s: int, e: int) -> bytes:
    """A TCP `CTA_PROTOINFO` in another layout, rewritten in the dumped one (b"" if it is
    not TCP's)."""
    info = attrs.decode_tcp(data, (s + 4, e))
    if info is None:
        return b""
    h = _TCP_HEADERS
    return _TCP.pack(
        *h[:6], info.state, *h[6:8], info.wscale_orig, *h[8:10], info.wscale_reply,
        *h[10:12], info.flags_orig, 0, *h[12:14], info.flags_reply, 0,
    )  # fmt: skip


@dataclass(frozen=True)
class _Layout:
    """Where an entry's attributes are (learned from one entry), to copy another entry
    with the same headers at the same places by slicing."""

    size: int
    heads: struct.Struct  # every attribute header, the values skipped
    expected: tuple[int, ...]
    key: tuple[tuple[int, int], ...]  # slices: the original tuple, the zone
    rest: tuple[tuple[int, int], ...]  # slices: reply, timeout, mark, labels
    status: int  # offset of the status value; -1: none
    timeout: int  # offset of the timeout value; -1: none
    mark: bool
    tcp: int  # offset of a dumped TCP CTA_PROTOINFO; -1: none


def _learn(data: bytes | memoryview, start: int, end: int) -> _Layout | None:
    spans = _spans(data, start, end)
    size = end - start
    # slices with the padding (zeros, as the kernel writes it) so that they concatenate
    by_kind = {kind: (s - start, min((e - start + 3) & ~3, size)) for kind, s, e in spans}
    if attrs.CTA_TUPLE_ORIG not in by_kind or attrs.CTA_TUPLE_REPLY not in by_kind:
        raise RawError("entry without both tuples")
    if any(e % 4 for _, e in by_kind.values()):
        return None  # not padded at the end: leave it to the slow path
    heads = [s - start for _, s, _ in spans]
    protoinfo = by_kind.get(attrs.CTA_PROTOINFO)
    tcp = -1
    if protoinfo is not None:
        if not _tcp_dumped(data, start + protoinfo[0], start + protoinfo[1]):
            return None
        tcp = protoinfo[0]
        heads += [tcp + 4 + i for i in (0, 4, 12, 20, 28, 36)]
    heads.sort()
    fmt, at = "=", 0
    for offset in heads:
        fmt += f"{offset - at}xHH"
        at = offset + 4
    structure = struct.Struct(fmt)

    def value(kind: int) -> int:
        span = by_kind.get(kind)
        return -1 if span is None else span[0] + 4

    return _Layout(
        size=size,
        heads=structure,
        expected=structure.unpack_from(data, start),
        key=tuple(by_kind[k] for k in (attrs.CTA_TUPLE_ORIG, attrs.CTA_ZONE) if k in by_kind),
        rest=tuple(by_kind[k] for k in _AFTER_KEY if k in by_kind),
        status=value(attrs.CTA_STATUS),
        timeout=value(attrs.CTA_TIMEOUT),
        mark=attrs.CTA_MARK in by_kind,
        tcp=tcp,
    )


_LAYOUTS: dict[int, _Layout | None] = {}  # by entry size: the last layout learned


def copy(data: bytes | memoryview, start: int = 0, end: int | None = None) -> RawEntry:
    """The entry in data[start:end] (dumped, or got, or as `wire` carries it) ready for a
    `CT_NEW` on another host (see the module docstring), with its key and timeout."""
    end = len(data) if end is None else end
    layout = _LAYOUTS.get(end - start)
    if layout is None or layout.heads.unpack_from(data, start) != layout.expected:
        layout = _learn(data, start, end)
        _LAYOUTS[end - start] = layout
        if layout is None:
            return _copy_slowly(data, start, end)
    key = b"".join(bytes(data[start + s : start + e]) for s, e in layout.key)
    parts = [key]
    parts += [bytes(data[start + s : start + e]) for s, e in layout.rest]
    if not layout.mark:
        parts.append(_ZERO_MARK)
    status = 0 if layout.status < 0 else _BE32.unpack_from(data, start + layout.status)[0]
    parts.append(_NLA.pack(8, attrs.CTA_STATUS) + _BE32.pack(status | IPS_CONFIRMED))
    if layout.tcp >= 0:
        at = start + layout.tcp
        parts.append(_liberal(bytes(data[at : at + _TCP.size])))
    timeout = 0 if layout.timeout < 0 else _BE32.unpack_from(data, start + layout.timeout)[0]
    return RawEntry(key, b"".join(parts), timeout)


def _copy_slowly(data: bytes | memoryview, start: int, end: int) -> RawEntry:
    """`copy` by walking the attributes (an entry in a layout `_learn` does not take)."""
    found: dict[int, bytes] = {}
    status = timeout = 0
    tcp = b""
    for kind, s, e in _spans(data, start, end):
        if kind == attrs.CTA_STATUS:
            status = _BE32.unpack_from(data, s + 4)[0]
        elif kind == attrs.CTA_TIMEOUT:
            timeout = _BE32.unpack_from(data, s + 4)[0]
        elif kind == attrs.CTA_PROTOINFO:
            tcp = bytes(data[s:e]) if _tcp_dumped(data, s, e) else _tcp_as_dumped(data, s, e)
        found[kind] = _padded(data, s, e)
    if attrs.CTA_TUPLE_ORIG not in found or attrs.CTA_TUPLE_REPLY not in found:
        raise RawError("entry without both tuples")
    key = found[attrs.CTA_TUPLE_ORIG] + found.get(attrs.CTA_ZONE, b"")
    parts = [key, *(found[k] for k in _AFTER_KEY if k in found)]
    if attrs.CTA_MARK not in found:
        parts.append(_ZERO_MARK)
    parts.append(_NLA.pack(8, attrs.CTA_STATUS) + _BE32.pack(status | IPS_CONFIRMED))
    if tcp:
        parts.append(_liberal(tcp))
    return RawEntry(key, b"".join(parts), timeout)


def key_of(body: bytes) -> bytes:
    """The key at the front of attributes written by `copy`."""
    (length,) = struct.unpack_from("=H", body)
    end = (length + 3) & ~3
    if len(body) >= end + 4:
        zone_length, kind = _NLA.unpack_from(body, end)
        if kind & attrs.NLA_TYPE_MASK == attrs.CTA_ZONE:
            end += (zone_length + 3) & ~3
    return body[:end]


def key_in(data: bytes | memoryview, start: int, end: int) -> bytes | None:
    """The key of the entry in data[start:end] (an event, a dump), None if it has no
    original tuple."""
    orig = zone = b""
    for kind, s, e in _spans(data, start, end):
        if kind == attrs.CTA_TUPLE_ORIG:
            orig = _padded(data, s, e)
        elif kind == attrs.CTA_ZONE:
            zone = _padded(data, s, e)
    return orig + zone if orig else None


_V4_ADDRESSES = struct.Struct("=HH4sHH4s")  # as the kernel writes a tuple's IPv4 addresses
_V4_HEADS = (8, attrs.CTA_IP_V4_SRC, 8, attrs.CTA_IP_V4_DST)


def key_addresses(key: bytes) -> set[bytes]:
    """The original tuple's source and destination addresses of a key, packed."""
    if len(key) >= 32:  # the kernel's layout: tuple, addresses nest, source, destination
        src_len, src_kind, src, dst_len, dst_kind, dst = _V4_ADDRESSES.unpack_from(key, 8)
        if (src_len, src_kind, dst_len, dst_kind) == _V4_HEADS:
            return {src, dst}
    found: set[bytes] = set()
    for kind, s, e in _spans(key, 0, len(key)):
        if kind == attrs.CTA_TUPLE_ORIG:
            for inner, t, u in _spans(key, s + 4, e):
                if inner == attrs.CTA_TUPLE_IP:
                    found.update(key[v + 4 : w] for _, v, w in _spans(key, t + 4, u))
    return found


def family_of(key: bytes) -> int:
    """AF_INET or AF_INET6: the address family of a key's tuple (for the message header)."""
    if len(key) >= 12:  # as the kernel writes it: the addresses first, the source first
        first = _NLA.unpack_from(key, 8)[1] & attrs.NLA_TYPE_MASK
        if first == attrs.CTA_IP_V4_SRC:
            return AF_INET
        if first == attrs.CTA_IP_V6_SRC:
            return AF_INET6
    return AF_INET if key_entry(key).family == 4 else AF_INET6


def key_entry(key: bytes) -> Entry:
    """A key as an `Entry` (both tuples the original one): to name it in a message."""
    for kind, s, e in _spans(key, 0, len(key)):
        if kind == attrs.CTA_TUPLE_ORIG:
            tuple_, _ = attrs.decode_tuple(key, (s + 4, e))
            return Entry(orig=tuple_, reply=tuple_)
    raise RawError("key without an original tuple")
