"""Hypothesis strategies for conntrack entries (shared by the codec and transfer tests)."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address

from hypothesis import strategies as st

from hyperwall.dataplane.conntrack.entry import (
    ZONE_DIR_BOTH,
    ZONE_DIR_ORIG,
    ZONE_DIR_REPLY,
    Address,
    Entry,
    TcpInfo,
    Tuple,
)

u8 = st.integers(0, 255)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)


@st.composite
def tuples(draw: st.DrawFn) -> tuple[Tuple, Tuple]:
    v6 = draw(st.booleans())
    addr: st.SearchStrategy[Address] = (
        st.integers(0, 2**128 - 1).map(IPv6Address)
        if v6
        else st.integers(0, 2**32 - 1).map(IPv4Address)
    )
    a, b = draw(addr), draw(addr)
    proto = draw(st.sampled_from([6, 17, 132, 136, 33, 58 if v6 else 1, 47, 0, 253]))
    if proto in (1, 58):
        ident, kind, code = draw(u16), draw(u8), draw(u8)
        return Tuple(a, b, proto, ident, 0, kind, code), Tuple(
            b, a, proto, ident, 0, draw(u8), code
        )
    if proto in (6, 17, 132, 136, 33, 47):
        sp, dp = draw(u16), draw(u16)
        return Tuple(a, b, proto, sp, dp), Tuple(b, a, proto, dp, sp)
    return Tuple(a, b, proto), Tuple(b, a, proto)


@st.composite
def entries(draw: st.DrawFn) -> Entry:
    orig, reply = draw(tuples())
    zone = draw(st.sampled_from([0, 1, 0xFFFF]) | u16)
    zone_dir = draw(st.sampled_from([ZONE_DIR_BOTH, ZONE_DIR_ORIG, ZONE_DIR_REPLY])) if zone else 3
    tcp = None
    if orig.proto == 6 and draw(st.booleans()):
        tcp = TcpInfo(draw(st.integers(0, 9)), draw(u8), draw(u8), draw(u8), draw(u8))
    return Entry(
        orig=orig,
        reply=reply,
        status=draw(u32),
        timeout=draw(u32),
        mark=draw(u32),
        labels=draw(st.integers(0, 2**128 - 1)),
        zone=zone,
        zone_dir=zone_dir,
        tcp=tcp,
    )
