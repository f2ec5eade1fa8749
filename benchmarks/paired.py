"""Paired connection-rate measurements of benchmarks that rerun part of
`benchmarks/dataplane`: one rate, the median ratio of pairs, and the lines of a section
that show them (`flowlog`; `hit_counters` measures the same way)."""

from __future__ import annotations

import statistics
from collections.abc import Mapping

from benchmarks import dataplane as dp
from benchmarks import dataplane_policy as policy
from benchmarks import dataplane_topology as topo


def conn_rate(tools: dp.Tools, inst: topo.Instance, vm: policy.Vm, seconds: float) -> float:
    """New connections per second to `vm` (`hwb_client crr`, pinned); NaN if it failed."""
    inst.flush_conntrack()
    try:
        got = dp.run_client(tools, inst, "crr", vm.ip, policy.CRR_PORT, seconds, 1)
        return float(got.get("per_second", float("nan")))
    except (topo.CommandFailed, ValueError, KeyError):
        return float("nan")


def median_ratio(pairs: list[list[float]]) -> float:
    """The median of the pairs' ratios (first / second), failed samples left out."""
    ratios = [a / b for a, b in pairs if a == a and b == b and b > 0]
    return statistics.median(ratios) if ratios else float("nan")


def run_line(
    machine: Mapping[str, str], started: str, command: str, seconds: float, load_end: str
) -> str:
    """The sentence that says when, with what and on what a section was measured."""
    m = machine
    return (
        f"Run {started} with `{command}` in {seconds / 60:.1f} min on "
        f"{m['nproc']} vCPU {m['cpu']}, kernel {m['kernel']}, {m['nft']}; load average "
        f"{m['load']} at the start, {load_end} at the end (a shared machine: the "
        "ratios come from pairs run back to back, order alternating)."
    )


def pairs_table(
    pairs: Mapping[str, Mapping[str, list[list[float]]]], first: str, second: str
) -> list[str]:
    """A table: pair, path, median ratio, median of each side's samples."""
    lines = [
        f"| pair | path | median ratio | median conn/s ({first}) | median conn/s ({second}) |",
        "|---|---|---|---|---|",
    ]
    for name, paths in pairs.items():
        for path, samples in paths.items():
            a = statistics.median([x for x, _ in samples]) if samples else float("nan")
            b = statistics.median([y for _, y in samples]) if samples else float("nan")
            lines.append(f"| {name} | {path} | {median_ratio(samples):.3f} | {a:,.0f} | {b:,.0f} |")
    return lines
