"""`hyperwall trace`: would this packet pass, and which rule decided, at each end?

Pure: resolves the two ends (workload names or IPs) and the service against a `Catalog`,
compiles the hosts involved and runs the reference evaluator on the first packet at the
sender's egress and the receiver's ingress, each on its own (`docs/policy.md`, section 8,
"`hyperwall trace`").
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from hyperwall.compiler.fleet import FleetCompiler
from hyperwall.evaluator.evaluate import Decision, evaluate
from hyperwall.evaluator.packet import Packet, service_packet
from hyperwall.policy.model import Catalog, Verdict, Workload
from hyperwall.policy.ports import PORT_PROTOS, PortMatch, PortSpecError, is_inline, parse_port_spec


class TraceInputError(ValueError):
    """--from, --to or --service cannot be resolved; the message says why."""


@dataclass(frozen=True, slots=True)
class End:
    address: str
    workload: Workload | None
    interface: str | None

    @property
    def endpoint_key(self) -> str | None:
        return f"{self.workload.key}/{self.interface}" if self.workload else None


@dataclass(frozen=True, slots=True)
class TraceResult:
    verdict: Verdict
    egress: Decision | None
    ingress: Decision | None
    packet: Packet
    source: End
    destination: End

    def to_json(self) -> dict[str, object]:
        def end(d: Decision | None) -> dict[str, str] | None:
            return None if d is None else {"verdict": d.verdict, "rule": d.rule}

        return {"verdict": self.verdict, "egress": end(self.egress), "ingress": end(self.ingress)}


def _owner(catalog: Catalog, address: str) -> End:
    for w in catalog.workloads.values():
        for iface in w.interfaces:
            if address in iface.ips:
                return End(address, w, iface.name)
    return End(address, None, None)


def _first_address(w: Workload, family: int | None) -> tuple[str, str]:
    pairs = [(ip, iface.name) for iface in w.interfaces for ip in iface.ips]
    if not pairs:
        raise TraceInputError(f"workload {w.key!r} has no IP address")
    if family is not None:
        same = [p for p in pairs if (6 if ":" in p[0] else 4) == family]
        if not same:
            raise TraceInputError(f"workload {w.key!r} has no IPv{family} address")
        return same[0]
    v4 = [p for p in pairs if ":" not in p[0]]
    return (v4 or pairs)[0]


def resolve_end(catalog: Catalog, text: str, family: int | None = None) -> End:
    """A workload name (`web-1` or `acme/web-1`) or an IP address -> the end it stands for."""
    try:
        address = str(ipaddress.ip_address(text))
    except ValueError:
        pass
    else:
        return _owner(catalog, address)
    found = [w for w in catalog.workloads.values() if text in (w.key, w.name)]
    if not found:
        raise TraceInputError(f"{text!r} is neither an IP address nor a known workload")
    if len(found) > 1:
        names = ", ".join(sorted(w.key for w in found))
        raise TraceInputError(f"workload name {text!r} is ambiguous: give one of {names}")
    ip, iface = _first_address(found[0], family)
    return End(ip, found[0], iface)


def _fits(port: PortMatch, family: int | None) -> bool:
    return not ((port.proto == "icmp" and family == 6) or (port.proto == "icmpv6" and family == 4))


def resolve_service(
    catalog: Catalog, text: str, tenants: list[str | None], family: int | None = None
) -> PortMatch:
    """An inline port (`tcp/443`) or a Service name (its first port that fits the address
    family) -> one concrete port."""
    if is_inline(text):
        try:
            port = parse_port_spec(text)
        except PortSpecError as exc:
            raise TraceInputError(str(exc)) from None
    else:
        candidates = [f"{t}/{text}" for t in tenants if t] + [text]
        service = next(
            (catalog.config.services[c] for c in candidates if c in catalog.config.services), None
        )
        if service is None:
            raise TraceInputError(f"unknown service {text!r}: expected a Service name or tcp/PORT")
        port = next((p for p in service.ports if _fits(p, family)), service.ports[0])
    if port.proto == "any":
        raise TraceInputError(
            "service 'any' is not a packet: give e.g. tcp/443 or icmp/echo-request"
        )
    if port.proto in PORT_PROTOS and port.any_value:
        raise TraceInputError(f"service {text!r} needs a port: expected e.g. {port.proto}/443")
    if port.proto in ("icmp", "icmpv6") and port.any_value:
        return parse_port_spec(f"{port.proto}/echo-request")
    return port


def trace(
    catalog: Catalog, src: str, dst: str, service: str, compiler: FleetCompiler | None = None
) -> TraceResult:
    """The trace of one first packet; `compiler`: one already over `catalog` (None: built)."""
    source = resolve_end(catalog, src)
    src_family = 6 if ":" in source.address else 4
    destination = resolve_end(catalog, dst, family=src_family)
    if (6 if ":" in destination.address else 4) != src_family:
        raise TraceInputError(
            f"{src!r} and {dst!r} are of different address families: give two IPv4 or two IPv6"
        )
    return trace_ends(catalog, source, destination, service, compiler)


def trace_ends(
    catalog: Catalog,
    source: End,
    destination: End,
    service: str,
    compiler: FleetCompiler | None = None,
) -> TraceResult:
    """`trace` of two ends already resolved (of one address family), e.g. by an analysis
    that knows the owners of addresses. Each end is evaluated over the program of its own
    workload (`FleetCompiler.workload_program`): what its endpoints read of the host's."""
    src_family = 6 if ":" in source.address else 4
    tenants = [e.workload.tenant for e in (source, destination) if e.workload]
    port = resolve_service(catalog, service, tenants, src_family)
    if port.proto == "icmp" and src_family == 6:
        raise TraceInputError("icmp is IPv4: for IPv6 addresses use icmpv6/...")
    if port.proto == "icmpv6" and src_family == 4:
        raise TraceInputError("icmpv6 is IPv6: for IPv4 addresses use icmp/...")
    packet = service_packet(source.address, destination.address, port.proto, port.low)
    if compiler is None:
        compiler = FleetCompiler(catalog.config, catalog.workloads.values())
    egress = ingress = None
    if source.workload is not None and source.endpoint_key is not None:
        program = compiler.workload_program(source.workload.key)
        egress = evaluate(program, source.endpoint_key, "out", packet)
    if destination.workload is not None and destination.endpoint_key is not None:
        program = compiler.workload_program(destination.workload.key)
        ingress = evaluate(program, destination.endpoint_key, "in", packet)
    verdict: Verdict = "allow"
    for d in (egress, ingress):
        if d is not None and d.verdict != "allow":
            verdict = d.verdict
            break
    return TraceResult(verdict, egress, ingress, packet, source, destination)
