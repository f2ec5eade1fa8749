"""Set elements as nfnetlink messages: the bulk path of a fresh table's exact block sets. Pure.

Counterpart of `nft.json_text` (JSON text for libnftables) and `nft.kernel` (which sends both).
libnftables spends about 6 us of CPU per element of three fields parsing, evaluating and
linearising JSON; the kernel then spends 2-4 us inserting it. For the big exact block sets
of a fresh table (hash sets: nothing to evaluate, no intervals to check) that first part is
pure overhead, so `element_batch` writes the kernel's own message, `NFT_MSG_NEWSETELEM`, in
one nfnetlink batch (one transaction, all or nothing), with `struct`.

The key of a concatenation is its fields in order, each padded to 4 bytes, in network byte
order: an exact `e` element `saddr . daddr . dport` of IPv4 is 4 + 4 + 2 (+2 zero) bytes.
The sets themselves are created by libnftables (their key types, which nft reads back from
the set's user data, stay nft's own), and read back by it: tests compare the elements listed
by nft with the ones sent, for every shape and family.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator, Sequence

from hyperwall.dataplane.nft.table import Element, SetSpec, block_set_shape

NFNL_SUBSYS_NFTABLES = 10
NFT_MSG_NEWSETELEM = 12
NFNL_MSG_BATCH_BEGIN = 0x10
NFNL_MSG_BATCH_END = 0x11
NLMSG_ERROR = 2
NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
NLM_F_CREATE = 0x400
NLA_F_NESTED = 0x8000
NFPROTO_INET = 1
NFTA_SET_ELEM_LIST_TABLE = 1
NFTA_SET_ELEM_LIST_SET = 2
NFTA_SET_ELEM_LIST_ELEMENTS = 3
NFTA_LIST_ELEM = 1
NFTA_SET_ELEM_KEY = 1
NFTA_DATA_VALUE = 1

_NLMSG = struct.Struct("=IHHII")  # length, type, flags, sequence, port id
_NFGEN = struct.Struct("=BBH")  # family, version, resource id (network order, packed as is)
_NLA = struct.Struct("=HH")  # length, type
_SUBSYS_BE = struct.unpack("=H", struct.pack(">H", NFNL_SUBSYS_NFTABLES))[0]
_MAX_NEST = 0xFFFF  # an attribute's length is 16 bits: elements go in chunks below it


def _attr(kind: int, payload: bytes) -> bytes:
    pad = -len(payload) % 4
    return _NLA.pack(4 + len(payload), kind) + payload + b"\0" * pad


def _message(kind: int, flags: int, seq: int, family: int, res_id: int, body: bytes) -> bytes:
    header = _NLMSG.pack(16 + 4 + len(body), kind, flags, seq, 0)
    return header + _NFGEN.pack(family, 0, res_id) + body


def exact_keys(spec: SetSpec, elements: Iterable[Element]) -> list[bytes]:
    """The kernel keys of an exact block set's elements (the canonical tuples
    `(src, _, dst, _, _, port, _)`): the shape's fields in order, each padded to 4 bytes."""
    width = 4 if spec.type[0] == "ipv4_addr" else 16
    kind = block_set_shape(spec.name)[1]
    if spec.interval or kind not in "esd":
        raise ValueError(f"{spec.name}: not an exact block set")
    port = struct.Struct(">H2x").pack
    if kind == "e":
        return [
            s.to_bytes(width, "big") + d.to_bytes(width, "big") + port(pt)
            for s, _, d, _, _, pt, _ in elements
        ]
    if kind == "s":
        return [s.to_bytes(width, "big") + port(pt) for s, _, _, _, _, pt, _ in elements]
    return [d.to_bytes(width, "big") + port(pt) for _, _, d, _, _, pt, _ in elements]


def _chunks(keys: Sequence[bytes], overhead: int) -> Iterator[Sequence[bytes]]:
    if not keys:
        return
    per = (_MAX_NEST - 4) // (overhead + len(keys[0]))
    for start in range(0, len(keys), per):
        yield keys[start : start + per]


def element_batch(table: str, sets: Sequence[tuple[str, Sequence[bytes]]], seq: int) -> bytes:
    """One nfnetlink batch adding `keys` to each named set of inet `table`; every element
    message asks for an acknowledgement (`expected_acks` counts them). Sequence numbers start
    at `seq` (the batch begin) and count up."""
    parts = [_message(NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, seq, 0, _SUBSYS_BE, b"")]
    kind = (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWSETELEM
    flags = NLM_F_REQUEST | NLM_F_CREATE | NLM_F_ACK
    head = _attr(NFTA_SET_ELEM_LIST_TABLE, table.encode() + b"\0")
    for name, keys in sets:
        if not keys:
            continue
        # NFTA_LIST_ELEM { NFTA_SET_ELEM_KEY { NFTA_DATA_VALUE key } }
        size = len(keys[0])
        prefix = _NLA.pack(12 + size, NFTA_LIST_ELEM | NLA_F_NESTED) + _NLA.pack(
            8 + size, NFTA_SET_ELEM_KEY | NLA_F_NESTED
        )
        value = _NLA.pack(4 + size, NFTA_DATA_VALUE)
        if size % 4:
            raise ValueError(f"{name}: key of {size} bytes is not padded")
        set_attr = _attr(NFTA_SET_ELEM_LIST_SET, name.encode() + b"\0")
        for chunk in _chunks(keys, 12):
            elements = (prefix + value).join([b"", *chunk])
            nest = _NLA.pack(4 + len(elements), NFTA_SET_ELEM_LIST_ELEMENTS | NLA_F_NESTED)
            seq += 1
            parts.append(
                _message(kind, flags, seq, NFPROTO_INET, 0, head + set_attr + nest + elements)
            )
    seq += 1
    parts.append(_message(NFNL_MSG_BATCH_END, NLM_F_REQUEST, seq, 0, _SUBSYS_BE, b""))
    return b"".join(parts)


def expected_acks(batch: bytes) -> int:
    """How many acknowledgements `batch` asks for (its element messages)."""
    count, offset = 0, 0
    while offset < len(batch):
        length, _, flags, _, _ = _NLMSG.unpack_from(batch, offset)
        count += bool(flags & NLM_F_ACK)
        offset += length
    return count


def replies(data: bytes) -> Iterator[tuple[int, int]]:
    """(sequence, error) of each NLMSG_ERROR message in `data`: error 0 is an ack, else a
    negative errno."""
    offset = 0
    while offset + _NLMSG.size <= len(data):
        length, kind, _, seq, _ = _NLMSG.unpack_from(data, offset)
        if length < _NLMSG.size:
            break
        if kind == NLMSG_ERROR:
            (error,) = struct.unpack_from("=i", data, offset + _NLMSG.size)
            yield seq, error
        offset += (length + 3) & ~3
