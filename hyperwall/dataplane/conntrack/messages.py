"""ctnetlink messages: requests to create, delete and dump conntrack entries, and the
kernel's replies split into messages. Pure.

Counterpart of `conntrack.attrs` (the attributes inside) and `conntrack.kernel` (which
sends these on a netlink socket). ctnetlink has no transactions: nfnetlink batches
(`NFNL_MSG_BATCH_BEGIN`) are only for subsystems with commit/abort (nftables, ipset), so a
"batch" of entries is many `IPCTNL_MSG_CT_NEW` messages in one `send`, each applied on its
own. Only the last message of a chunk asks for an acknowledgement; the kernel answers any
message that fails with an error carrying its sequence number, so the acknowledgement of
the last one says the chunk is through, and the errors before it say which entries failed.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from hyperwall.dataplane.conntrack import attrs
from hyperwall.dataplane.conntrack.entry import Address, Entry

NFNL_SUBSYS_CTNETLINK = 1
IPCTNL_MSG_CT_NEW = 0
IPCTNL_MSG_CT_GET = 1
IPCTNL_MSG_CT_DELETE = 2
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST = 0x1
NLM_F_MULTI = 0x2
NLM_F_ACK = 0x4
NLM_F_DUMP = 0x300
NLM_F_EXCL = 0x200
NLM_F_CREATE = 0x400
AF_INET = 2
AF_INET6 = 10

_NLMSG = struct.Struct("=IHHII")  # length, type, flags, sequence, port id
_NFGEN = struct.Struct("=BBH")  # family, version, resource id
HEADER = _NLMSG.size + _NFGEN.size


def family_of(version: int) -> int:
    return AF_INET if version == 4 else AF_INET6


def message(kind: int, flags: int, seq: int, family: int, body: bytes) -> bytes:
    """One ctnetlink message of type `kind` (IPCTNL_MSG_*)."""
    header = _NLMSG.pack(HEADER + len(body), (NFNL_SUBSYS_CTNETLINK << 8) | kind, flags, seq, 0)
    return header + _NFGEN.pack(family, 0, 0) + body


def batch(kind: int, flags: int, items: Sequence[tuple[int, bytes]], seq: int) -> bytes:
    """A message of `kind` for each (family, attributes), numbered `seq`, `seq + 1`, ...;
    the last one asks for an acknowledgement."""
    last = len(items) - 1
    return b"".join(
        message(kind, flags | NLM_F_ACK if i == last else flags, seq + i, family, body)
        for i, (family, body) in enumerate(items)
    )


def new_flags(update: bool) -> int:
    """`IPCTNL_MSG_CT_NEW` flags. `update`: an entry that exists is updated to the values
    given, otherwise (`NLM_F_EXCL`) it fails with EEXIST."""
    return NLM_F_REQUEST | NLM_F_CREATE | (0 if update else NLM_F_EXCL)


def new_messages(entries: Sequence[Entry], seq: int, update: bool) -> bytes:
    """`IPCTNL_MSG_CT_NEW` for each entry (see `batch`, `new_flags`)."""
    items = [(family_of(e.family), attrs.encode(e)) for e in entries]
    return batch(IPCTNL_MSG_CT_NEW, new_flags(update), items, seq)


def delete_messages(entries: Sequence[Entry], seq: int) -> bytes:
    """`IPCTNL_MSG_CT_DELETE` of each entry by its key; the last one asks for an ack."""
    items = [(family_of(e.family), attrs.encode_key(e)) for e in entries]
    return batch(IPCTNL_MSG_CT_DELETE, NLM_F_REQUEST, items, seq)


def address_requests(addresses: Sequence[Address], kind: int, seq: int) -> list[bytes]:
    """For each address, two requests of `kind` (a dump: `IPCTNL_MSG_CT_GET`, or a flush:
    `IPCTNL_MSG_CT_DELETE`) limited by the kernel to the entries whose original source, then
    original destination, is that address."""
    flags = NLM_F_REQUEST | (NLM_F_DUMP if kind == IPCTNL_MSG_CT_GET else NLM_F_ACK)
    out = []
    for address in addresses:
        for field in (attrs.CTA_FILTER_F_IP_SRC, attrs.CTA_FILTER_F_IP_DST):
            body = attrs.address_filter(address, field)
            out.append(message(kind, flags, seq, family_of(address.version), body))
            seq += 1
    return out


def dump_request(seq: int, family: int = 0) -> bytes:
    """A dump of every entry of the namespace (`family` 0: both IPv4 and IPv6)."""
    return message(IPCTNL_MSG_CT_GET, NLM_F_REQUEST | NLM_F_DUMP, seq, family, b"")


@dataclass(frozen=True, slots=True)
class Reply:
    """One message from the kernel: `error` is set for NLMSG_ERROR (0: an ack, else a
    negative errno); an entry's attributes are `data[start:end]`."""

    kind: int
    seq: int
    error: int | None
    start: int
    end: int

    @property
    def done(self) -> bool:
        return self.kind == NLMSG_DONE


def replies(data: bytes | memoryview) -> Iterator[Reply]:
    """The messages in one buffer read from the socket."""
    offset = 0
    size = len(data)
    unpack = _NLMSG.unpack_from
    while offset + _NLMSG.size <= size:
        length, kind, _, seq, _ = unpack(data, offset)
        if length < _NLMSG.size:
            break
        error = None
        # An error carries an int; so does a dump's end (an error if it failed part-way).
        if kind == NLMSG_ERROR or (kind == NLMSG_DONE and length >= _NLMSG.size + 4):
            (error,) = struct.unpack_from("=i", data, offset + _NLMSG.size)
        yield Reply(kind, seq, error, offset + HEADER, offset + length)
        offset += (length + 3) & ~3
