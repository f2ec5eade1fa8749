"""Packets and flows as the reference evaluator sees them.

A `Packet` carries what the kernel's rules look at: addresses, protocol, ports (or ICMP type
and identifier), the source MAC, and for an ICMP error the flow it is about.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from hyperwall.policy.ports import PROTO_NUMBERS

ICMP_ECHO = {1: (8, 0), 58: (128, 129)}  # protocol -> (echo request, echo reply)


@dataclass(frozen=True, slots=True)
class Flow:
    """A connection's original direction: protocol and both endpoints."""

    proto: int
    src: str
    sport: int
    dst: str
    dport: int

    def reverse(self) -> Flow:
        return Flow(self.proto, self.dst, self.dport, self.src, self.sport)


@dataclass(frozen=True, slots=True)
class Packet:
    src: str
    dst: str
    proto: int  # IP protocol number (6 tcp, 17 udp, 1 icmp, 58 icmpv6, ...)
    sport: int = 0  # for ICMP echo: the identifier
    dport: int = 0  # for ICMP: the type
    src_mac: str | None = None
    related: Flow | None = None  # for ICMP errors: the flow the error is about

    @property
    def family(self) -> int:
        return 6 if ":" in self.src else 4

    @property
    def src_int(self) -> int:
        return int(ipaddress.ip_address(self.src))

    @property
    def dst_int(self) -> int:
        return int(ipaddress.ip_address(self.dst))

    def flow(self) -> Flow:
        """The flow this packet belongs to, in the direction it travels.

        ICMP echo request and reply share one flow keyed by the identifier, as conntrack's.
        """
        if self.proto in ICMP_ECHO and self.dport in ICMP_ECHO[self.proto]:
            return Flow(self.proto, self.src, self.sport, self.dst, self.sport)
        return Flow(self.proto, self.src, self.sport, self.dst, self.dport)

    def is_reply_only(self) -> bool:
        """A packet that can only be a reply or an error: never the start of a connection."""
        if self.proto == 1:
            return self.dport in (0, 3, 4, 5, 11, 12, 14)
        if self.proto == 58:
            return self.dport in (1, 2, 3, 4, 129)
        return False


def service_packet(src: str, dst: str, proto: str, port: int, sport: int = 40000) -> Packet:
    """A first packet of a connection to `proto`/`port` (for ICMP: `port` is the type)."""
    number = PROTO_NUMBERS[proto]
    if proto in ("icmp", "icmpv6"):
        return Packet(src, dst, number, sport=1, dport=port)
    return Packet(src, dst, number, sport=sport, dport=port)
