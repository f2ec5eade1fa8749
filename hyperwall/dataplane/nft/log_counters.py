"""What the kernel's log rate limit suppressed, per rule, from the two counters around each
log statement (`expr.log`: the first counts every packet, the second those logged). Pure.

Counterpart of `expr.log`, `policy_chains.log_chain` and `base_chains` (which render the
log rules) and `agent.flowlog` (which lists `log_chains` every period and reports what
`SuppressionTracker.update` returns as summary records). A chain rendered again starts its
counters at 0: a reading lower than the last one is a restart, and all of it is new. So a
count is never negative, and never counted twice while the agent runs; a restarted agent
starts from the kernel's counters as they are (what was suppressed before it started is
not reported again).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hyperwall.compiler.program import HostProgram, MatchRule
from hyperwall.dataplane.nft.base_chains import render_dispatch
from hyperwall.dataplane.nft.plan import BRIDGE
from hyperwall.dataplane.nft.policy_chains import chain_direction, log_chain, passing_chains

ROUTED_STATIC = ("spoofed", "misdirected", "forward", "to_vm")
BRIDGE_STATIC = (BRIDGE + "pre", BRIDGE + "out", BRIDGE + "local")
# (chain, log prefix) -> (packets that reached the log rule, packets logged)
Reading = dict[tuple[str, str], tuple[int, int]]


def log_chains(program: HostProgram, mode: str) -> list[str]:
    """The chains of `program`'s table that hold log rules (bridge ones named `br:*`)."""
    names = list(BRIDGE_STATIC if mode == "bridge" else ROUTED_STATIC)
    for chain in program.chains.values():
        direction = chain_direction(chain.name)
        for item in chain.items:
            if isinstance(item, MatchRule) and item.log:
                names.append(log_chain(item.rule, item.action, direction).name)
    passing = (
        passing_chains(program)
        if any(e.log_default for e in program.endpoints.values())
        else frozenset()
    )
    for ep in program.endpoints.values():
        if ep.log_default:
            for direction in ("in", "out"):
                names.append(render_dispatch(ep, direction, passing)[0].name)
    return sorted(set(names))


def read_log_counters(chain: str, listing: Mapping[str, Any]) -> Reading:
    """The log rules' counters in one chain's listing (`nft -j list chain ...`)."""
    out: Reading = {}
    for entry in listing.get("nftables", []):
        rule = entry.get("rule") if isinstance(entry, dict) else None
        if not isinstance(rule, dict):
            continue
        prefix = None
        counters: list[int] = []
        for statement in rule.get("expr", []):
            if not isinstance(statement, dict):
                continue
            if isinstance(statement.get("log"), dict):
                prefix = statement["log"].get("prefix")
            counter = statement.get("counter")
            if isinstance(counter, dict):
                counters.append(int(counter.get("packets", 0)))
        if isinstance(prefix, str) and len(counters) == 2:
            out[(chain, prefix)] = (counters[0], counters[1])
    return out


class SuppressionTracker:
    """The last reading of every log rule, to turn readings into what was suppressed since.
    The first reading only sets the start (an agent that just started does not report
    again what the kernel counted before it: its predecessor did)."""

    def __init__(self) -> None:
        self._last: Reading | None = None

    def update(self, reading: Reading) -> dict[str, int]:
        """Log prefix -> packets suppressed since the last reading (only those above 0).
        Rules gone from `reading` are forgotten: memory follows the table."""
        last, self._last = self._last, dict(reading)
        if last is None:
            return {}
        out: dict[str, int] = {}
        for key, (total, logged) in reading.items():
            before_total, before_logged = last.get(key, (0, 0))
            if total < before_total or logged < before_logged:  # rendered again: restarted
                before_total = before_logged = 0
            suppressed = (total - before_total) - (logged - before_logged)
            if suppressed > 0:
                out[key[1]] = out.get(key[1], 0) + suppressed
        return out
