"""The live trace's probe: one Ethernet frame as the source VM would send it. Pure.

A TCP SYN, a UDP datagram or an ICMP/ICMPv6 echo request from the VM's MAC and address to
the destination, addressed to the host side of the VM's link, with correct checksums, so
the host's stack takes it as the first packet of a new connection. What makes it unique
is `Probe.tag`: the TCP/UDP source port, or the ICMP echo identifier, chosen at random by
the manager; the trace rule (`trace_rule`) matches exactly this tuple, so concurrent
traffic is not traced. Counterpart of `nft.trace_kernel`, which sends it.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

from hyperwall.dataplane.nft.expr import Expr, match, meta, payload

PROTOS = {"tcp": 6, "udp": 17, "icmp": 1, "icmpv6": 58}
ECHO_REQUEST = {"icmp": 8, "icmpv6": 128}


@dataclass(frozen=True, slots=True)
class Probe:
    src: str
    dst: str
    proto: str  # tcp, udp, icmp, icmpv6
    port: int  # destination port, or ICMP type
    tag: int  # TCP/UDP source port or ICMP echo id: what makes the probe unique

    @property
    def family(self) -> int:
        return 6 if ":" in self.src else 4


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _transport(probe: Probe, pseudo: bytes) -> bytes:
    """The L4 header (and a small payload), checksummed with `pseudo` (empty for ICMPv4)."""
    if probe.proto == "tcp":
        head = struct.pack("!HHIIBBHHH", probe.tag, probe.port, 1, 0, 5 << 4, 0x02, 64240, 0, 0)
    elif probe.proto == "udp":
        body = b"hyperwall-trace"
        head = struct.pack("!HHHH", probe.tag, probe.port, 8 + len(body), 0) + body
    else:
        kind = probe.port if probe.port else ECHO_REQUEST[probe.proto]
        head = struct.pack("!BBHHH", kind, 0, 0, probe.tag, 1) + b"hyperwall-trace"
    full = pseudo + head if probe.proto != "icmp" else head
    offset = {"tcp": 16, "udp": 6}.get(probe.proto, 2)
    value = _checksum(full) or (0xFFFF if probe.proto == "udp" else 0)
    return head[:offset] + struct.pack("!H", value) + head[offset + 2 :]


def frame(probe: Probe, src_mac: str, dst_mac: str) -> bytes:
    """The probe as an Ethernet frame from `src_mac` (the VM) to `dst_mac` (the host side)."""
    number = PROTOS[probe.proto]
    src = ipaddress.ip_address(probe.src).packed
    dst = ipaddress.ip_address(probe.dst).packed
    if probe.family == 4:
        l4 = _transport(probe, src + dst + struct.pack("!BBH", 0, number, 0))
        # the pseudo header's length is the L4 length: build once to know it, then again
        l4 = _transport(probe, src + dst + struct.pack("!BBH", 0, number, len(l4)))
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), 1, 0, 64, number, 0, src, dst)
        ip = ip[:10] + struct.pack("!H", _checksum(ip)) + ip[12:]
        ethertype = 0x0800
    else:
        l4 = _transport(probe, src + dst + struct.pack("!I3xB", 0, number))
        l4 = _transport(probe, src + dst + struct.pack("!I3xB", len(l4), number))
        ip = struct.pack("!IHBB16s16s", 6 << 28, len(l4), number, 64, src, dst)
        ethertype = 0x86DD
    macs = bytes.fromhex(dst_mac.replace(":", "")) + bytes.fromhex(src_mac.replace(":", ""))
    return macs + struct.pack("!H", ethertype) + ip + l4


def trace_rule(probe: Probe) -> Expr:
    """The match of the trace chain: this probe's addresses, protocol and tag, then
    `meta nftrace set 1` (and the mark the injection used cleared: `trace_kernel`)."""
    ip = "ip" if probe.family == 4 else "ip6"
    exprs: Expr = [
        match(payload(ip, "saddr"), probe.src),
        match(payload(ip, "daddr"), probe.dst),
        match(meta("l4proto"), PROTOS[probe.proto]),
    ]
    if probe.proto in ("tcp", "udp"):
        exprs.append(match(payload("th", "sport"), probe.tag))
    else:
        exprs.append(match(payload(probe.proto, "id"), probe.tag))
    exprs.append({"mangle": {"key": meta("nftrace"), "value": 1}})
    exprs.append({"mangle": {"key": meta("mark"), "value": 0}})
    return exprs
