"""Messages between the lab CLI and the responders (JSON lines over a unix socket).

Standard library only: the responder imports it and should start fast. Counterparts:
`lab.responder_client` (sends) and `lab.responder` (answers).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

Result = Literal["allowed", "blocked", "rejected", "error"]
Proto = Literal["tcp", "udp", "icmp", "icmpv6"]
RESULTS: tuple[str, ...] = ("allowed", "blocked", "rejected", "error")
PROTOS: tuple[str, ...] = ("tcp", "udp", "icmp", "icmpv6")


@dataclass(frozen=True, slots=True)
class ProbeRequest:
    """Send one connection attempt from `src` (bound explicitly) to `dst`."""

    proto: Proto
    src: str
    dst: str
    port: int  # destination port, or the ICMP type (echo-request only)
    timeout: float

    def to_json(self) -> dict[str, Any]:
        return {"op": "probe", **asdict(self)}

    @staticmethod
    def from_json(data: dict[str, Any]) -> ProbeRequest:
        proto = str(data["proto"])
        if proto not in PROTOS:
            raise ValueError(f"unknown protocol {proto!r}")
        return ProbeRequest(
            proto=proto,  # type: ignore[arg-type]
            src=str(data["src"]),
            dst=str(data["dst"]),
            port=int(data["port"]),
            timeout=float(data["timeout"]),
        )


@dataclass(frozen=True, slots=True)
class ProbeOutcome:
    """`allowed` (answered), `blocked` (no answer in time), `rejected` (refused), `error`."""

    result: Result
    detail: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def from_json(data: dict[str, Any]) -> ProbeOutcome:
        result = str(data.get("result", "error"))
        if result not in RESULTS:
            return ProbeOutcome("error", f"bad result {result!r}")
        return ProbeOutcome(result, str(data.get("detail", "")))  # type: ignore[arg-type]
