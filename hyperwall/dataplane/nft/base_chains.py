"""The base chains and the static objects of our table, per attachment mode, and the
dispatch chains `d_*` that the dispatch maps lead to. Pure.

Counterpart of `nft.policy_chains` (the tier and policy chains a dispatch chain jumps) and
`nft.render` (which fills the dispatch maps per endpoint). Routed attachment:

- base chain `forward` (forward, priority 0), one per packet: `ct state
  established,related` goes to chain `established`, where interface . source IP must be the
  VM's own (a hit accepts; a miss from a VM interface is spoofed), `invalid` drops. A new
  connection from a VM is dispatched by one lookup of interface . MAC . IP (`@from4/6`) to
  the sender's dispatch chain, where an allow is `goto to_vm` (not accept), so the receiving
  end is still checked; a miss from a known VM interface is spoofed, from an unknown one
  drops (fail closed). Then chain `to_vm`: a packet to a VM interface is dispatched by
  interface . destination IP (`@to4/6`) to the receiver's dispatch chain (an allow there
  is accept); a miss to a known VM interface is misdirected (a VM receives only its own
  addresses, which is what lets block sets hold only this host's addresses: `blocks.Clip`),
  to an unknown one drops; anything not to a VM is accepted. One base chain, so an
  established packet costs one chain traversal and one lookup.
- base chain `host_in` (input): VMs may reach the host only for DHCP and ND/MLD.
- dispatch chains `d_*` (one per distinct dispatch, shared by endpoints): jump each tier
  chain `t_*`, then the default verdict.

Bridge mode (br_netfilter) tags by MAC and address instead, and checks anti-spoofing in a
`bridge hyperwall` prerouting chain (`_bridge_static`).
"""

from __future__ import annotations

import json

from hyperwall.attachment import Attachment
from hyperwall.compiler.program import Endpoint
from hyperwall.compiler.rule_numbers import ANTI_SPOOFING, DEFAULT, MISDIRECTED, UNKNOWN_INTERFACE
from hyperwall.dataplane.nft.ct_mark import admit
from hyperwall.dataplane.nft.expr import (
    Expr,
    dump,
    log,
    match,
    meta,
    payload,
    verdict,
    vmap,
)
from hyperwall.dataplane.nft.policy_chains import tier_chain
from hyperwall.dataplane.nft.table import TO_VM, ChainSpec, SetSpec, short


def render_dispatch(
    ep: Endpoint, direction: str, passing: frozenset[str]
) -> tuple[ChainSpec, list[ChainSpec]]:
    """The dispatch chain of one endpoint direction and the tier chains it jumps to."""
    tiers = [
        tier_chain(chains, passing)
        for chains in ep.dispatch(direction)  # type: ignore[arg-type]
        if chains
    ]
    rules = [dump([{"jump": {"target": t.name}}]) for t in tiers]
    if ep.log_default:  # its own rule: a rate limit must never skip the verdict
        rules.append(dump(log(DEFAULT, ep.default, direction)))
    admitted = admit(ep.default, DEFAULT, direction)  # marks the connection (`ct_mark`)
    rules.append(dump([{"counter": None}, *admitted, verdict(ep.default, direction)]))
    # one per tenant even where the rules are the same: its default's counter is the
    # tenant's (`nft.hits`)
    name = f"d_{short(json.dumps([rules, ep.tenant]))}"
    return ChainSpec(name, tuple(rules), comment=f"dispatch {direction}"), tiers


def static_objects(mode: Attachment, vm_prefix: str) -> tuple[list[SetSpec], list[ChainSpec]]:
    """The sets and chains every table of `mode` has, VM interfaces named `vm_prefix`*."""
    if mode == "bridge":
        return _bridge_static(vm_prefix)
    return _routed_static(vm_prefix)


_EST = match({"ct": {"key": "state"}}, ["established", "related"], "in")
_INVALID = match({"ct": {"key": "state"}}, "invalid", "in")
_ND = [
    "nd-router-solicit",
    "nd-neighbor-solicit",
    "nd-neighbor-advert",
    "mld-listener-query",
    "mld-listener-report",
    "mld-listener-done",
    "mld2-listener-report",
]


# Logging is rate-limited, so a log never shares a rule with a verdict: once over the
# limit the rule stops matching, and a verdict in it would be skipped (fail open).
# The log rule's first counter counts every packet (`nft.drops` reads it for the spoofed
# and misdirected chains). A packet from an unknown interface is the sender's end ("out"),
# one to an unknown interface the receiver's ("in").
def _unknown(direction: str) -> list[Expr]:
    return [log(UNKNOWN_INTERFACE, "drop", direction), [{"counter": None}, {"drop": None}]]


