"""What a probe sends: SRC, DST and SERVICE resolved exactly as `hyperwall trace` does. Pure.

`resolve_end` and `resolve_service` (analysis.trace) pick the addresses and the one concrete
port; the same family checks as `trace` apply. The lab then sends the probe from the VM that
owns the source address (or from the external namespace for an outside address).
"""

from __future__ import annotations

from dataclasses import dataclass

from hyperwall.analysis.trace import End, TraceInputError, resolve_end, resolve_service
from hyperwall.lab.errors import LabInputError
from hyperwall.lab.probe_messages import Proto
from hyperwall.policy.model import Catalog
from hyperwall.policy.ports import ICMP_TYPES, ICMPV6_TYPES


@dataclass(frozen=True, slots=True)
class ProbeTarget:
    source: End
    destination: End
    proto: Proto
    port: int  # destination port, or the ICMP type
    service: str  # the concrete service, e.g. tcp/8000 for app-api

    @property
    def family(self) -> int:
        return 6 if ":" in self.source.address else 4


def _family(address: str) -> int:
    return 6 if ":" in address else 4


def resolve_probe(catalog: Catalog, src: str, dst: str, service: str) -> ProbeTarget:
    """Resolve like `trace`; raise LabInputError for what the lab cannot send."""
    try:
        source = resolve_end(catalog, src)
        destination = resolve_end(catalog, dst, family=_family(source.address))
        if _family(destination.address) != _family(source.address):
            raise TraceInputError(
                f"{src!r} and {dst!r} are of different address families: give two IPv4 or two IPv6"
            )
        tenants = [e.workload.tenant for e in (source, destination) if e.workload]
        port = resolve_service(catalog, service, tenants, _family(source.address))
    except TraceInputError as exc:
        raise LabInputError(str(exc)) from None
    family = _family(source.address)
    if port.proto == "icmp" and family == 6:
        raise LabInputError("icmp is IPv4: for IPv6 addresses use icmpv6/...")
    if port.proto == "icmpv6" and family == 4:
        raise LabInputError("icmpv6 is IPv6: for IPv4 addresses use icmp/...")
    if source.workload is None and destination.workload is None:
        raise LabInputError(f"neither {src!r} nor {dst!r} is a workload of the lab")
    if source.workload is not None and source.workload is destination.workload:
        raise LabInputError(
            f"{src!r} and {dst!r} are the same VM: its traffic to itself never leaves it"
        )
    if port.proto == "sctp":
        raise LabInputError("the lab cannot send sctp probes: use tcp, udp, icmp or icmpv6")
    if port.proto == "icmp" and port.low != ICMP_TYPES["echo-request"]:
        raise LabInputError("the lab sends only icmp/echo-request")
    if port.proto == "icmpv6" and port.low != ICMPV6_TYPES["echo-request"]:
        raise LabInputError("the lab sends only icmpv6/echo-request")
    if port.proto == "any":  # resolve_service refuses it; keeps the type checker honest
        raise LabInputError("service 'any' is not a packet")
    concrete = f"{port.proto}/echo-request" if port.proto.startswith("icmp") else None
    return ProbeTarget(
        source=source,
        destination=destination,
        proto=port.proto,
        port=port.low,
        service=concrete or f"{port.proto}/{port.low}",
    )
