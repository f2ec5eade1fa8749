"""Service port specifications: `tcp/443`, `tcp/8000-8080`, `udp`, `icmp/echo-request`, `any`.

Parsing is pure; a `PortMatch` is what the compiler puts into rules and what the evaluator
(`hyperwall.evaluator`) tests a packet against.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Proto = Literal["tcp", "udp", "sctp", "icmp", "icmpv6", "any"]

PORT_PROTOS: frozenset[str] = frozenset({"tcp", "udp", "sctp"})
KEYWORDS: frozenset[str] = frozenset({"any", "tcp", "udp", "sctp", "icmp", "icmpv6"})

ICMP_TYPES: dict[str, int] = {
    "echo-reply": 0,
    "destination-unreachable": 3,
    "source-quench": 4,
    "redirect": 5,
    "echo-request": 8,
    "router-advertisement": 9,
    "router-solicitation": 10,
    "time-exceeded": 11,
    "parameter-problem": 12,
    "timestamp-request": 13,
    "timestamp-reply": 14,
}

ICMPV6_TYPES: dict[str, int] = {
    "destination-unreachable": 1,
    "packet-too-big": 2,
    "time-exceeded": 3,
    "parameter-problem": 4,
    "echo-request": 128,
    "echo-reply": 129,
    "mld-listener-query": 130,
    "mld-listener-report": 131,
    "mld-listener-done": 132,
    "nd-router-solicit": 133,
    "nd-router-advert": 134,
    "nd-neighbor-solicit": 135,
    "nd-neighbor-advert": 136,
    "nd-redirect": 137,
    "mld2-listener-report": 143,
}

# IP protocol numbers, as the kernel and the evaluator's packets carry them.
PROTO_NUMBERS: dict[str, int] = {"icmp": 1, "tcp": 6, "udp": 17, "sctp": 132, "icmpv6": 58}


@dataclass(frozen=True, slots=True, order=True)
class PortMatch:
    """One protocol with a port range (tcp/udp/sctp) or an ICMP type (None = all)."""

    proto: Proto
    low: int = 0  # first port, or ICMP type
    high: int = 65535  # last port, or ICMP type
    any_value: bool = True  # True: every port / every ICMP type of `proto`

    def __str__(self) -> str:
        if self.proto == "any" or self.any_value:
            return self.proto
        if self.proto in PORT_PROTOS:
            rng = str(self.low) if self.low == self.high else f"{self.low}-{self.high}"
            return f"{self.proto}/{rng}"
        table = ICMP_TYPES if self.proto == "icmp" else ICMPV6_TYPES
        for name, number in table.items():
            if number == self.low:
                return f"{self.proto}/{name}"
        return f"{self.proto}/{self.low}"


ANY = PortMatch("any")


class PortSpecError(ValueError):
    """A port specification that cannot be parsed; the message says what was expected."""


def is_inline(text: str) -> bool:
    """True if `text` is an inline port spec rather than the name of a Service."""
    return "/" in text or text in KEYWORDS


def _port(text: str, spec: str) -> int:
    if not text.isdigit():
        raise PortSpecError(f"bad port {text!r} in {spec!r}: expected a number 1-65535")
    value = int(text)
    if not 1 <= value <= 65535:
        raise PortSpecError(f"port {value} in {spec!r} is out of range: expected 1-65535")
    return value


def parse_port_spec(spec: str) -> PortMatch:
    """Parse one port spec; raise PortSpecError naming what was expected."""
    if spec == "any":
        return ANY
    proto, _, rest = spec.partition("/")
    if proto not in KEYWORDS or proto == "any":
        raise PortSpecError(
            f"unknown protocol {proto!r} in {spec!r}: expected tcp, udp, sctp, icmp, icmpv6 or any"
        )
    if not rest:
        if "/" in spec:
            raise PortSpecError(f"missing port or type after '/' in {spec!r}")
        return PortMatch(proto)  # type: ignore[arg-type]
    if proto in PORT_PROTOS:
        first, dash, last = rest.partition("-")
        low = _port(first, spec)
        high = _port(last, spec) if dash else low
        if high < low:
            raise PortSpecError(f"port range {rest!r} in {spec!r} is empty: expected LOW-HIGH")
        return PortMatch(proto, low, high, False)  # type: ignore[arg-type]
    table = ICMP_TYPES if proto == "icmp" else ICMPV6_TYPES
    if rest in table:
        number = table[rest]
    elif rest.isdigit() and int(rest) <= 255:
        number = int(rest)
    else:
        raise PortSpecError(
            f"unknown {proto} type {rest!r} in {spec!r}: expected a number 0-255 or one of "
            + ", ".join(table)
        )
    return PortMatch(proto, number, number, False)  # type: ignore[arg-type]
