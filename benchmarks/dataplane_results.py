"""What the data-plane benchmark measures into, shared by the measuring side
(`benchmarks.dataplane`) and the report (`benchmarks.dataplane_report`): the cases, the plan
of a run, the two paths measured, and `Results` (with its JSON form and the statistics the
report reads). Pure: no I/O."""

from __future__ import annotations

import dataclasses
import math
import statistics
from dataclasses import dataclass, field
from typing import Any

from benchmarks import dataplane_policy as policy
from benchmarks.dataplane_policy import SERVER_A, SERVER_B, Vm

PATHS: dict[str, Vm] = {"same-host": SERVER_A, "cross-host": SERVER_B}


@dataclass(frozen=True, slots=True)
class Case:
    kind: str  # a0 | a1 | b | c | c-legacy | d
    rules: int = 0

    @property
    def key(self) -> str:
        return f"{self.kind}-{self.rules}" if self.rules else self.kind

    @property
    def tag(self) -> str:
        """Short name used in namespace names."""
        short = {"c-legacy": "cl"}.get(self.kind, self.kind)
        return f"{short}{self.rules}" if self.rules else short


@dataclass(frozen=True, slots=True)
class Plan:
    hyperwall: tuple[int, ...] = (10, 1_000, 10_000, 100_000)
    linear: tuple[int, ...] = (10, 1_000, 10_000, 100_000)
    legacy: tuple[int, ...] = (10_000,)
    appliance: tuple[int, ...] = (10_000, 100_000)
    rounds: int = 3
    iperf_seconds: int = 3  # iperf3 takes whole seconds
    rr_seconds: float = 2.0
    crr_seconds: float = 2.0
    scratch_rules: int = 120_000
    scratch_runs: int = 3  # from scratch, each in a fresh namespace: the median is reported
    changes: int = 3  # label changes in each direction, per size
    edits: int = 3  # rule edits there and back, per size
    per_policy: int = policy.PER_POLICY
    client_cpu: int = 1  # request/response and connection rate: client and server
    server_cpu: int = 1  #   on the same vCPU (KERNEL_FACTS: pin to see the firewall's cost)
    iperf_client_cpu: int = 0  # throughput: client and server on different vCPUs
    profile: bool = True
    # Paired phase: each case right after (or before) its baseline, many short samples, for
    # the ratios the targets are judged on (the rounds' 3 samples move +-15% on this machine).
    pairs: int = 40  # connection rate against a1: b at the largest size and at 10,000, c at
    minor_pairs: int = 10  # 10,000 (the targets); the other hyperwall sizes
    pair_seconds: float = 0.5
    throughput_pairs: int = 20  # throughput against a0: a1, b smallest and largest
    throughput_pair_seconds: int = 1

    def cases(self) -> list[Case]:
        return [
            Case("a0"),
            Case("a1"),
            *(Case("b", n) for n in self.hyperwall),
            *(Case("c", n) for n in self.linear),
            *(Case("c-legacy", n) for n in self.legacy),
            *(Case("d", n) for n in self.appliance),
        ]


@dataclass
class Results:
    plan: Plan
    machine: dict[str, str]
    command: str = ""
    started: str = ""
    seconds: float = 0.0
    load_end: str = ""
    # case key -> path -> metric -> samples (one per round)
    samples: dict[str, dict[str, dict[str, list[float]]]] = field(default_factory=dict)
    # case key -> path -> [ratio to a1 per round] for connection rate (paired in a round)
    errors: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    probes: dict[str, dict[str, str]] = field(default_factory=dict)
    loads: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    compile: dict[int, dict[str, float]] = field(default_factory=dict)
    shapes: dict[int, dict[str, int]] = field(default_factory=dict)
    changes: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    edits: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    scratch: dict[str, Any] = field(default_factory=dict)
    profiles: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    # metric -> case key -> path -> [[case value, baseline value], ...] (the paired phase)
    paired: dict[str, dict[str, dict[str, list[list[float]]]]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Results:
        """Results written by `to_json` (to render the report again without measuring)."""
        plan_raw: dict[str, Any] = {
            k: tuple(v) if isinstance(v, list) else v for k, v in raw["plan"].items()
        }
        out = cls(Plan(**plan_raw), raw["machine"])
        out.command = raw.get("command", "benchmarks/dataplane")
        for name in ("started", "seconds", "load_end", "samples", "errors", "probes", "loads"):
            setattr(out, name, raw[name])
        for name in ("compile", "shapes", "changes", "edits"):
            setattr(out, name, {int(k): v for k, v in raw[name].items()})
        out.scratch, out.profiles = raw["scratch"], raw["profiles"]
        out.paired = raw.get("paired", {})
        return out

    def paired_ratio(self, case: str, path: str, metric: str) -> float | None:
        """Median of case/baseline over the paired phase's pairs."""
        pairs = self.paired.get(metric, {}).get(case, {}).get(path, [])
        ratios = [x / y for x, y in pairs if y and not math.isnan(x + y)]
        return statistics.median(ratios) if ratios else None

    def paired_spread(self, case: str, path: str, metric: str) -> tuple[float, float] | None:
        """The quartiles of case/baseline over the pairs (how far one pair can be trusted)."""
        pairs = self.paired.get(metric, {}).get(case, {}).get(path, [])
        ratios = sorted(x / y for x, y in pairs if y and not math.isnan(x + y))
        if len(ratios) < 4:
            return None
        q = statistics.quantiles(ratios, n=4)
        return q[0], q[2]

    def values(self, case: str, path: str, metric: str) -> list[float]:
        return [
            v for v in self.samples.get(case, {}).get(path, {}).get(metric, []) if not math.isnan(v)
        ]

    def median(self, case: str, path: str, metric: str) -> float | None:
        found = self.values(case, path, metric)
        return statistics.median(found) if found else None

    def ratio(self, case: str, base: str, path: str, metric: str) -> float | None:
        """Median over rounds of case/base measured in the same round (paired)."""
        a = self.samples.get(case, {}).get(path, {}).get(metric, [])
        b = self.samples.get(base, {}).get(path, {}).get(metric, [])
        pairs = [x / y for x, y in zip(a, b, strict=False) if y and not math.isnan(x + y)]
        return statistics.median(pairs) if pairs else None
