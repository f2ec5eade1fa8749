"""Live migration of real guests: qemu's downtime against the gap the firewall adds
(`benchmarks/migration --libvirt`; root, libvirtd and qemu).

A `--vm libvirt` lab of `tests/lab/guests/` (2 hosts, 4 TCG guests, one libvirtd per host):
lb-1 moves back and forth between hv1 and hv2 by a real `virsh migrate --live` (libvirt's
migrateToURI3, peer to peer over the lab's underlay: `lab.guest_migrate`). Every move
carries a TCP echo stream from the outside into the guest (the report's own stream,
`lab.gapmeter`, through the firewall); per move: qemu's downtime (libvirt's completed job
statistics), the stream's gap (the longest time without an echo), whether it broke.

Series, in the same run: agents with the state handover; agents `--no-state` (strict TCP:
the stream breaks); a second lab without agents, `--no-state` (no firewall, no strict
TCP: what a live migration costs by itself). What the firewall adds = the gap with agents
minus the gap without, and per move the gap minus qemu's downtime.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from hyperwall.lab import Lab
from hyperwall.lab.guest_migrate import GuestMigrationReport

ROOT = Path(__file__).resolve().parents[1]
GUESTS = ROOT / "tests" / "lab" / "guests"
VM, HOMES = "acme/lb-1", ("hv1", "hv2")


@dataclass(frozen=True)
class GuestMove:
    state: bool
    agents: bool
    downtime: float | None  # ms, qemu's
    gap: float | None  # ms, the TCP stream's; None: broken or not resumed
    broken: bool
    enforced_first: bool | None  # the destination's agent enforced the taps before resume
    errors: tuple[str, ...] = ()


def _p(values: Sequence[float]) -> str:
    if not values:
        return "-"
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return f"{statistics.median(ordered):,.0f} / {p99:,.0f} ms"


def _median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def rows(series: dict[str, list[GuestMove]]) -> list[str]:
    out = []
    for label, moves in series.items():
        if not moves:
            continue
        held = sum(m.gap is not None for m in moves)
        downtime = [m.downtime for m in moves if m.downtime is not None]
        gaps = [m.gap for m in moves if m.gap is not None]
        over = [m.gap - m.downtime for m in moves if m.gap is not None and m.downtime is not None]
        first = sum(bool(m.enforced_first) for m in moves)
        enforced = f"{first}/{len(moves)}" if moves[0].agents else "-"
        out.append(
            f"| {label} | {len(moves)} | {held}/{len(moves)} | {_p(downtime)} | {_p(gaps)}"
            f" | {_p(over)} | {enforced} |"
        )
    return out


def _over(moves: Sequence[GuestMove]) -> float | None:
    """The median of each move's stream gap minus qemu's downtime of that move."""
    return _median(
        [m.gap - m.downtime for m in moves if m.gap is not None and m.downtime is not None]
    )


def section(series: dict[str, list[GuestMove]], load: float) -> str:
    with_state = series.get("agents, with state", [])
    bare = series.get("no agents, `--no-state` (no firewall)", [])
    over, over0 = _over(with_state), _over(bare)
    gap = _median([m.gap for m in with_state if m.gap is not None])
    base = _median([m.gap for m in bare if m.gap is not None])
    down = _median([m.downtime for m in with_state if m.downtime is not None])
    down0 = _median([m.downtime for m in bare if m.downtime is not None])
    if over is not None and over0 is not None:
        added = (
            f"the firewall adds **{over - over0:+,.0f} ms** to the gap beyond qemu's own"
            f" downtime (each move's stream gap minus its downtime, median: {over:,.0f} ms"
            f" with agents and state, {over0:,.0f} ms without agents)"
        )
    else:
        added = "the firewall's addition could not be measured (no resumed stream in a series)"
    raw = (
        f". The raw medians: stream gap {gap:,.0f} ms with agents against {base:,.0f} ms"
        f" without, qemu's downtime {down:,.0f} ms against {down0:,.0f} ms (downtime varies"
        " from move to move by more than the firewall's part, so the gap is compared with"
        " each move's own downtime)"
        if None not in (gap, base, down, down0)
        else ""
    )
    errors = sorted({e for moves in series.values() for m in moves for e in m.errors})
    lines = [
        "## Live migration under libvirt (benchmarks/migration --libvirt)",
        "",
        "A `--vm libvirt` lab of `tests/lab/guests/` (TCG guests, one libvirtd per host):",
        "lb-1 moves back and forth between hv1 and hv2 by a real live migration (libvirt's",
        "migrateToURI3, peer to peer over the underlay). Each move carries a TCP echo stream",
        "from the outside (198.51.100.7) into the guest through the firewall; its gap is the",
        "longest time without an echo. qemu's downtime: libvirt's completed job statistics.",
        "Gap over downtime: per move, the stream's gap minus qemu's downtime. Enforced first:",
        "moves where the destination's agent had the guest's taps in its dispatch maps",
        "before the guest resumed there.",
        f"Load average (1 min) when the run started: {load:.2f} on 2 cores.",
        "",
        "| moves | n | stream survived | qemu downtime p50 / p99 | stream gap p50 / p99"
        " | gap over downtime p50 / p99 | enforced first |",
        "|---|---|---|---|---|---|---|",
        *rows(series),
        "",
        f"With the state handover, {added}{raw}. Without state the stream breaks",
        "(strict TCP: the destination has no entry for it and drops its segments as invalid).",
        "",
    ]
    if errors:
        lines += ["Errors reported by the moves:", "", *[f"- {e}" for e in errors], ""]
    return "\n".join(lines)


def _move(lab: Lab, state: bool, agents: bool) -> GuestMove:
    here = lab.catalog().workloads[VM].host
    to = HOMES[1] if here == HOMES[0] else HOMES[0]
    report = lab.migrate(VM, to, state=state)
    assert isinstance(report, GuestMigrationReport)
    return GuestMove(
        state=state,
        agents=agents,
        downtime=report.downtime_ms,
        gap=None if report.broken else report.gap_ms,
        broken=bool(report.broken),
        enforced_first=report.enforced_before_resume,
        errors=report.errors,
    )


def run(name: str, moves: int) -> dict[str, list[GuestMove]]:
    """The three series (`moves` each), in two labs built and removed here."""
    series: dict[str, list[GuestMove]] = {}
    for agents in (True, False):
        lab = Lab(name if agents else name + "0")
        lab.down()
        try:
            lab.up([GUESTS], vm="libvirt", agents_enabled=agents)
            if agents:
                series["agents, with state"] = [_move(lab, True, True) for _ in range(moves)]
                print(f"  guests with state: {series['agents, with state']}", flush=True)
                series["agents, `--no-state` (strict TCP)"] = [
                    _move(lab, False, True) for _ in range(moves)
                ]
            else:
                series["no agents, `--no-state` (no firewall)"] = [
                    _move(lab, False, False) for _ in range(moves)
                ]
        finally:
            lab.down()
    return series
