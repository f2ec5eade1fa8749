"""The counters of our table's rules, from a netlink dump of its rules alone. Pure.

Counterpart of `nft.kernel.NftKernel.list_rules` (which sends the request and reads the
answer) and `nft.hits` (which reads the result as it reads `nft -j` output). Why not
libnftables: nft 1.0.6 fills its cache with every set element before it lists any rule
(measured: `nft -t list table` and `nft list chain` of a 10,000-rule table each took
0.4-0.5 s, as long as fetching every element), while the kernel dumps rules alone when
asked `NFT_MSG_GETRULE` with `NLM_F_DUMP` and the table's name (`NFTA_RULE_TABLE`). The
answer is one message per rule, chain by chain, each chain's rules in order: the chain's
name (`NFTA_RULE_CHAIN`) and its expressions (`NFTA_RULE_EXPRESSIONS`), of which only the
`counter` one is read (`NFTA_COUNTER_PACKETS`, `NFTA_COUNTER_BYTES`, big-endian u64).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import Any

NFNL_SUBSYS_NFTABLES = 10
NFT_MSG_GETRULE = 7
NLM_F_REQUEST = 0x1
NLM_F_DUMP = 0x300
NLMSG_ERROR = 2
NLMSG_DONE = 3
NFPROTO_INET = 1
NFTA_RULE_TABLE = 1
NFTA_RULE_CHAIN = 2
NFTA_RULE_EXPRESSIONS = 4
NFTA_LIST_ELEM = 1
NFTA_EXPR_NAME = 1
NFTA_EXPR_DATA = 2
NFTA_COUNTER_BYTES = 1
NFTA_COUNTER_PACKETS = 2
NLA_TYPE_MASK = 0x3FFF

_NLMSG = struct.Struct("=IHHII")
_NFGEN = struct.Struct("=BBH")
_NLA = struct.Struct("=HH")
_U64 = struct.Struct(">Q")


class DumpError(ValueError):
    """The kernel refused the dump (`errno` set), or sent what is not a rule."""

    def __init__(self, message: str, errno: int | None = None) -> None:
        super().__init__(message)
        self.errno = errno


def dump_request(table: str, seq: int, family: int = NFPROTO_INET) -> bytes:
    """`NFT_MSG_GETRULE` dump of every rule of `table`."""
    name = table.encode() + b"\0"
    attr = _NLA.pack(4 + len(name), NFTA_RULE_TABLE) + name + b"\0" * (-len(name) % 4)
    kind = (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETRULE
    header = _NLMSG.pack(16 + 4 + len(attr), kind, NLM_F_REQUEST | NLM_F_DUMP, seq, 0)
    return header + _NFGEN.pack(family, 0, 0) + attr


def _attrs(data: bytes, start: int, end: int) -> Iterator[tuple[int, int, int]]:
    while start + 4 <= end:
        length, kind = _NLA.unpack_from(data, start)
        if length < 4 or start + length > end:
            raise DumpError(f"attribute of length {length} at {start}")
        yield kind & NLA_TYPE_MASK, start + 4, start + length
        start += (length + 3) & ~3


def _counter(data: bytes, start: int, end: int) -> dict[str, int] | None:
    """The counter of a rule's expressions list, if it has one."""
    for kind, s, e in _attrs(data, start, end):
        if kind != NFTA_LIST_ELEM:
            continue
        found = {k: (ks, ke) for k, ks, ke in _attrs(data, s, e)}
        name, body = found.get(NFTA_EXPR_NAME), found.get(NFTA_EXPR_DATA)
        if name is None or body is None or data[name[0] : name[1]].rstrip(b"\0") != b"counter":
            continue
        values = {k: _U64.unpack_from(data, ks)[0] for k, ks, _ in _attrs(data, *body)}
        return {
            "packets": values.get(NFTA_COUNTER_PACKETS, 0),
            "bytes": values.get(NFTA_COUNTER_BYTES, 0),
        }
    return None


def parse(data: bytes) -> tuple[list[dict[str, Any]], bool]:
    """The rules in one buffer read from the socket, as entries of an `nft -j` listing
    (`{"rule": {"chain": C, "expr": [{"counter": ...}]}}`, the counter only), and whether the
    dump ended in it. `DumpError` for anything else."""
    try:
        return _parse(data)
    except (struct.error, UnicodeDecodeError) as exc:
        raise DumpError(f"not a rule dump: {exc}") from None


def _parse(data: bytes) -> tuple[list[dict[str, Any]], bool]:
    out: list[dict[str, Any]] = []
    offset = 0
    while offset + _NLMSG.size <= len(data):
        length, kind, _, _, _ = _NLMSG.unpack_from(data, offset)
        if length < _NLMSG.size:
            raise DumpError(f"message of length {length}")
        if kind == NLMSG_DONE:
            return out, True
        if kind == NLMSG_ERROR:
            (error,) = struct.unpack_from("=i", data, offset + _NLMSG.size)
            if error:
                raise DumpError(f"the kernel refused the rule dump: errno {-error}", -error)
        elif kind == (NFNL_SUBSYS_NFTABLES << 8) | 6:  # NFT_MSG_NEWRULE: one rule
            chain, counter = None, None
            body = offset + _NLMSG.size + _NFGEN.size
            for k, s, e in _attrs(data, body, offset + length):
                if k == NFTA_RULE_CHAIN:
                    chain = data[s:e].rstrip(b"\0").decode()
                elif k == NFTA_RULE_EXPRESSIONS:
                    counter = _counter(data, s, e)
            if chain is None:
                raise DumpError("a rule without its chain")
            expr = [{"counter": counter}] if counter is not None else []
            out.append({"rule": {"chain": chain, "expr": expr}})
        offset += (length + 3) & ~3
    return out, False
