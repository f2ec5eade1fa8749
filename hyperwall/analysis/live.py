"""`trace --live`: the kernel's decisions for one probe beside the offline `trace`. Pure.

The agents report, per end the probe passed (`egress` at the sender's host, `ingress` at the
receiver's), the verdict and rule the kernel hit (`dataplane.nft.trace_attribute`). This
module puts them beside `TraceResult` (`analysis.trace`) and lists every difference:

- an end that is a managed workload must have been seen by the kernel with the same verdict
  and the same rule id;
- except the receiver's end when the sender's end denied the probe (live and offline): the
  probe never got there, and offline's ingress answer cannot be checked (not a difference);
- an end the kernel decided that offline has no decision for is a difference too.

A difference means the kernel does not do what the policy says (a rule changed or removed
behind the agent's back, an agent behind, a bug): `hyperwall trace --live` then exits 1.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from hyperwall.analysis.trace import TraceResult

ENDS = ("egress", "ingress")


@dataclass(frozen=True, slots=True)
class LiveEnd:
    verdict: str
    rule: str
    host: str
    chain: str = ""
    handle: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict,
            "rule": self.rule,
            "host": self.host,
            "chain": self.chain,
            "handle": self.handle,
        }


@dataclass(frozen=True, slots=True)
class Comparison:
    offline: TraceResult
    live: Mapping[str, LiveEnd]  # "egress"/"ingress" -> what the kernel hit
    differences: tuple[str, ...]
    unchecked: tuple[str, ...]  # ends the probe could not reach (denied before)

    @property
    def agrees(self) -> bool:
        return not self.differences

    def to_json(self) -> dict[str, Any]:
        return {
            "agrees": self.agrees,
            "offline": self.offline.to_json(),
            "live": {e: (self.live[e].to_json() if e in self.live else None) for e in ENDS},
            "differences": list(self.differences),
            "unchecked": list(self.unchecked),
        }


def compare(offline: TraceResult, live: Mapping[str, LiveEnd]) -> Comparison:
    """Every way in which the kernel's decisions (`live`) differ from `offline`."""
    differences: list[str] = []
    unchecked: list[str] = []
    expected = {"egress": offline.egress, "ingress": offline.ingress}
    egress_denied = (
        offline.egress is not None
        and offline.egress.verdict != "allow"
        and "egress" in live
        and live["egress"].verdict != "allow"
    )
    for end in ENDS:
        want, got = expected[end], live.get(end)
        if want is None:
            if got is not None:
                differences.append(
                    f"{end}: the kernel decided {got.verdict} by {got.rule}, "
                    "but offline this end is not a managed workload"
                )
            continue
        if got is None:
            if end == "ingress" and egress_denied:
                unchecked.append(end)
            else:
                differences.append(
                    f"{end}: offline {want.verdict} by {want.rule}, "
                    "but the probe was not seen deciding there"
                )
            continue
        if (got.verdict, got.rule) != (want.verdict, want.rule):
            differences.append(
                f"{end}: offline {want.verdict} by {want.rule}, "
                f"kernel {got.verdict} by {got.rule} (host {got.host}, chain {got.chain}, "
                f"handle {got.handle})"
            )
    return Comparison(offline, dict(live), tuple(differences), tuple(unchecked))