_SPOOF_CHAIN: Expr = log(ANTI_SPOOFING, "drop", "out")
_MISDIRECTED_CHAIN: Expr = log(MISDIRECTED, "drop", "in")
_REJECT: list[Expr] = [
    [match(meta("l4proto"), "tcp"), {"reject": {"type": "tcp reset"}}],
    [{"reject": {"type": "icmpx", "expr": "admin-prohibited"}}],
]


def _chains(*specs: tuple[str, list[Expr], tuple[str, int] | None]) -> list[ChainSpec]:
    return [ChainSpec(name, tuple(dump(r) for r in rules), hook) for name, rules, hook in specs]


def _routed_static(vm_prefix: str) -> tuple[list[SetSpec], list[ChainSpec]]:
    """Routed VM links: the inet hooks see the VM's own interface; dispatch by its name."""
    prefix = vm_prefix + "*"
    sets = [
        SetSpec("own4", ("ifname", "ipv4_addr")),
        SetSpec("own6", ("ifname", "ipv6_addr")),
        SetSpec("from4", ("ifname", "ether_addr", "ipv4_addr"), verdict_map=True),
        SetSpec("from6", ("ifname", "ether_addr", "ipv6_addr"), verdict_map=True),
        SetSpec("to4", ("ifname", "ipv4_addr"), verdict_map=True),
        SetSpec("to6", ("ifname", "ipv6_addr"), verdict_map=True),
        SetSpec("vm_ifaces", ("ifname",)),
    ]
    to_vm = match(meta("oifname"), prefix)
    # Anti-spoofing. Every packet from a VM: interface . source IP (a VM must not inject
    # into another's connections). A packet that is not part of an admitted connection: also
    # its MAC (interface . MAC . IP). The MAC costs about 1% of a core at a few thousand
    # connections/s (KERNEL_FACTS-style perf measurement), and on a routed link a foreign
    # source MAC on an admitted connection reaches no one: the host routes by IP.
    # An established packet goes to `established` first: one not from a VM is accepted on the
    # interface-name prefix alone, one from a VM by a hit in @own4/6 (a name load costs
    # ~0.07 us here, a missed lookup more than a hit, perf; cross-host half the packets
    # come from the underlay).
    not_from_vm = match(meta("iifname"), prefix, "!=")
    own = [
        [
            match({"concat": [meta("iifname"), payload(ip, "saddr")]}, f"@own{f}"),
            {"accept": None},
        ]
        for f, ip in ((4, "ip"), (6, "ip6"))
    ]
    established = [[not_from_vm, {"accept": None}], *own, [{"goto": {"target": "spoofed"}}]]
    # A new connection from a VM: one lookup of interface . MAC . IP is both the
    # anti-spoofing check and the dispatch to the sender's chain. A miss from a VM interface
    # we know is spoofed; from one we do not know, fail closed.
    sending = [
        [vmap([meta("iifname"), payload("ether", "saddr"), payload(ip, "saddr")], f"@from{f}")]
        for f, ip in ((4, "ip"), (6, "ip6"))
    ]
    forward = [
        [_EST, {"goto": {"target": "established"}}],
        [_INVALID, {"drop": None}],
        [not_from_vm, {"goto": {"target": TO_VM}}],
        *sending,
        [match(meta("iifname"), "@vm_ifaces"), {"goto": {"target": "spoofed"}}],
        *_unknown("out"),
    ]
    # The receiving end: one lookup of interface . destination IP dispatches to the
    # receiver's chain; a VM receives only its own addresses (block sets are clipped to
    # them: `Clip`), so a miss to a VM interface we know is misdirected.
    receiving = [
        [match(meta("oifname"), prefix, "!="), {"accept": None}],
        *(
            [vmap([meta("oifname"), payload(ip, "daddr")], f"@to{f}")]
            for f, ip in ((4, "ip"), (6, "ip6"))
        ),
        [match(meta("oifname"), "@vm_ifaces"), {"goto": {"target": "misdirected"}}],
        *([to_vm, *rule] for rule in _unknown("in")),
    ]
    host_in = [
        [match(meta("iifname"), prefix, "!="), {"accept": None}],
        [_EST, {"accept": None}],
        [match(payload("icmpv6", "type"), {"set": _ND}), {"accept": None}],
        [match(payload("udp", "dport"), {"set": [67, 547]}), {"accept": None}],
        [{"counter": None}, {"drop": None}],
    ]
    return sets, _chains(
        ("reject", _REJECT, None),
        ("spoofed", [_SPOOF_CHAIN, [{"drop": None}]], None),
        ("misdirected", [_MISDIRECTED_CHAIN, [{"drop": None}]], None),
        ("established", established, None),
        (TO_VM, receiving, None),
        ("forward", forward, ("forward", 0)),
        ("host_in", host_in, ("input", 0)),
    )


