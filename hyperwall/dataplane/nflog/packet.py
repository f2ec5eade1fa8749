"""The headers of a logged packet (the payload of an NFLOG message, from its network
header): addresses, protocol, TCP/UDP ports, ICMP type and code. Pure.

Counterpart of `nflog.messages` (which carries the payload). IPv6 extension headers
(hop-by-hop, routing, fragment, destination options) are skipped to the transport header;
a fragment other than the first, or a payload cut before the transport header, gives the
addresses and protocol without ports. Address texts are remembered (bounded): a host's
logged packets come from few addresses.
"""

from __future__ import annotations

import ipaddress
from typing import NamedTuple

TCP, UDP, ICMP, ICMPV6 = 6, 17, 1, 58
_EXTENSIONS = frozenset({0, 43, 60})  # hop-by-hop, routing, destination options
_FRAGMENT = 44
_TEXTS: dict[bytes, str] = {}  # packed address -> its text (a host sees few addresses)
_MAX_TEXTS = 8192


class Headers(NamedTuple):  # a tuple: one per logged packet, cheap to make
    family: int  # 4 or 6
    src: str
    dst: str
    proto: int
    sport: int | None = None
    dport: int | None = None
    icmp_type: int | None = None
    icmp_code: int | None = None


def _text(packed: bytes) -> str:
    """The address's text as `ipaddress` writes it, remembered (bounded: a flood of
    forged sources only empties the memory now and then)."""
    text = _TEXTS.get(packed)
    if text is None:
        if len(packed) == 4:
            text = "%d.%d.%d.%d" % tuple(packed)  # noqa: UP031  (4x faster than ipaddress)
        else:
            text = str(ipaddress.IPv6Address(packed))
        if len(_TEXTS) >= _MAX_TEXTS:
            _TEXTS.clear()
        _TEXTS[packed] = text
    return text


def _headers(
    family: int, src: str, dst: str, proto: int, data: bytes, at: int, first: bool
) -> Headers:
    """The headers, with the transport's ports or ICMP type/code where `data` has them."""
    if first and proto in (TCP, UDP) and len(data) >= at + 4:
        sport = (data[at] << 8) | data[at + 1]
        return Headers(family, src, dst, proto, sport, (data[at + 2] << 8) | data[at + 3])
    if first and proto in (ICMP, ICMPV6) and len(data) >= at + 2:
        return Headers(family, src, dst, proto, icmp_type=data[at], icmp_code=data[at + 1])
    return Headers(family, src, dst, proto)


def parse_headers(data: bytes) -> Headers | None:
    """The headers of an IPv4 or IPv6 packet; None if `data` is not one."""
    if not data:
        return None
    version = data[0] >> 4
    if version == 4:
        ihl = (data[0] & 0x0F) * 4
        if ihl < 20 or len(data) < ihl:
            return None
        proto = data[9]
        src, dst = _text(data[12:16]), _text(data[16:20])
        first = not (data[6] & 0x1F or data[7])
        return _headers(4, src, dst, proto, data, ihl, first)
    if version == 6:
        if len(data) < 40:
            return None
        src, dst = _text(data[8:24]), _text(data[24:40])
        proto, at, first = data[6], 40, True
        for _ in range(8):  # a bounded walk through the extension headers
            if proto in _EXTENSIONS and len(data) >= at + 2:
                proto, at = data[at], at + (data[at + 1] + 1) * 8
            elif proto == _FRAGMENT and len(data) >= at + 8:
                first = int.from_bytes(data[at + 2 : at + 4], "big") >> 3 == 0
                proto, at = data[at], at + 8
            else:
                break
        return _headers(6, src, dst, proto, data, at, first)
    return None
