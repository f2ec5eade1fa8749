"""The reference evaluator: executes a `HostProgram` on a packet, as the kernel would.

Counterpart of the nftables backend: same program, same order of checks. At an endpoint
and direction: anti-spoofing (egress), connection state (established/related pass, invalid
drops), then the dispatch's tiers in order, chains in order, first matching item decides;
`pass` skips to the next tier; no match: the tenant's default. `trace` and the property
tests use it; the data-plane tests compare the kernel with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from hyperwall.compiler.intervals import contains
from hyperwall.compiler.program import AddressSet, Endpoint, HostProgram, LookupRule, MatchRule
from hyperwall.evaluator.conntrack import ConnTable
from hyperwall.evaluator.packet import Packet
from hyperwall.policy.model import Verdict
from hyperwall.policy.ports import PROTO_NUMBERS, PortMatch

ANTI_SPOOFING = "anti-spoofing"
DEFAULT = "default"
ESTABLISHED = "established"
INVALID = "invalid"


@dataclass(frozen=True, slots=True)
class Decision:
    verdict: Verdict
    rule: str  # deciding rule id, or one of ANTI_SPOOFING, DEFAULT, ESTABLISHED, INVALID
    log: bool = False


def _in_set(program: HostProgram, name: str | None, family: int, value: int) -> bool:
    if name is None:
        return True
    s: AddressSet = program.address_sets[name]
    return contains(s.v4 if family == 4 else s.v6, value)


def service_matches(services: tuple[PortMatch, ...] | None, packet: Packet) -> bool:
    if services is None:
        return True
    for s in services:
        if s.proto == "any":
            return True
        if PROTO_NUMBERS[s.proto] == packet.proto and (
            s.any_value or s.low <= packet.dport <= s.high
        ):
            return True
    return False


def _match_rule(program: HostProgram, item: MatchRule, packet: Packet) -> bool:
    family = packet.family
    return (
        _in_set(program, item.src, family, packet.src_int)
        and _in_set(program, item.dst, family, packet.dst_int)
        and service_matches(item.services, packet)
    )


def _match_lookup(program: HostProgram, item: LookupRule, packet: Packet) -> str | None:
    """The first rule of the block (in block order) with an element matching `packet`."""
    family, src, dst = packet.family, packet.src_int, packet.dst_int
    best: int | None = None
    order = {rule: i for i, rule in enumerate(item.rules)}
    for f, sl, sh, dl, dh, proto, low, high, rule in program.block_sets[item.block].elements:
        if (
            f == family
            and sl <= src <= sh
            and dl <= dst <= dh
            and (proto == 0 or (proto == packet.proto and low <= packet.dport <= high))
        ):
            pos = order[rule]
            best = pos if best is None else min(best, pos)
    return None if best is None else item.rules[best]


def _spoofed(endpoint: Endpoint, packet: Packet) -> bool:
    if packet.src_mac is not None and packet.src_mac.lower() != endpoint.mac:
        return True
    if packet.src == "0.0.0.0" and packet.proto == 17 and (packet.sport, packet.dport) == (68, 67):
        return False  # DHCP client
    link_local = packet.src == "::" or packet.src.lower().startswith("fe80:")
    if link_local and packet.proto == 17 and (packet.sport, packet.dport) == (546, 547):
        return False  # DHCPv6 client
    if link_local and packet.proto == 58 and 133 <= packet.dport <= 136:
        return False  # router/neighbour discovery from link-local or unspecified
    return packet.src not in endpoint.ips


def evaluate_rules(
    program: HostProgram, endpoint: Endpoint, direction: Literal["in", "out"], packet: Packet
) -> Decision:
    """Policy evaluation for the first packet of a connection (no state, no anti-spoofing)."""
    for tier in endpoint.dispatch(direction):
        passed = False
        for chain_name in tier:
            for item in program.chains[chain_name].items:
                if isinstance(item, MatchRule):
                    rule = item.rule if _match_rule(program, item, packet) else None
                    log = item.log
                else:
                    rule = _match_lookup(program, item, packet)
                    log = False
                if rule is None:
                    continue
                if item.action == "pass":
                    passed = True
                    break
                return Decision(item.action, rule, log)
            if passed:
                break
    return Decision(endpoint.default, DEFAULT, endpoint.log_default)


def evaluate(
    program: HostProgram,
    endpoint_key: str,
    direction: Literal["in", "out"],
    packet: Packet,
    conntrack: ConnTable | None = None,
) -> Decision:
    """The verdict at one endpoint and direction, anti-spoofing and connection state first."""
    endpoint = program.endpoints[endpoint_key]
    if direction == "out" and _spoofed(endpoint, packet):
        return Decision("drop", ANTI_SPOOFING, True)
    if conntrack is not None:
        state = conntrack.state(packet)
        if state in ("established", "related"):
            return Decision("allow", ESTABLISHED)
        if state == "invalid":
            return Decision("drop", INVALID)
    return evaluate_rules(program, endpoint, direction, packet)


def endpoint_for(program: HostProgram, address: str) -> Endpoint | None:
    """The endpoint of `program` that owns `address`, if any."""
    for ep in program.endpoints.values():
        if address in ep.ips:
            return ep
    return None


@dataclass(frozen=True, slots=True)
class HostResult:
    egress: Decision | None
    ingress: Decision | None

    @property
    def verdict(self) -> Verdict:
        for d in (self.egress, self.ingress):
            if d is not None and d.verdict != "allow":
                return d.verdict
        return "allow"


def forward(
    program: HostProgram,
    packet: Packet,
    conntrack: ConnTable,
    src_endpoint: str | None,
    dst_endpoint: str | None,
) -> HostResult:
    """One packet through one host: egress at the sender's endpoint and ingress at the
    receiver's, those that are on this host; an admitted new connection is recorded."""
    egress = evaluate(program, src_endpoint, "out", packet, conntrack) if src_endpoint else None
    ingress = None
    if egress is None or egress.verdict == "allow":
        ingress = evaluate(program, dst_endpoint, "in", packet, conntrack) if dst_endpoint else None
    result = HostResult(egress, ingress)
    if result.verdict == "allow" and conntrack.state(packet) == "new":
        conntrack.admit(packet)
    return result
