"""Random Assertion documents for the random fleets of `tests/fleetgen.py`, and the brute
force that the checker is compared with.

`assertion_docs(docs)` draws Assertions that a tenant or the provider may write against a
fleet. `brute_force(docs, catalog, assertion)` answers "does it hold?" without the checker:
it enumerates addresses and ports and asks `trace` (the reference evaluator) for each case.
Enumerating 2^32 addresses is out of reach, so it enumerates the fleet's atoms, read off
the RAW documents alone (not the compiler): the pieces into which every CIDR and every
workload address in the documents cut the address space, and every port spec cuts the port
space. Every set a document can name is a union of such pieces, so two addresses of one
piece are treated alike by every rule; the brute force still tries both ends of every piece
, so an off-by-one in the checker's classes shows. `verdicts` is `trace`'s reading of the
two ends with the hosts' programs compiled once (the same evaluator calls, fewer rebuilds).
"""

from __future__ import annotations

import ipaddress
import itertools
from collections.abc import Iterator, Sequence
from typing import Any

from hypothesis import strategies as st

from hyperwall.compiler.fleet import FleetCompiler
from hyperwall.evaluator.evaluate import Decision, evaluate
from hyperwall.evaluator.packet import service_packet
from hyperwall.policy.model import Catalog
from hyperwall.policy.ports import PROTO_NUMBERS, is_inline, parse_port_spec
from tests.fleetgen import Doc, Names, doc, peers, sample
from tests.test_oracle import Oracle

ASSERTION_NAMES = ("x1", "x2", "x3")
SERVICE_SPECS = (
    "tcp/80",
    "tcp/8000-8080",
    "tcp/79-81",
    "tcp",
    "udp/53",
    "icmp/echo-request",
    "icmpv6",
    "any",
)
SPACE = {
    4: {"tcp": (1, 65535), "udp": (1, 65535), "sctp": (1, 65535), "icmp": (0, 255)},
    6: {"tcp": (1, 65535), "udp": (1, 65535), "sctp": (1, 65535), "icmpv6": (0, 255)},
}


@st.composite
def assertion_docs(draw: st.DrawFn, docs: Sequence[Doc]) -> list[Doc]:
    names = Names.of(docs)
    out: list[Doc] = []
    for name in draw(st.permutations(ASSERTION_NAMES))[: draw(st.integers(1, 3))]:
        owner = draw(sample([None, *names.tenants]))
        spec: dict[str, Any] = {"expect": draw(sample(["allow", "deny"]))}
        for side in ("from", "to"):
            if draw(st.integers(0, 4)):  # mostly given
                spec[side] = draw(st.lists(peers(names, owner), min_size=1, max_size=2))
        if draw(st.integers(0, 3)):
            refs = [*SERVICE_SPECS, *names.service_refs(owner)]
            spec["services"] = draw(st.lists(sample(refs), min_size=1, max_size=2))
        out.append(doc("Assertion", name, owner, spec=spec))
    return out


def _walk(value: Any) -> Iterator[tuple[str, Any]]:
    if isinstance(value, dict):
        for k, v in value.items():
            yield k, v
            yield from _walk(v)
    elif isinstance(value, list):
        for v in value:
            yield from _walk(v)


def address_points(docs: Sequence[Doc], family: int) -> list[str]:
    """Both ends (and the second address) of every atom of the family's address space."""
    nets: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    for key, value in _walk(list(docs)):
        texts = [value] if key in ("cidr", "ips") and isinstance(value, str) else []
        texts += value if key in ("cidrs", "ips") and isinstance(value, list) else []
        nets += [ipaddress.ip_network(t) for t in texts]
    top = 2**32 if family == 4 else 2**128
    cuts = {0, top}
    for net in nets:
        if net.version == family:
            cuts |= {int(net.network_address), int(net.broadcast_address) + 1}
    ordered = sorted(cuts)
    points: set[int] = set()
    for low, high in itertools.pairwise(ordered):
        points |= {low, high - 1}
    make = ipaddress.IPv4Address if family == 4 else ipaddress.IPv6Address
    return [str(make(p)) for p in sorted(points)]


def port_points(docs: Sequence[Doc], family: int) -> list[tuple[str, int]]:
    """Both ends of every atom of every protocol's port (ICMP type) space."""
    cuts: dict[str, set[int]] = {p: {low, high + 1} for p, (low, high) in SPACE[family].items()}
    for key, value in _walk(list(docs)):
        if key not in ("ports", "services") or not isinstance(value, list):
            continue
        for text in value:
            if isinstance(text, str) and is_inline(text):
                port = parse_port_spec(text)
                if port.proto in cuts and not port.any_value:
                    cuts[port.proto] |= {port.low, port.high + 1}
    out: list[tuple[str, int]] = []
    for proto, found in cuts.items():
        ordered = sorted(found)
        for low, high in itertools.pairwise(ordered):
            out += sorted({(proto, low), (proto, high - 1)})
    return out


class Verdicts:
    """`trace(...).verdict` for many cases: both ends through the reference evaluator."""

    def __init__(self, catalog: Catalog) -> None:
        compiler = FleetCompiler(catalog.config, catalog.workloads.values())
        self.programs = {h: compiler.host_program(h) for h in compiler.hosts()}
        self.owners: dict[str, tuple[str, str]] = {}
        for w in catalog.workloads.values():
            for iface in w.interfaces:
                for ip in iface.ips:
                    self.owners[ip] = (w.host, f"{w.key}/{iface.name}")

    def ends(self, src: str, dst: str, proto: str, port: int) -> tuple[Decision | None, ...]:
        """The egress and the ingress decision (None: that end is not a workload)."""
        packet = service_packet(src, dst, proto, port)
        out: list[Decision | None] = []
        for address, direction in ((src, "out"), (dst, "in")):
            found = self.owners.get(address)
            out.append(
                None
                if found is None
                else evaluate(self.programs[found[0]], found[1], direction, packet)  # type: ignore[arg-type]
            )
        return tuple(out)

    def __call__(self, src: str, dst: str, proto: str, port: int) -> str:
        for decision in self.ends(src, dst, proto, port):
            if decision is not None and decision.verdict != "allow":
                return decision.verdict
        return "allow"


def brute_force(docs: Sequence[Doc], catalog: Catalog, assertion: Doc) -> bool:
    """Whether `assertion` holds, by deciding every enumerated case."""
    oracle = Oracle(docs)
    verdict_of = Verdicts(catalog)
    owner = assertion["metadata"].get("tenant")
    spec = assertion["spec"]
    everything = [*docs, assertion]
    for family in (4, 6):
        addresses = [ipaddress.ip_address(a) for a in address_points(everything, family)]
        sources = [a for a in addresses if oracle.address_in(owner, spec.get("from", []), a)]
        targets = [a for a in addresses if oracle.address_in(owner, spec.get("to", []), a)]
        services = [
            (proto, port)
            for proto, port in port_points(everything, family)
            if proto in PROTO_NUMBERS
            and oracle.services_match(owner, spec.get("services"), proto, port)
        ]
        for s in sources:
            for d in targets:
                if s == d:
                    continue
                for proto, port in services:
                    verdict = verdict_of(str(s), str(d), proto, port)
                    if (verdict == "allow") != (spec["expect"] == "allow"):
                        return False
    return True
