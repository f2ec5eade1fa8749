"""Conntrack entries as compact bytes, to send from one host to another. Pure.

Counterpart of `conntrack.attrs`: the wire form is each entry's ctnetlink attributes (the
kernel's own, stable, UAPI encoding; about 200 bytes for an IPv4 TCP entry) with a 16-bit
length in front, after a header of magic, version and count. The status is carried as is
(`IPS_CONFIRMED` is added only when an entry goes into a kernel). The receiver decodes with
the same code that reads the kernel's dumps, so what it injects is what it would have
dumped.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

from hyperwall.dataplane.conntrack import attrs
from hyperwall.dataplane.conntrack.entry import Entry

MAGIC = b"HWCT"
VERSION = 1
_HEAD = struct.Struct(">4sBI")  # magic, version, count
_LEN = struct.Struct(">H")


class WireError(ValueError):
    """Bytes that are not a batch of entries in this format."""


def dumps(entries: Iterable[Entry]) -> bytes:
    """`entries` as one byte string."""
    return dumps_raw(attrs.encode(entry, for_kernel=False) for entry in entries)


def dumps_raw(bodies: Iterable[bytes]) -> bytes:
    """Entries already in attribute form (as dumped: `conntrack.raw`) as one byte string."""
    parts = [b""]
    pack = _LEN.pack
    for body in bodies:
        parts.append(pack(len(body)))
        parts.append(body)
    parts[0] = _HEAD.pack(MAGIC, VERSION, (len(parts) - 1) // 2)
    return b"".join(parts)


def frames(data: bytes) -> list[tuple[int, int]]:
    """(start, end) of each entry's attributes in `data` (as written by `dumps`)."""
    if len(data) < _HEAD.size:
        raise WireError("too short for a header")
    magic, version, count = _HEAD.unpack_from(data)
    if magic != MAGIC or version != VERSION:
        raise WireError(f"not conntrack entries of version {VERSION}")
    out: list[tuple[int, int]] = []
    offset = _HEAD.size
    size = len(data)
    unpack = _LEN.unpack_from
    for _ in range(count):
        if offset + 2 > size:
            raise WireError("truncated")
        (length,) = unpack(data, offset)
        end = offset + 2 + length
        if end > size:
            raise WireError("truncated")
        out.append((offset + 2, end))
        offset = end
    if offset != size:
        raise WireError("trailing bytes")
    return out


def loads(data: bytes) -> list[Entry]:
    """The entries in `data` (as written by `dumps`)."""
    out: list[Entry] = []
    cache: attrs.AddressCache = {}
    for start, end in frames(data):
        try:
            out.append(attrs.decode(data, start, end, cache))
        except (attrs.DecodeError, struct.error, IndexError) as exc:
            raise WireError(f"entry {len(out)}: {exc}") from exc
    return out
