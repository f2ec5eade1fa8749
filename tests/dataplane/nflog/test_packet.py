"""Headers of logged packets: addresses, protocol, ports, ICMP type/code, IPv6 extension
headers and fragments; garbage is None, never an exception."""

from __future__ import annotations

import ipaddress
import struct

from hypothesis import given
from hypothesis import strategies as st

from hyperwall.dataplane.nflog.packet import Headers, parse_headers


def ipv4(
    proto: int, body: bytes, src: str = "10.0.0.1", dst: str = "10.0.0.2", frag: int = 0
) -> bytes:
    addresses = ipaddress.IPv4Address(src).packed + ipaddress.IPv4Address(dst).packed
    head = struct.pack("!BBHHHBBH", 0x45, 0, 20 + len(body), 1, frag, 64, proto, 0)
    head += addresses
    return head + body


def ipv6(next_header: int, body: bytes, src: str = "fd00::1", dst: str = "fd00::2") -> bytes:
    addresses = ipaddress.IPv6Address(src).packed + ipaddress.IPv6Address(dst).packed
    head = struct.pack("!IHBB", 6 << 28, len(body), next_header, 64) + addresses
    return head + body


def test_ipv4_tcp_udp_icmp() -> None:
    assert parse_headers(ipv4(6, struct.pack("!HH", 40312, 5432) + bytes(16))) == Headers(
        4, "10.0.0.1", "10.0.0.2", 6, 40312, 5432
    )
    assert parse_headers(ipv4(17, struct.pack("!HHHH", 53, 5353, 8, 0))).dport == 5353  # type: ignore[union-attr]
    icmp = parse_headers(ipv4(1, bytes([8, 0, 0, 0])))
    assert icmp == Headers(4, "10.0.0.1", "10.0.0.2", 1, icmp_type=8, icmp_code=0)
    later = parse_headers(ipv4(6, struct.pack("!HH", 1, 2), frag=5))
    assert later == Headers(4, "10.0.0.1", "10.0.0.2", 6)  # not the first fragment: no ports
    assert parse_headers(ipv4(132, b"")) == Headers(4, "10.0.0.1", "10.0.0.2", 132)


def test_ipv6_with_extension_headers() -> None:
    tcp = struct.pack("!HH", 1000, 443)
    assert parse_headers(ipv6(6, tcp)) == Headers(6, "fd00::1", "fd00::2", 6, 1000, 443)
    hop = bytes([6, 0]) + bytes(6)  # hop-by-hop, 8 bytes, then TCP
    assert parse_headers(ipv6(0, hop + tcp)).dport == 443  # type: ignore[union-attr]
    frag_first = bytes([58, 0, 0, 0]) + bytes(4)  # fragment offset 0, then ICMPv6
    got = parse_headers(ipv6(44, frag_first + bytes([128, 0])))
    assert got is not None and (got.proto, got.icmp_type, got.icmp_code) == (58, 128, 0)
    frag_later = bytes([6, 0, 0, 0x10]) + bytes(4)  # offset 2
    assert parse_headers(ipv6(44, frag_later + tcp)) == Headers(6, "fd00::1", "fd00::2", 6)


@given(st.binary(max_size=120))
def test_garbage_is_none_or_headers(data: bytes) -> None:
    got = parse_headers(data)
    assert got is None or got.family in (4, 6)


@given(st.binary(min_size=16, max_size=16), st.integers(0, 255))
def test_ipv6_addresses_are_written_as_ipaddress_writes_them(raw: bytes, zeros: int) -> None:
    """An address's text is ipaddress's, made or remembered: runs of zero groups (`zeros`,
    one bit per group), IPv4-mapped and -compatible forms."""
    groups = [b"\0\0" if zeros >> i & 1 else raw[2 * i : 2 * i + 2] for i in range(8)]
    for packed in (b"".join(groups), bytes(10) + b"\xff\xff" + raw[:4], bytes(12) + raw[:4]):
        text = str(ipaddress.IPv6Address(packed))
        for _ in range(2):
            headers = parse_headers(ipv6(59, b"", text, "::"))
            assert headers is not None and (headers.src, headers.dst) == (text, "::")
