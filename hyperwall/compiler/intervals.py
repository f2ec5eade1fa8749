"""IP addresses and networks as merged integer intervals, per address family.

The compiler stores every address set as sorted, merged, inclusive `(low, high)` intervals;
the nftables backend renders them as interval-set elements and the evaluator bisects them.
"""

from __future__ import annotations

import ipaddress
from bisect import bisect_right
from collections.abc import Iterable
from functools import lru_cache

Interval = tuple[int, int]
V4_MAX = 2**32 - 1
V6_MAX = 2**128 - 1
FULL_V4: tuple[Interval, ...] = ((0, V4_MAX),)
FULL_V6: tuple[Interval, ...] = ((0, V6_MAX),)


def _v4(text: str) -> int | None:
    """Fast path for dotted-quad IPv4 (ipaddress is slow for 100k-element programs)."""
    parts = text.split(".")
    if len(parts) != 4:
        return None
    value = 0
    for part in parts:
        if not part.isdigit() or len(part) > 3:
            return None
        octet = int(part)
        if octet > 255:
            return None
        value = value << 8 | octet
    return value


@lru_cache(maxsize=65536)
def address_interval(text: str) -> tuple[int, Interval]:
    """(family, interval) of an address or a CIDR: '10.0.0.0/8' -> (4, (167772160, 184549375))."""
    addr, slash, length = text.partition("/")
    v4 = _v4(addr)
    if v4 is not None and (not slash or (length.isdigit() and int(length) <= 32)):
        span = (1 << (32 - int(length))) - 1 if slash else 0
        return 4, (v4 & ~span & V4_MAX, (v4 & ~span & V4_MAX) | span)
    if "/" in text:
        net = ipaddress.ip_network(text, strict=False)
        return net.version, (int(net.network_address), int(net.broadcast_address))
    ip = ipaddress.ip_address(text)
    return ip.version, (int(ip), int(ip))


def merge(intervals: Iterable[Interval]) -> tuple[Interval, ...]:
    """Sort and merge overlapping or adjacent intervals."""
    out: list[Interval] = []
    for low, high in sorted(intervals):
        if out and low <= out[-1][1] + 1:
            if high > out[-1][1]:
                out[-1] = (out[-1][0], high)
        else:
            out.append((low, high))
    return tuple(out)


def split_families(texts: Iterable[str]) -> tuple[tuple[Interval, ...], tuple[Interval, ...]]:
    """Merged (v4, v6) intervals of addresses and CIDRs."""
    v4: list[Interval] = []
    v6: list[Interval] = []
    for text in texts:
        family, interval = address_interval(text)
        (v4 if family == 4 else v6).append(interval)
    return merge(v4), merge(v6)


def contains(intervals: tuple[Interval, ...], value: int) -> bool:
    """True if `value` lies in one of the sorted, merged `intervals`."""
    i = bisect_right(intervals, (value, V6_MAX + 1)) - 1
    return i >= 0 and intervals[i][0] <= value <= intervals[i][1]


def format_interval(family: int, interval: Interval) -> str:
    """Readable form: a single address, a CIDR when the interval is one, else 'a-b'."""
    low, high = interval
    make = ipaddress.IPv4Address if family == 4 else ipaddress.IPv6Address
    if low == high:
        return str(make(low))
    nets = list(ipaddress.summarize_address_range(make(low), make(high)))
    if len(nets) == 1:
        return str(nets[0])
    return f"{make(low)}-{make(high)}"
