"""Tests for `hyperwall.evaluator`: executing a `HostProgram` on packets, as the kernel would.

Hand-built programs pin the evaluator's own semantics (anti-spoofing, connection state,
`pass`, tiers, `reject`, the default, `LookupRule` attribution); programs compiled from tiny
inline documents (`build_catalog` + `FleetCompiler`) check the same against docs/policy.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import pytest

from hyperwall.compiler.fleet import FleetCompiler
from hyperwall.compiler.intervals import address_interval, split_families
from hyperwall.compiler.program import (
    AddressSet,
    BlockElement,
    BlockSet,
    Chain,
    ChainItem,
    Endpoint,
    HostProgram,
    LookupRule,
    MatchRule,
)
from hyperwall.evaluator.conntrack import ConnTable
from hyperwall.evaluator.evaluate import (
    ANTI_SPOOFING,
    DEFAULT,
    ESTABLISHED,
    INVALID,
    Decision,
    HostResult,
    endpoint_for,
    evaluate,
    evaluate_rules,
    forward,
    service_matches,
)
from hyperwall.evaluator.packet import Flow, Packet, service_packet
from hyperwall.policy.catalog import build_catalog
from hyperwall.policy.errors import Source
from hyperwall.policy.model import Verdict
from hyperwall.policy.ports import PortMatch, parse_port_spec

TCP, UDP, ICMP, ICMPV6 = 6, 17, 1, 58
A_MAC, B_MAC = "52:54:00:00:00:0a", "52:54:00:00:00:0b"
A_IPS, B_IPS = ("10.0.0.1", "fd00::1"), ("10.0.0.2", "fd00::2")
NO_TIERS: tuple[tuple[str, ...], ...] = ((), (), (), ())


def tiers(**by_tier: tuple[str, ...]) -> tuple[tuple[str, ...], ...]:
    names = ("emergency", "infrastructure", "environment", "application")
    return tuple(by_tier.get(name, ()) for name in names)


def endpoint(
    key: str,
    mac: str,
    ips: tuple[str, ...],
    ingress: tuple[tuple[str, ...], ...] = NO_TIERS,
    egress: tuple[tuple[str, ...], ...] = NO_TIERS,
    default: Verdict = "drop",
    log_default: bool = False,
) -> Endpoint:
    workload, _, interface = key.rpartition("/")
    return Endpoint(
        key=key,
        workload=workload,
        interface=interface,
        tenant=key.split("/")[0],
        mac=mac,
        ips=ips,
        ingress=ingress,
        egress=egress,
        default=default,
        log_default=log_default,
    )


def address_set(name: str, *texts: str) -> AddressSet:
    v4, v6 = split_families(texts)
    return AddressSet(name, v4, v6)


def program(
    chains: Mapping[str, tuple[ChainItem, ...]],
    ingress: tuple[tuple[str, ...], ...] = NO_TIERS,
    egress: tuple[tuple[str, ...], ...] = NO_TIERS,
    sets: tuple[AddressSet, ...] = (),
    blocks: tuple[BlockSet, ...] = (),
    default: Verdict = "drop",
    log_default: bool = False,
) -> HostProgram:
    """Two endpoints, t/a/eth0 and t/b/eth0, both with the same dispatch."""
    eps = [
        endpoint("t/a/eth0", A_MAC, A_IPS, ingress, egress, default, log_default),
        endpoint("t/b/eth0", B_MAC, B_IPS, ingress, egress, default, log_default),
    ]
    return HostProgram(
        host="hv1",
        address_sets={s.name: s for s in sets},
        block_sets={b.name: b for b in blocks},
        chains={name: Chain(name, items) for name, items in chains.items()},
        endpoints={e.key: e for e in eps},
    )


def match(
    rule: str,
    action: Literal["allow", "drop", "reject", "pass"] = "allow",
    src: str | None = None,
    dst: str | None = None,
    services: str | None = None,
    log: bool = False,
) -> MatchRule:
    ports = None if services is None else tuple(parse_port_spec(s) for s in services.split(","))
    return MatchRule(rule, action, log, src, dst, ports)


ALLOW_ALL = program(
    {"c": (match("t/p/all"),)}, ingress=tiers(application=("c",)), egress=tiers(application=("c",))
)


def tcp(src: str, dst: str, dport: int = 443, sport: int = 40000, mac: str | None = None) -> Packet:
    return Packet(src, dst, TCP, sport, dport, mac)


# --- anti-spoofing -----------------------------------------------------------------------


def test_own_mac_and_ip_pass_anti_spoofing() -> None:
    assert evaluate(ALLOW_ALL, "t/a/eth0", "out", tcp("10.0.0.1", "10.9.9.9", mac=A_MAC)) == (
        Decision("allow", "t/p/all")
    )
    assert evaluate(ALLOW_ALL, "t/a/eth0", "out", tcp("fd00::1", "fd00::9", mac=A_MAC)).verdict == (
        "allow"
    )


def test_mac_is_compared_case_insensitively() -> None:
    packet = tcp("10.0.0.1", "10.9.9.9", mac=A_MAC.upper())
    assert evaluate(ALLOW_ALL, "t/a/eth0", "out", packet).verdict == "allow"


@pytest.mark.parametrize(
    "packet",
    [
        tcp("10.0.0.99", "10.9.9.9", mac=A_MAC),  # foreign source IP
        tcp("10.0.0.2", "10.9.9.9", mac=A_MAC),  # the neighbour's IP
        tcp("fd00::2", "fd00::9", mac=A_MAC),  # the neighbour's IPv6
        tcp("10.0.0.1", "10.9.9.9", mac=B_MAC),  # foreign MAC, own IP
        tcp("10.0.0.1", "10.9.9.9", mac="52:54:00:99:99:99"),
        tcp("10.0.0.99", "10.9.9.9"),  # no MAC known, foreign IP
        Packet("0.0.0.0", "255.255.255.255", UDP, 68, 67, B_MAC),  # DHCP with a foreign MAC
        Packet("0.0.0.0", "10.9.9.9", TCP, 68, 67, A_MAC),  # not DHCP: TCP from 0.0.0.0
        Packet("0.0.0.0", "10.9.9.9", UDP, 40000, 53, A_MAC),  # not DHCP: other ports
    ],
    ids=[
        "foreign-ip",
        "neighbour-ip",
        "neighbour-ipv6",
        "foreign-mac",
        "unknown-mac",
        "foreign-ip-no-mac",
        "dhcp-foreign-mac",
        "tcp-from-0.0.0.0",
        "udp-from-0.0.0.0",
    ],
)
def test_spoofed_packets_are_dropped_and_logged_before_any_policy(packet: Packet) -> None:
    table = ConnTable()
    table.admit(packet)  # not even an existing connection lets a spoofed packet out
    assert evaluate(ALLOW_ALL, "t/a/eth0", "out", packet, table) == Decision(
        "drop", ANTI_SPOOFING, True
    )


def test_dhcp_client_passes_anti_spoofing() -> None:
    discover = Packet("0.0.0.0", "255.255.255.255", UDP, 68, 67, A_MAC)
    assert evaluate(ALLOW_ALL, "t/a/eth0", "out", discover) == Decision("allow", "t/p/all")
    dropping = program({}, default="drop")
    assert evaluate(dropping, "t/a/eth0", "out", discover).rule != ANTI_SPOOFING


def test_dhcpv6_client_passes_anti_spoofing() -> None:
    solicit = Packet("fe80::5054:ff:fe00:a", "ff02::1:2", UDP, 546, 547, A_MAC)
    assert evaluate(ALLOW_ALL, "t/a/eth0", "out", solicit).rule != ANTI_SPOOFING


def test_ingress_is_not_subject_to_anti_spoofing() -> None:
    # a packet entering the VM comes from elsewhere: its source is decided by policy
    packet = tcp("203.0.113.9", "10.0.0.1", mac="52:54:00:99:99:99")
    assert evaluate(ALLOW_ALL, "t/a/eth0", "in", packet) == Decision("allow", "t/p/all")


# --- connection state --------------------------------------------------------------------

# a may open tcp/443 and ping to b, nothing else; the default drops
A_TO_B = program(
    {"c": (match("t/p/a-to-b", src="w:a", dst="w:b", services="tcp/443,icmp/echo-request"),)},
    ingress=tiers(application=("c",)),
    egress=tiers(application=("c",)),
    sets=(address_set("w:a", *A_IPS), address_set("w:b", *B_IPS)),
)


def test_reply_of_an_admitted_flow_is_established() -> None:
    table = ConnTable()
    first = tcp("10.0.0.1", "10.0.0.2", mac=A_MAC)
    opened = forward(A_TO_B, first, table, "t/a/eth0", "t/b/eth0")
    assert opened == HostResult(Decision("allow", "t/p/a-to-b"), Decision("allow", "t/p/a-to-b"))
    assert table.flows == {first.flow()}
    reply = Packet("10.0.0.2", "10.0.0.1", TCP, 443, 40000, B_MAC)
    result = forward(A_TO_B, reply, table, "t/b/eth0", "t/a/eth0")
    assert result == HostResult(Decision("allow", ESTABLISHED), Decision("allow", ESTABLISHED))
    assert result.verdict == "allow"
    again = forward(A_TO_B, first, table, "t/a/eth0", "t/b/eth0")
    assert again.egress == Decision("allow", ESTABLISHED)


def test_same_reply_without_the_connection_is_decided_by_policy() -> None:
    reply = Packet("10.0.0.2", "10.0.0.1", TCP, 443, 40000, B_MAC)
    result = forward(A_TO_B, reply, ConnTable(), "t/b/eth0", "t/a/eth0")
    assert result == HostResult(Decision("drop", DEFAULT), None)


def test_denied_first_packet_opens_no_connection() -> None:
    table = ConnTable()
    wrong_port = tcp("10.0.0.1", "10.0.0.2", dport=22, mac=A_MAC)
    assert forward(A_TO_B, wrong_port, table, "t/a/eth0", "t/b/eth0").verdict == "drop"
    assert table.flows == set()
    reply = Packet("10.0.0.2", "10.0.0.1", TCP, 22, 40000, B_MAC)
    assert forward(A_TO_B, reply, table, "t/b/eth0", "t/a/eth0").verdict == "drop"


def test_icmp_echo_reply_matches_its_request() -> None:
    table = ConnTable()
    request = Packet("10.0.0.1", "10.0.0.2", ICMP, 77, 8, A_MAC)
    assert forward(A_TO_B, request, table, "t/a/eth0", "t/b/eth0").verdict == "allow"
    reply = Packet("10.0.0.2", "10.0.0.1", ICMP, 77, 0, B_MAC)
    assert table.state(reply) == "established"
    assert forward(A_TO_B, reply, table, "t/b/eth0", "t/a/eth0") == HostResult(
        Decision("allow", ESTABLISHED), Decision("allow", ESTABLISHED)
    )
    other_id = Packet("10.0.0.2", "10.0.0.1", ICMP, 78, 0, B_MAC)
    assert forward(A_TO_B, other_id, table, "t/b/eth0", "t/a/eth0").egress == Decision(
        "drop", INVALID
    )


def test_icmpv6_echo_reply_matches_its_request() -> None:
    table = ConnTable()
    request = Packet("fd00::1", "fd00::2", ICMPV6, 5, 128, A_MAC)
    table.admit(request)
    assert table.state(Packet("fd00::2", "fd00::1", ICMPV6, 5, 129, B_MAC)) == "established"
    assert table.state(Packet("fd00::2", "fd00::1", ICMPV6, 6, 129, B_MAC)) == "invalid"


def test_unsolicited_echo_reply_is_invalid() -> None:
    reply = Packet("10.0.0.2", "10.0.0.1", ICMP, 77, 0, B_MAC)
    assert ConnTable().state(reply) == "invalid"
    # even a program that allows everything drops it
    assert evaluate(ALLOW_ALL, "t/b/eth0", "out", reply, ConnTable()) == Decision("drop", INVALID)
    assert evaluate(ALLOW_ALL, "t/a/eth0", "in", reply, ConnTable()) == Decision("drop", INVALID)
    # without connection tracking it is just a packet for the rules
    assert evaluate(ALLOW_ALL, "t/a/eth0", "in", reply).verdict == "allow"


def test_icmp_error_related_to_an_admitted_flow_passes() -> None:
    table = ConnTable()
    first = tcp("10.0.0.1", "10.0.0.2", mac=A_MAC)
    forward(A_TO_B, first, table, "t/a/eth0", "t/b/eth0")
    # b answers "port unreachable" about the flow
    unreachable = Packet("10.0.0.2", "10.0.0.1", ICMP, 0, 3, B_MAC, related=first.flow())
    assert table.state(unreachable) == "related"
    assert forward(A_TO_B, unreachable, table, "t/b/eth0", "t/a/eth0") == HostResult(
        Decision("allow", ESTABLISHED), Decision("allow", ESTABLISHED)
    )
    # a router on the way answers "fragmentation needed", quoting the flow as it saw it
    router = Packet("192.0.2.1", "10.0.0.1", ICMP, 0, 3, related=first.flow())
    assert evaluate(A_TO_B, "t/a/eth0", "in", router, table) == Decision("allow", ESTABLISHED)
    # the reverse of the flow is the same connection
    reversed_quote = Packet("192.0.2.1", "10.0.0.2", ICMP, 0, 11, related=first.flow().reverse())
    assert table.state(reversed_quote) == "related"


def test_icmp_error_about_an_unknown_flow_is_invalid() -> None:
    table = ConnTable()
    table.admit(tcp("10.0.0.1", "10.0.0.2", mac=A_MAC))
    stray = Flow(TCP, "10.0.0.1", 40001, "10.0.0.2", 443)
    error = Packet("192.0.2.1", "10.0.0.1", ICMP, 0, 3, related=stray)
    assert table.state(error) == "invalid"
    assert evaluate(ALLOW_ALL, "t/a/eth0", "in", error, table) == Decision("drop", INVALID)


def test_conntrack_states_and_forget() -> None:
    table = ConnTable()
    first = tcp("10.0.0.1", "10.0.0.2")
    assert table.state(first) == "new"
    assert table.state(Packet("10.0.0.1", "10.0.0.2", ICMP, 1, 8)) == "new"  # echo request
    table.admit(first)
    assert table.state(first) == "established"
    assert table.state(tcp("10.0.0.1", "10.0.0.2", sport=40001)) == "new"
    table.forget(first.flow().reverse())
    assert table.flows == set()
    assert table.state(first) == "new"


def test_packet_flows() -> None:
    echo = Packet("10.0.0.1", "10.0.0.2", ICMP, 9, 8)
    assert echo.flow() == Flow(ICMP, "10.0.0.1", 9, "10.0.0.2", 9)
    assert Packet("10.0.0.2", "10.0.0.1", ICMP, 9, 0).flow() == echo.flow().reverse()
    assert tcp("10.0.0.1", "10.0.0.2").flow() == Flow(TCP, "10.0.0.1", 40000, "10.0.0.2", 443)
    assert [t for t in range(256) if Packet("a", "b", ICMP, 0, t).is_reply_only()] == [
        0,
        3,
        4,
        5,
        11,
        12,
        14,
    ]
    assert [t for t in range(256) if Packet("a", "b", ICMPV6, 0, t).is_reply_only()] == [
        1,
        2,
        3,
        4,
        129,
    ]
    assert not tcp("10.0.0.1", "10.0.0.2", dport=0).is_reply_only()
    assert Packet("fd00::1", "fd00::2", TCP).family == 6
    assert Packet("10.0.0.1", "10.0.0.2", TCP).family == 4


def test_service_packet() -> None:
    assert service_packet("10.0.0.1", "10.0.0.2", "tcp", 443) == Packet(
        "10.0.0.1", "10.0.0.2", TCP, 40000, 443
    )
    assert service_packet("fd00::1", "fd00::2", "icmpv6", 128) == Packet(
        "fd00::1", "fd00::2", ICMPV6, 1, 128
    )


# --- pass, tiers, reject, default ---------------------------------------------------------


def test_pass_skips_the_rest_of_the_tier_only() -> None:
    prog = program(
        {
            "guard": (
                match("t/guard/pass-web", "pass", services="tcp/443"),
                match("t/guard/deny", "drop"),
            ),
            "later-same-tier": (match("t/later/deny", "drop"),),
            "app": (match("t/app/allow", "allow", services="tcp/443,tcp/22"),),
        },
        ingress=tiers(environment=("guard", "later-same-tier"), application=("app",)),
    )
    web = tcp("10.9.9.9", "10.0.0.1", dport=443)
    assert evaluate(prog, "t/a/eth0", "in", web) == Decision("allow", "t/app/allow")
    ssh = tcp("10.9.9.9", "10.0.0.1", dport=22)  # not passed: the guard's drop decides
    assert evaluate(prog, "t/a/eth0", "in", ssh) == Decision("drop", "t/guard/deny")


def test_pass_in_the_last_tier_reaches_the_default() -> None:
    prog = program(
        {"app": (match("t/app/pass", "pass"), match("t/app/allow"))},
        egress=tiers(application=("app",)),
        default="drop",
        log_default=True,
    )
    packet = tcp("10.0.0.1", "10.9.9.9", mac=A_MAC)
    assert evaluate(prog, "t/a/eth0", "out", packet) == Decision("drop", DEFAULT, True)


def test_a_tier_without_a_match_falls_through() -> None:
    prog = program(
        {
            "infra": (match("infra/dns", services="udp/53"),),
            "app": (match("t/app/web", "reject", services="tcp/443"),),
        },
        egress=tiers(infrastructure=("infra",), application=("app",)),
    )
    packet = tcp("10.0.0.1", "10.9.9.9", mac=A_MAC)
    assert evaluate(prog, "t/a/eth0", "out", packet) == Decision("reject", "t/app/web")


def test_tiers_are_evaluated_in_order_and_chains_in_order() -> None:
    chains = {
        "emergency": (match("quarantine/isolate", "drop", log=True),),
        "first": (match("t/first/r", "reject"),),
        "second": (match("t/second/r", "allow"),),
    }
    prog = program(chains, ingress=tiers(emergency=("emergency",), application=("first", "second")))
    packet = tcp("10.9.9.9", "10.0.0.1")
    assert evaluate(prog, "t/a/eth0", "in", packet) == Decision("drop", "quarantine/isolate", True)
    prog = program(chains, ingress=tiers(application=("second", "first")))
    assert evaluate(prog, "t/a/eth0", "in", packet) == Decision("allow", "t/second/r")
    prog = program(chains, ingress=tiers(environment=("first",), application=("second",)))
    assert evaluate(prog, "t/a/eth0", "in", packet) == Decision("reject", "t/first/r")


def test_directions_use_their_own_dispatch() -> None:
    prog = program(
        {"in-only": (match("t/p/in", "reject"),)},
        ingress=tiers(application=("in-only",)),
        default="allow",
    )
    assert evaluate(prog, "t/a/eth0", "in", tcp("10.9.9.9", "10.0.0.1")).verdict == "reject"
    out = evaluate(prog, "t/a/eth0", "out", tcp("10.0.0.1", "10.9.9.9", mac=A_MAC))
    assert out == Decision("allow", DEFAULT, False)


def test_reject_verdict() -> None:
    prog = program(
        {"c": (match("t/p/no-db", "reject", dst="w:b", services="tcp/5432", log=True),)},
        egress=tiers(application=("c",)),
        sets=(address_set("w:b", *B_IPS),),
        default="allow",
    )
    packet = tcp("10.0.0.1", "10.0.0.2", dport=5432, mac=A_MAC)
    assert evaluate(prog, "t/a/eth0", "out", packet) == Decision("reject", "t/p/no-db", True)
    result = forward(prog, packet, ConnTable(), "t/a/eth0", "t/b/eth0")
    assert result.verdict == "reject"
    assert result.ingress is None  # the egress end refused: the packet never arrives


@pytest.mark.parametrize(
    ("default", "log_default"), [("drop", False), ("drop", True), ("allow", True), ("allow", False)]
)
def test_default_verdict_and_its_logging(default: Verdict, log_default: bool) -> None:
    prog = program({}, default=default, log_default=log_default)
    decision = evaluate(prog, "t/a/eth0", "in", tcp("10.9.9.9", "10.0.0.1"))
    assert decision == Decision(default, DEFAULT, log_default)


def test_rule_matching_on_addresses_and_services() -> None:
    prog = program(
        {
            "c": (
                match("t/p/v6-only", src="office", services="tcp/8000-8080"),
                match("t/p/ping", services="icmp/echo-request"),
                match("t/p/any", "reject", src="office", services="any"),
            )
        },
        ingress=tiers(application=("c",)),
        sets=(address_set("office", "198.51.100.0/24", "2001:db8:100::/48"),),
    )

    def verdict(packet: Packet) -> str:
        return evaluate(prog, "t/a/eth0", "in", packet).rule

    assert verdict(tcp("198.51.100.7", "10.0.0.1", dport=8000)) == "t/p/v6-only"
    assert verdict(tcp("2001:db8:100::7", "fd00::1", dport=8080)) == "t/p/v6-only"
    assert verdict(tcp("198.51.100.7", "10.0.0.1", dport=8081)) == "t/p/any"
    assert verdict(Packet("198.51.100.7", "10.0.0.1", UDP, 1, 8000)) == "t/p/any"
    assert verdict(Packet("203.0.113.1", "10.0.0.1", ICMP, 1, 8)) == "t/p/ping"
    assert verdict(Packet("203.0.113.1", "10.0.0.1", ICMP, 1, 13)) == DEFAULT
    assert verdict(Packet("2001:db8::1", "fd00::1", ICMPV6, 1, 128)) == DEFAULT  # not ICMPv4
    assert verdict(tcp("198.51.101.1", "10.0.0.1", dport=8000)) == DEFAULT


def test_service_matches() -> None:
    http = tcp("10.0.0.1", "10.0.0.2", dport=80)
    assert service_matches(None, http)
    assert service_matches((PortMatch("any"),), http)
    assert service_matches((PortMatch("tcp"),), http)
    assert not service_matches((PortMatch("udp"),), http)
    assert not service_matches((), http)
    assert service_matches((PortMatch("udp"), PortMatch("tcp", 80, 80, False)), http)
    assert service_matches((PortMatch("tcp", 1, 80, False),), http)
    assert not service_matches((PortMatch("tcp", 81, 90, False),), http)
    ping6 = Packet("fd00::1", "fd00::2", ICMPV6, 1, 128)
    assert service_matches((PortMatch("icmpv6"),), ping6)
    assert not service_matches((PortMatch("icmp"),), ping6)


# --- LookupRule: folded blocks -----------------------------------------------------------


def element(rule: str, src: str, dst: str, proto: int, low: int, high: int) -> BlockElement:
    family, (sl, sh) = address_interval(src)
    _, (dl, dh) = address_interval(dst)
    return (family, sl, sh, dl, dh, proto, low, high, rule)


BLOCK = BlockSet(
    "b:in:t/p:r1",
    frozenset(
        {
            element("t/p/r1", "192.0.2.0/24", "10.0.0.1", TCP, 22, 22),
            element("t/p/r2", "0.0.0.0/0", "10.0.0.1", TCP, 1, 65535),
            element("t/p/r3", "0.0.0.0/0", "0.0.0.0/0", 0, 0, 65535),  # any protocol
            element("t/p/r3", "::/0", "::/0", 0, 0, 65535),
            element("t/p/r2", "::/0", "fd00::1", TCP, 443, 443),
        }
    ),
)


def lookup_program(rules: tuple[str, ...]) -> HostProgram:
    return program(
        {
            "c": (
                LookupRule(BLOCK.name, "allow", rules),
                match("t/p/after", "reject"),
            )
        },
        ingress=tiers(application=("c",)),
        blocks=(BLOCK,),
    )


@pytest.mark.parametrize(
    ("packet", "rule"),
    [
        (tcp("192.0.2.7", "10.0.0.1", dport=22), "t/p/r1"),  # r1, r2 and r3 match
        (tcp("198.51.100.7", "10.0.0.1", dport=22), "t/p/r2"),  # r2 and r3 match
        (Packet("198.51.100.7", "10.0.0.1", UDP, 1, 53), "t/p/r3"),  # r3 only
        (tcp("2001:db8::1", "fd00::1", dport=443), "t/p/r2"),
        (tcp("2001:db8::1", "fd00::1", dport=80), "t/p/r3"),
    ],
)
def test_lookup_attributes_the_first_matching_rule_of_the_block(packet: Packet, rule: str) -> None:
    prog = lookup_program(("t/p/r1", "t/p/r2", "t/p/r3"))
    assert evaluate(prog, "t/a/eth0", "in", packet) == Decision("allow", rule, False)


def test_lookup_attribution_follows_the_rule_order_of_the_block() -> None:
    prog = lookup_program(("t/p/r3", "t/p/r2", "t/p/r1"))
    packet = tcp("192.0.2.7", "10.0.0.1", dport=22)
    assert evaluate(prog, "t/a/eth0", "in", packet).rule == "t/p/r3"


def test_lookup_without_a_match_goes_on_to_the_next_item() -> None:
    block = BlockSet("b", frozenset({element("t/p/r1", "192.0.2.0/24", "10.0.0.1", TCP, 22, 22)}))
    prog = program(
        {"c": (LookupRule("b", "allow", ("t/p/r1",)), match("t/p/after", "reject"))},
        ingress=tiers(application=("c",)),
        blocks=(block,),
    )
    packet = tcp("192.0.2.7", "10.0.0.1", dport=23)
    assert evaluate(prog, "t/a/eth0", "in", packet) == Decision("reject", "t/p/after")
    assert evaluate(prog, "t/a/eth0", "in", tcp("192.0.2.7", "10.0.0.2", dport=22)).rule == (
        "t/p/after"
    )


def test_lookup_with_pass() -> None:
    block = BlockSet("b", frozenset({element("t/g/skip", "0.0.0.0/0", "0.0.0.0/0", TCP, 1, 1024)}))
    prog = program(
        {
            "g": (LookupRule("b", "pass", ("t/g/skip",)), match("t/g/deny", "drop")),
            "app": (match("t/app/allow"),),
        },
        ingress=tiers(environment=("g",), application=("app",)),
        blocks=(block,),
    )
    assert evaluate(prog, "t/a/eth0", "in", tcp("10.9.9.9", "10.0.0.1", dport=80)).rule == (
        "t/app/allow"
    )
    assert evaluate(prog, "t/a/eth0", "in", tcp("10.9.9.9", "10.0.0.1", dport=8080)).rule == (
        "t/g/deny"
    )


# --- helpers -----------------------------------------------------------------------------


def test_endpoint_for_and_host_result() -> None:
    assert endpoint_for(ALLOW_ALL, "fd00::2") == ALLOW_ALL.endpoints["t/b/eth0"]
    assert endpoint_for(ALLOW_ALL, "10.0.0.3") is None
    allow, drop, reject = Decision("allow", "x"), Decision("drop", "y"), Decision("reject", "z")
    assert HostResult(None, None).verdict == "allow"
    assert HostResult(allow, None).verdict == "allow"
    assert HostResult(None, drop).verdict == "drop"
    assert HostResult(reject, drop).verdict == "reject"  # the egress end first
    assert HostResult(allow, reject).verdict == "reject"


def test_evaluate_rules_ignores_state_and_spoofing() -> None:
    prog = program({"c": (match("t/p/r", "reject"),)}, egress=tiers(application=("c",)))
    spoofed = tcp("10.9.9.9", "10.0.0.1", mac="52:54:00:99:99:99")
    assert evaluate_rules(prog, prog.endpoints["t/a/eth0"], "out", spoofed) == Decision(
        "reject", "t/p/r"
    )


# --- compiled from documents -------------------------------------------------------------

API = "hyperwall.io/v1"


def doc(kind: str, name: str, tenant: str | None = None, **fields: Any) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name}
    if tenant:
        metadata["tenant"] = tenant
    if "labels" in fields:
        metadata["labels"] = fields.pop("labels")
    return {"apiVersion": API, "kind": kind, "metadata": metadata, "spec": fields}


def vm(name: str, tenant: str | None, n: int, host: str = "hv1", **labels: str) -> dict[str, Any]:
    iface = {"name": "eth0", "mac": f"52:54:00:00:01:{n:02x}", "ips": [f"10.0.0.{n}", f"fd00::{n}"]}
    return doc("Workload", name, tenant, labels=labels, host=host, interfaces=[iface])


def compiled(*docs: dict[str, Any]) -> FleetCompiler:
    catalog = build_catalog([(d, Source("inline.yaml", i + 1)) for i, d in enumerate(docs)])
    return FleetCompiler(catalog.config, catalog.workloads.values())


def decide(
    fleet: FleetCompiler,
    src: str,
    dst: str,
    service: str = "tcp/443",
) -> tuple[Decision | None, Decision | None]:
    """Evaluate the first packet from workload (or IP) `src` to `dst` at both ends."""

    def end(name: str) -> tuple[str, str | None, str | None]:
        for w in fleet.workloads.values():
            if name in (w.key, w.interfaces[0].ips[0]):
                return w.interfaces[0].ips[0], f"{w.key}/eth0", w.host
        return name, None, None

    (s_ip, s_ep, s_host), (d_ip, d_ep, d_host) = end(src), end(dst)
    port = parse_port_spec(service)
    packet = service_packet(s_ip, d_ip, port.proto, port.low)
    egress = ingress = None
    if s_ep and s_host:
        egress = evaluate(fleet.host_program(s_host), s_ep, "out", packet)
    if d_ep and d_host:
        ingress = evaluate(fleet.host_program(d_host), d_ep, "in", packet)
    return egress, ingress


BASE_DOCS = [
    doc("Tenant", "acme", defaultAction="drop", logDefault=True),
    doc("Tenant", "open", defaultAction="allow"),
    vm("web", "acme", 1, role="web"),
    vm("db", "acme", 2, host="hv2", role="db"),
    vm("guest", "open", 3, role="web"),
    vm("dns", None, 4, role="dns"),
]


def test_compiled_tier_order_beats_priority() -> None:
    fleet = compiled(
        *BASE_DOCS,
        doc(
            "Policy",
            "grant",
            "acme",
            tier="application",
            priority=1,
            rules=[{"name": "all", "action": "allow"}],
        ),
        doc(
            "Policy",
            "guard",
            "acme",
            tier="environment",
            priority=9999,
            rules=[
                {"name": "no-db", "action": "drop", "direction": "in", "to": [{"workload": "db"}]}
            ],
        ),
    )
    egress, ingress = decide(fleet, "acme/web", "acme/db")
    assert egress == Decision("allow", "acme/grant/all")
    assert ingress == Decision("drop", "acme/guard/no-db")


def test_compiled_order_within_a_tier_priority_then_name_then_provider_first() -> None:
    def rules(action: str) -> list[dict[str, Any]]:
        return [{"name": "r", "action": action, "direction": "out"}]

    fleet = compiled(
        *BASE_DOCS,
        doc("Policy", "b", "acme", priority=10, rules=rules("reject")),
        doc("Policy", "a", "acme", priority=20, rules=rules("drop")),
        doc("Policy", "a", None, priority=20, rules=rules("allow")),
        doc("Policy", "c", None, priority=10, rules=rules("allow")),
    )
    assert decide(fleet, "acme/web", "192.0.2.1")[0] == Decision("reject", "acme/b/r")
    # at the provider workload only the provider policies apply: c (10) before a (20)
    assert decide(fleet, "dns", "192.0.2.1")[0] == Decision("allow", "c/r")
    fleet = compiled(
        *BASE_DOCS,
        doc("Policy", "a", "acme", priority=20, rules=rules("drop")),
        doc("Policy", "a", None, priority=20, rules=rules("allow")),
    )
    assert decide(fleet, "acme/web", "192.0.2.1")[0] == Decision("allow", "a/r")


def test_compiled_pass_in_a_provider_tier_hands_over_to_the_tenant() -> None:
    fleet = compiled(
        *BASE_DOCS,
        doc(
            "Policy",
            "infra",
            None,
            tier="infrastructure",
            rules=[
                {
                    "name": "dns",
                    "action": "allow",
                    "to": [{"workload": "dns"}],
                    "services": ["udp/53"],
                },
                {"name": "rest", "action": "pass"},
                {"name": "never", "action": "drop"},
            ],
        ),
        doc(
            "Policy",
            "app",
            "acme",
            rules=[
                {
                    "name": "web-to-db",
                    "action": "allow",
                    "from": [{"workload": "web"}],
                    "to": [{"workload": "db"}],
                },
            ],
        ),
    )
    assert decide(fleet, "acme/web", "acme/db") == (
        Decision("allow", "acme/app/web-to-db"),
        Decision("allow", "acme/app/web-to-db"),
    )
    assert decide(fleet, "acme/web", "dns", "udp/53") == (
        Decision("allow", "infra/dns"),
        Decision("allow", "infra/dns"),
    )
    # provider workloads have no tenant policy: after the pass, the default drops
    assert decide(fleet, "dns", "acme/web")[0] == Decision("drop", DEFAULT, False)


def test_compiled_reject_and_tenant_defaults() -> None:
    fleet = compiled(
        *BASE_DOCS,
        doc(
            "Policy",
            "p",
            "acme",
            rules=[
                {"name": "no-ssh", "action": "reject", "services": ["tcp/22"], "log": True},
            ],
        ),
    )
    assert decide(fleet, "acme/web", "acme/db", "tcp/22") == (
        Decision("reject", "acme/p/no-ssh", True),
        Decision("reject", "acme/p/no-ssh", True),
    )
    assert decide(fleet, "acme/web", "acme/db") == (
        Decision("drop", DEFAULT, True),  # acme: drop, logged
        Decision("drop", DEFAULT, True),
    )
    assert decide(fleet, "open/guest", "dns") == (
        Decision("allow", DEFAULT, False),  # open: allow, not logged
        Decision("drop", DEFAULT, False),  # a provider workload: drop
    )


def test_compiled_tenant_selector_never_reaches_other_tenants() -> None:
    fleet = compiled(
        *BASE_DOCS,
        doc(
            "Policy",
            "everyone",
            "acme",
            appliedTo={"selector": "all()"},
            rules=[
                {
                    "name": "in",
                    "action": "reject",
                    "direction": "in",
                    "from": [{"selector": 'role == "web"'}],
                },
            ],
        ),
    )
    # guest (tenant open) is labelled role=web too, but acme's selector sees acme only
    assert decide(fleet, "open/guest", "acme/db")[1] == Decision("drop", DEFAULT, True)
    assert decide(fleet, "acme/web", "acme/db")[1] == Decision("reject", "acme/everyone/in")
    # and acme's policy is not installed on open's workload
    assert decide(fleet, "acme/web", "open/guest")[1] == Decision("allow", DEFAULT, False)


def test_compiled_lookup_reports_the_first_rule_when_several_match() -> None:
    fleet = compiled(
        *BASE_DOCS,
        doc(
            "Policy",
            "p",
            "acme",
            rules=[
                {
                    "name": "narrow",
                    "action": "allow",
                    "to": [{"workload": "db"}],
                    "services": ["tcp/443"],
                },
                {"name": "wide", "action": "allow", "services": ["tcp/1-1024"]},
                {"name": "widest", "action": "allow"},
            ],
        ),
    )
    # however the compiler folds these rules into blocks, the first matching rule decides
    assert decide(fleet, "acme/web", "acme/db")[0] == Decision("allow", "acme/p/narrow")
    assert decide(fleet, "acme/web", "acme/db", "tcp/80")[0] == Decision("allow", "acme/p/wide")
    assert decide(fleet, "acme/web", "acme/db", "udp/53")[0] == Decision("allow", "acme/p/widest")


def test_compiled_anti_spoofing_on_a_second_interface() -> None:
    two = doc(
        "Workload",
        "two",
        "acme",
        host="hv1",
        interfaces=[
            {"name": "eth0", "mac": "52:54:00:00:02:00", "ips": ["10.0.2.1"]},
            {"name": "eth1", "mac": "52:54:00:00:02:01", "ips": ["10.0.2.2"]},
        ],
    )
    fleet = compiled(
        *BASE_DOCS, two, doc("Policy", "p", "acme", rules=[{"name": "all", "action": "allow"}])
    )
    prog = fleet.host_program("hv1")
    own = Packet("10.0.2.2", "192.0.2.1", TCP, 1, 80, "52:54:00:00:02:01")
    assert evaluate(prog, "acme/two/eth1", "out", own) == Decision("allow", "acme/p/all")
    # each interface may only use its own MAC and addresses, not its sibling's
    sibling_ip = Packet("10.0.2.1", "192.0.2.1", TCP, 1, 80, "52:54:00:00:02:01")
    assert evaluate(prog, "acme/two/eth1", "out", sibling_ip).rule == ANTI_SPOOFING
    sibling_mac = Packet("10.0.2.2", "192.0.2.1", TCP, 1, 80, "52:54:00:00:02:00")
    assert evaluate(prog, "acme/two/eth1", "out", sibling_mac).rule == ANTI_SPOOFING
