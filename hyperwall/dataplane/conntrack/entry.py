"""One conntrack entry as a value: what ctnetlink needs to recreate it in another kernel. Pure.

Counterpart of `conntrack.attrs` (an entry as ctnetlink attributes, both ways) and
`conntrack.wire` (an entry as compact bytes between hosts).

Kept: both tuples (IPv4/IPv6; TCP, UDP, UDP-Lite, SCTP, DCCP ports, GRE keys; ICMP/ICMPv6 id, type,
code; any other protocol by number only), the status bits, the remaining timeout (whole
seconds, as the kernel reports it), mark, the 128 labels, the zone (and its direction) and
TCP's protocol info (state, window scales, flags of each direction).

Not kept, because ctnetlink cannot set them on a new entry or we do not use them: NAT
bindings (`CTA_NAT_*`, sequence adjustment), helpers and expectations (`CTA_HELP`,
`CTA_TUPLE_MASTER`), synproxy, SCTP/DCCP protocol info, counters, timestamps, secmark, the
entry id. TCP's window tracking (`td_end`, `td_maxwin`, ...) has no attribute either: the
kernel re-learns it from the first packet of each direction (`tcp_in_window`, "in the
middle of a connection"), which is what lets an injected entry carry on mid-stream.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address

Address = IPv4Address | IPv6Address

# Status bits (linux/netfilter/nf_conntrack_common.h, enum ip_conntrack_status).
IPS_EXPECTED = 1 << 0
IPS_SEEN_REPLY = 1 << 1
IPS_ASSURED = 1 << 2
IPS_CONFIRMED = 1 << 3
IPS_SRC_NAT = 1 << 4
IPS_DST_NAT = 1 << 5
IPS_SEQ_ADJUST = 1 << 6
IPS_SRC_NAT_DONE = 1 << 7
IPS_DST_NAT_DONE = 1 << 8
IPS_DYING = 1 << 9
IPS_FIXED_TIMEOUT = 1 << 10
IPS_TEMPLATE = 1 << 11
IPS_UNTRACKED = 1 << 12
IPS_HELPER = 1 << 13
IPS_OFFLOAD = 1 << 14
IPS_HW_OFFLOAD = 1 << 15

# TCP conntrack states (enum tcp_conntrack), as `CTA_PROTOINFO_TCP_STATE` carries them.
TCP_STATES = (
    "NONE",
    "SYN_SENT",
    "SYN_RECV",
    "ESTABLISHED",
    "FIN_WAIT",
    "CLOSE_WAIT",
    "LAST_ACK",
    "TIME_WAIT",
    "CLOSE",
    "SYN_SENT2",
)
TCP_ESTABLISHED = 3
# Flags of one direction (IP_CT_TCP_FLAG_*).
TCP_FLAG_WINDOW_SCALE = 0x01
TCP_FLAG_SACK_PERM = 0x02
TCP_FLAG_CLOSE_INIT = 0x04
TCP_FLAG_BE_LIBERAL = 0x08
TCP_FLAG_DATA_UNACKNOWLEDGED = 0x10
TCP_FLAG_MAXACK_SET = 0x20

IPPROTO_ICMP = 1
IPPROTO_TCP = 6
IPPROTO_UDP = 17
IPPROTO_DCCP = 33
IPPROTO_GRE = 47  # its keys travel as ports (nf_conntrack_proto_gre)
IPPROTO_ICMPV6 = 58
IPPROTO_SCTP = 132
IPPROTO_UDPLITE = 136
# Protocols whose tuple has ports; ICMP and ICMPv6 have id, type, code; others only a number.
PORT_PROTOCOLS = frozenset(
    {IPPROTO_TCP, IPPROTO_UDP, IPPROTO_DCCP, IPPROTO_GRE, IPPROTO_SCTP, IPPROTO_UDPLITE}
)
ICMP_PROTOCOLS = frozenset({IPPROTO_ICMP, IPPROTO_ICMPV6})

# The zone applies to both directions unless the entry was made in a directional zone.
ZONE_DIR_ORIG = 1
ZONE_DIR_REPLY = 2
ZONE_DIR_BOTH = 3


@dataclass(frozen=True, slots=True)
class Tuple:
    """One direction of a connection. For ICMP/ICMPv6 `sport` is the id, `dport` 0, and
    `icmp_type`/`icmp_code` are set; for a protocol without ports all three stay 0."""

    src: Address
    dst: Address
    proto: int
    sport: int = 0
    dport: int = 0
    icmp_type: int = 0
    icmp_code: int = 0

    @property
    def family(self) -> int:
        """4 or 6."""
        return self.src.version


@dataclass(frozen=True, slots=True)
class TcpInfo:
    """TCP's protocol info: the conntrack state and, per direction, window scale and flags."""

    state: int = TCP_ESTABLISHED
    wscale_orig: int = 0
    wscale_reply: int = 0
    flags_orig: int = 0
    flags_reply: int = 0


@dataclass(frozen=True, slots=True)
class Entry:
    """A conntrack entry. `timeout` is the remaining lifetime in seconds; `labels` is the
    128-bit label set, bit n being label n; `zone_dir` says which directions the zone is
    for (`ZONE_DIR_BOTH` in the usual, non-directional case)."""

    orig: Tuple
    reply: Tuple
    status: int = IPS_CONFIRMED | IPS_SEEN_REPLY | IPS_ASSURED
    timeout: int = 0
    mark: int = 0
    labels: int = 0
    zone: int = 0
    zone_dir: int = ZONE_DIR_BOTH
    tcp: TcpInfo | None = None

    @property
    def key(self) -> tuple[int, Tuple]:
        """What identifies the entry in a kernel: zone and original tuple."""
        return (self.zone, self.orig)

    @property
    def family(self) -> int:
        """4 or 6."""
        return self.orig.src.version


def touches(entry: Entry, addresses: frozenset[Address]) -> bool:
    """Whether the entry's original source or destination is one of `addresses`."""
    return entry.orig.src in addresses or entry.orig.dst in addresses
