"""How long the assertion gate took on this manager's changes: a histogram kept in memory.

`Manager.plan` observes every gate check (`GateResult.seconds`: choosing the touched
assertions, advancing the fleet compiler to the change and back, checking them) and how many
assertions it checked; `/metrics` serves it as `hyperwall_manager_gate_seconds` (buckets
below) and `hyperwall_manager_gate_assertions_checked`. Counts since this manager started;
nothing per tenant or document.
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass, field

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)  # seconds


@dataclass
class GateTimes:
    counts: list[int] = field(default_factory=lambda: [0] * (len(BUCKETS) + 1))  # last: +Inf
    total: float = 0.0
    checked: int = 0  # assertions re-checked in all

    def observe(self, seconds: float, checked: int) -> None:
        self.counts[bisect_left(BUCKETS, seconds)] += 1
        self.total += seconds
        self.checked += checked

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> list[tuple[str, int]]:
        """Prometheus buckets: (upper bound, observations at or below it), +Inf last."""
        out: list[tuple[str, int]] = []
        running = 0
        for bound, n in zip((*map(str, BUCKETS), "+Inf"), self.counts, strict=True):
            running += n
            out.append((bound, running))
        return out
