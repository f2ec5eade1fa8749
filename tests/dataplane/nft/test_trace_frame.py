"""`nft.trace_frame`: the probe frame's headers and checksums as a receiver checks them,
and the trace rule matches exactly the probe's tuple."""

from __future__ import annotations

import ipaddress
import struct

from hypothesis import given
from hypothesis import strategies as st

from hyperwall.dataplane.nft.trace_frame import PROTOS, Probe, frame, trace_rule


def _sum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


v4 = st.integers(1, 2**32 - 2).map(lambda n: str(ipaddress.IPv4Address(n)))
v6 = st.integers(1, 2**128 - 2).map(lambda n: str(ipaddress.IPv6Address(n)))


@st.composite
def probes(draw: st.DrawFn) -> Probe:
    family = draw(st.sampled_from([4, 6]))
    addresses = v4 if family == 4 else v6
    proto = draw(st.sampled_from(["tcp", "udp", "icmp" if family == 4 else "icmpv6"]))
    port = draw(st.integers(1, 65535)) if proto in ("tcp", "udp") else (8 if family == 4 else 128)
    return Probe(draw(addresses), draw(addresses), proto, port, draw(st.integers(1, 65535)))


@given(probes())
def test_headers_and_checksums(probe: Probe) -> None:
    data = frame(probe, "52:54:00:01:00:21", "ee:ee:ee:ee:ee:ee")
    assert data[:6] == bytes.fromhex("eeeeeeeeeeee") and data[6:12] == bytes.fromhex("525400010021")
    src = ipaddress.ip_address(probe.src).packed
    dst = ipaddress.ip_address(probe.dst).packed
    number = PROTOS[probe.proto]
    if probe.family == 4:
        assert struct.unpack("!H", data[12:14])[0] == 0x0800
        ip, l4 = data[14:34], data[34:]
        assert _sum(ip) == 0xFFFF  # the header checksum verifies
        assert ip[9] == number and ip[12:16] == src and ip[16:20] == dst
        assert struct.unpack("!H", ip[2:4])[0] == 20 + len(l4)
        pseudo = (
            b"" if probe.proto == "icmp" else src + dst + struct.pack("!BBH", 0, number, len(l4))
        )
    else:
        assert struct.unpack("!H", data[12:14])[0] == 0x86DD
        ip, l4 = data[14:54], data[54:]
        assert ip[6] == number and ip[8:24] == src and ip[24:40] == dst
        assert struct.unpack("!H", ip[4:6])[0] == len(l4)
        pseudo = src + dst + struct.pack("!I3xB", len(l4), number)
    assert _sum(pseudo + l4) == 0xFFFF  # the transport checksum verifies
    if probe.proto in ("tcp", "udp"):
        assert struct.unpack("!HH", l4[:4]) == (probe.tag, probe.port)
    else:
        assert l4[0] == probe.port and struct.unpack("!H", l4[4:6])[0] == probe.tag


def test_trace_rule_matches_the_tuple_and_sets_nftrace() -> None:
    rule = trace_rule(Probe("10.1.0.21", "10.1.0.41", "tcp", 5432, 40123))
    rights = [e["match"]["right"] for e in rule if "match" in e]
    assert rights == ["10.1.0.21", "10.1.0.41", 6, 40123]
    sets = {e["mangle"]["key"]["meta"]["key"]: e["mangle"]["value"] for e in rule if "mangle" in e}
    assert sets == {"nftrace": 1, "mark": 0}
    icmp = trace_rule(Probe("fd00::1", "fd00::2", "icmpv6", 128, 7))
    assert {"payload": {"protocol": "icmpv6", "field": "id"}} in [
        e["match"]["left"] for e in icmp if "match" in e
    ]
