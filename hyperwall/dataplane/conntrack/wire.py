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
    parts = [b""]
    for entry in entries:
        body = attrs.encode(entry, for_kernel=False)
        parts.append(_LEN.pack(len(body)) + body)
    parts[0] = _HEAD.pack(MAGIC, VERSION, len(parts) - 1)
    return b"".join(parts)


def loads(data: bytes) -> list[Entry]:
    """The entries in `data` (as written by `dumps`)."""
    if len(data) < _HEAD.size:
        raise WireError("too short for a header")
    magic, version, count = _HEAD.unpack_from(data)
    if magic != MAGIC or version != VERSION:
        raise WireError(f"not conntrack entries of version {VERSION}")
    out: list[Entry] = []
    cache: attrs.AddressCache = {}
    offset = _HEAD.size
    for _ in range(count):
        if offset + 2 > len(data):
            raise WireError("truncated")
        (length,) = _LEN.unpack_from(data, offset)
        end = offset + 2 + length
        if end > len(data):
            raise WireError("truncated")
        try:
            out.append(attrs.decode(data, offset + 2, end, cache))
        except (attrs.DecodeError, struct.error, IndexError) as exc:
            raise WireError(f"entry {len(out)}: {exc}") from exc
        offset = end
    if offset != len(data):
        raise WireError("trailing bytes")
    return out