def _bridge_static(vm_prefix: str) -> tuple[list[SetSpec], list[ChainSpec]]:
    """Bridged VM ports with br_netfilter: the inet hooks see only the bridge.

    Anti-spoofing (and fail-closed for unknown ports) is done where the port is known: a
    `bridge hyperwall` prerouting chain. Since a port may send only from its own MAC, the
    inet chains dispatch on the Ethernet source (egress) and destination (ingress) MAC.
    `reject` from the inet hooks answers bridged packets only if the host routes the VM
    addresses via the bridge (measured: no bridge-family reject on this kernel).
    """
    prefix = vm_prefix + "*"
    sets = [
        SetSpec("br:spoof4", ("ifname", "ether_addr", "ipv4_addr")),
        SetSpec("br:spoof6", ("ifname", "ether_addr", "ipv6_addr")),
        SetSpec("egress_map", ("ether_addr",), verdict_map=True),
        SetSpec("ingress_map4", ("ipv4_addr",), verdict_map=True),
        SetSpec("ingress_map6", ("ipv6_addr",), verdict_map=True),
        SetSpec("br:ports", ("ifname",)),
    ]
    own = {
        f: {"concat": [meta("iifname"), payload("ether", "saddr"), payload(ip, "saddr")]}
        for f, ip in ((4, "ip"), (6, "ip6"))
    }
    arp_own = {"concat": [meta("iifname"), payload("ether", "saddr"), payload("arp", "saddr ip")]}
    pre = [
        [match(meta("iifname"), prefix, "!="), {"accept": None}],
        [match(arp_own, "@spoof4"), {"accept": None}],
        [match(payload("arp", "saddr ip"), "0.0.0.0"), {"accept": None}],  # ARP probe
        [match(own[4], "@spoof4"), {"accept": None}],
        [match(own[6], "@spoof6"), {"accept": None}],
        [
            match(payload("ip", "saddr"), "0.0.0.0"),
            match(payload("udp", "dport"), 67),
            {"accept": None},
        ],
        [
            match(
                payload("ip6", "saddr"), {"set": [{"prefix": {"addr": "fe80::", "len": 10}}, "::"]}
            ),
            match(payload("icmpv6", "type"), {"set": _ND}),
            {"accept": None},
        ],
        _SPOOF_CHAIN,
        [{"drop": None}],
    ]
    nd = [match(payload("icmpv6", "type"), {"set": _ND}), {"accept": None}]
    forward = [nd, [_EST, {"accept": None}], [_INVALID, {"drop": None}]]
    forward.append([{"vmap": {"key": payload("ether", "saddr"), "data": "@egress_map"}}])
    forward.append([{"goto": {"target": TO_VM}}])
    # Ingress by destination address, not MAC: a packet the host routes into the bridge
    # still carries the host's MAC at the forward hook.
    receiving: list[Expr] = [
        [{"vmap": {"key": payload("ip", "daddr"), "data": "@ingress_map4"}}],
        [{"vmap": {"key": payload("ip6", "daddr"), "data": "@ingress_map6"}}],
        [{"accept": None}],
    ]
    # A frame out of a VM port the agent does not enforce (a tap whose VM it does not know
    # yet, or an unmanaged one) is dropped here, in the bridge: the inet chains dispatch by
    # address and cannot tell that port from a known one. Bridged frames pass `forward`,
    # frames the host sends into the bridge `output`.
    unknown_port = [
        [match(meta("oifname"), prefix, "!="), {"accept": None}],
        [match(meta("oifname"), "@ports"), {"accept": None}],  # br:ports in the bridge table
        *_unknown("in"),
    ]
    return sets, _chains(
        ("reject", _REJECT, None),
        (TO_VM, receiving, None),
        ("forward", forward, ("forward", 0)),
        ("br:pre", pre, ("prerouting", -200)),
        ("br:out", unknown_port, ("forward", 0)),
        ("br:local", unknown_port, ("output", 0)),
    )
