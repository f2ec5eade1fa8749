"""Renders a `HostProgram` into the nftables objects of our table (`inet hyperwall`): the
composition of the pieces, and the per-endpoint elements of the dispatch maps. Pure.

Counterpart of `compiler.program` (what to enforce) and `nft.backend` (which sends these
objects to the kernel). The table, by module:

- `nft.table`: the objects as values (`SetSpec`, `ChainSpec`, `TableState`) and their names;
- `nft.base_chains`: the base chains `forward` and `host_in`, the static sets and dispatch
  maps (routed attachment; bridge mode tags by MAC instead), and the dispatch chains `d_*`;
- `nft.policy_chains`: the tier chains `t_*`, the policy chains `p_*` and the log chains
  `l_*` (logged rules `goto` one: it logs, rate-limited to NFLOG, and decides);
- `nft.blocks`: the block sets `k_*`, shaped and clipped to the host's own addresses;
- here: the address sets `a_*`, each endpoint's elements in the anti-spoofing sets and
  dispatch maps, and the whole table (`render_program`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from hyperwall.attachment import Attachment
from hyperwall.compiler.program import AddressSet, Endpoint, HostProgram
from hyperwall.dataplane.nft.base_chains import render_dispatch, static_objects
from hyperwall.dataplane.nft.blocks import local_addresses, render_block_set
from hyperwall.dataplane.nft.policy_chains import passing_chains, render_policy_chain
from hyperwall.dataplane.nft.table import (
    ChainSpec,
    Element,
    SetSpec,
    TableState,
    address_set_name,
    block_set_shape,
)


def vm_ifname(mac: str, prefix: str = "hwt") -> str:
    """The host-side interface name of a VM interface in the lab: prefix + MAC hex (12
    characters, so a prefix of at most 3 keeps the name within the kernel's 15)."""
    return prefix + mac.replace(":", "")


@dataclass(frozen=True, slots=True)
class Options:
    """How this host attaches its VMs, which the table is rendered for."""

    vm_prefix: str = "hwt"  # host-side VM interfaces are named with this prefix
    ifname_of: Callable[[Endpoint], str] | None = None  # default: vm_ifname(mac, prefix)
    mode: Attachment = "routed"  # VM links routed by the host, or bridged (br_netfilter)
    clip: bool = True  # load block elements only for the host's own addresses (`blocks.Clip`)

    def ifname(self, ep: Endpoint) -> str:
        if ep.ifname is not None:  # the hypervisor's own tap name (`hypervisor.localize`)
            return ep.ifname
        return self.ifname_of(ep) if self.ifname_of else vm_ifname(ep.mac, self.vm_prefix)


def render_address_set(s: AddressSet) -> list[tuple[SetSpec, set[Element]]]:
    return [
        (SetSpec(address_set_name(s.name, 4), ("ipv4_addr",), True), set(s.v4)),
        (SetSpec(address_set_name(s.name, 6), ("ipv6_addr",), True), set(s.v6)),
    ]


def render_endpoint(
    ep: Endpoint, options: Options, passing: frozenset[str]
) -> tuple[list[ChainSpec], dict[str, set[Element]]]:
    """Chains an endpoint needs, and its elements in the anti-spoofing sets and dispatch maps."""
    ifname = options.ifname(ep)
    chains: list[ChainSpec] = []
    dispatch = {}
    for direction in ("out", "in"):
        d, tiers = render_dispatch(ep, direction, passing)
        chains += [*tiers, d]
        dispatch[direction] = d.name
    elements: dict[str, set[Element]] = {}

    def add(table: str, *element: str) -> None:
        elements.setdefault(table, set()).add(element)

    if options.mode == "bridge":
        add("br:ports", ifname)
        add("egress_map", ep.mac, dispatch["out"])
        for ip in ep.ips:
            family = 6 if ":" in ip else 4
            add(f"ingress_map{family}", ip, dispatch["in"])
            add(f"br:spoof{family}", ifname, ep.mac, ip)
        return chains, elements
    add("vm_ifaces", ifname)
    for ip in ep.ips:
        family = 6 if ":" in ip else 4
        add(f"own{family}", ifname, ip)
        add(f"from{family}", ifname, ep.mac, ip, dispatch["out"])
        add(f"to{family}", ifname, ip, dispatch["in"])
    return chains, elements


def render_program(program: HostProgram, options: Options) -> TableState:
    """The whole table for `program` (full syncs; the backend renders deltas piecewise)."""
    state = TableState()
    sets, chains = static_objects(options.mode, options.vm_prefix)
    for spec in sets:
        state.put_set(spec, set())
    for s in program.address_sets.values():
        for spec, elements in render_address_set(s):
            state.put_set(spec, elements)
    filled: dict[str, set[str]] = {}
    local = local_addresses(program) if options.clip else None
    for b in program.block_sets.values():
        shapes = filled[b.name] = set()
        for spec, elements in render_block_set(b, local):
            state.put_set(spec, elements)
            if elements:
                shapes.add(block_set_shape(spec.name))
    for chain in program.chains.values():
        for c in render_policy_chain(chain, lambda block: filled.get(block, ())):
            state.chains[c.name] = c
    passing = passing_chains(program)
    for ep in program.endpoints.values():
        ep_chains, ep_elements = render_endpoint(ep, options, passing)
        for c in ep_chains:
            state.chains[c.name] = c
        for table, elements in ep_elements.items():
            state.elements[table] |= elements
    for c in chains:
        state.chains[c.name] = c
    return state
