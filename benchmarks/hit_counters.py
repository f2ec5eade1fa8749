"""Benchmark of what hit counters and connection marks cost the data plane:
`benchmarks/hit_counters [--quick]`.

Hit counters put a counter on every block set element (`SetSpec.counter`: each folded rule's
hits) and every allow decision sets the connection's mark (`nft.ct_mark`); both run on the
first packet of each new connection. This rerun of the relevant part of
`benchmarks/dataplane` (same topology, rules, tools and pinning) loads each rule count
twice, in copies of the topology side by side:

- `on-N`: the table as hyperwall renders it now;
- `off-N`: the same table without them (the element counters' set statement and the
  `ct mark set` statements stripped from the transactions: the table as it was before);
- `a1`: conntrack only, the floor.

and measures, in pairs run back to back with the order alternating, new connections per
second through each (`hwb_client crr`, same host and across hosts): the ratio on/off per
rule count says whether the lookup cost moved, and on at 10 rules against on at the largest
count whether it stays flat. Then, on each variant at the largest count, one rule edit and
back (`benchmarks.dataplane.rule_edits`): the commands sent stay those of the change; and
the agent's counter reading (`agent.hits.HitReader`: list the table, attribute each
counter) at each count. Results go to `docs/benchmarks.md`, section
`## Hit counters (benchmarks/hit_counters)`.
"""

from __future__ import annotations

import datetime
import json
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from benchmarks import dataplane as dp
from benchmarks import dataplane_policy as policy
from benchmarks import dataplane_topology as topo
from benchmarks.dataplane_policy import SERVER_A, SERVER_B
from benchmarks.paired import conn_rate, median_ratio, pairs_table, run_line
from benchmarks.section_cli import section_main
from hyperwall.agent.hits import HitReader, HitTracker
from hyperwall.dataplane.netns import inside
from hyperwall.dataplane.nft.backend import NftBackend
from hyperwall.dataplane.nft.hits import Attribution, attribution, read_hits
from hyperwall.dataplane.nft.json_text import Raw

PATHS = {"same-host": SERVER_A, "cross-host": SERVER_B}
SECTION = "## Hit counters (benchmarks/hit_counters)"


@dataclass(frozen=True)
class Plan:
    sizes: tuple[int, ...] = (10, 10_000, 100_000)
    pairs: int = 30
    pair_seconds: float = 0.5
    edits: int = 4
    readings: int = 3


FULL = Plan()
QUICK = Plan(sizes=(10, 1_000), pairs=2, pair_seconds=0.3, edits=1, readings=1)


class Unmarked(dp.TimedClient):
    """A kernel client that sends the table without element counters and connection marks:
    the `off` variant, otherwise the very same transactions."""

    def run(self, commands: list[dict[str, Any]]) -> None:
        super().run([_strip(c) for c in commands])


def _strip(command: dict[str, Any]) -> dict[str, Any]:
    (verb, body), *_ = command.items()
    if "set" in body and "stmt" in body["set"]:
        return {verb: {"set": {k: v for k, v in body["set"].items() if k != "stmt"}}}
    rule = body.get("rule")
    if rule is not None and isinstance(rule.get("expr"), Raw):
        expr = [s for s in json.loads(rule["expr"].text) if not _is_mark(s)]
        return {verb: {"rule": {**rule, "expr": Raw(json.dumps(expr))}}}
    return command


def _is_mark(statement: dict[str, Any]) -> bool:
    mangle = statement.get("mangle")
    return isinstance(mangle, dict) and mangle.get("key") == {"ct": {"key": "mark"}}


@dataclass
class Results:
    plan: Plan
    machine: dict[str, str]
    started: str = ""
    seconds: float = 0.0
    load_end: str = ""
    # "on-N"/"off-N"/"a1" -> path -> samples (conn/s), and the pairs behind the ratios
    pairs: dict[str, dict[str, list[list[float]]]] = field(default_factory=dict)
    loads: dict[str, float] = field(default_factory=dict)
    edits: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    # (wall, CPU) seconds of readings: when nothing moved, and when every set is listed
    readings: dict[int, list[tuple[float, float]]] = field(default_factory=dict)
    full_readings: dict[int, list[tuple[float, float]]] = field(default_factory=dict)
    counted: dict[int, int] = field(default_factory=dict)  # rules with a counter, per size


def run(plan: Plan, tools: dp.Tools, log: dp.Log) -> Results:
    results = Results(plan, dp.machine())
    results.started = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    began = time.perf_counter()
    with topo.lab():
        instances: dict[str, topo.Instance] = {}
        kept: dict[str, dp.Hyperwall] = {}
        floor = instances["a1"] = topo.Instance("hwe-a1")
        floor.build()
        for ns in (floor.host_a, floor.host_b):
            topo.nft_load(ns, policy.conntrack_only_ruleset())
        for n in plan.sizes:
            comp = dp.compile_rules(n, policy.PER_POLICY)
            log(f"compiled {n:,} rules in {comp.compile:.1f} s")
            for variant in ("on", "off"):
                key = f"{variant}-{n}"
                inst = instances[key] = topo.Instance(f"hwe-{variant}{n}")
                inst.build()
                for host, ns in ((policy.HOST_A, inst.host_a), (policy.HOST_B, inst.host_b)):
                    with inside(ns):
                        client = Unmarked() if variant == "off" else dp.TimedClient()
                    backend = NftBackend(client, dp.OPTIONS)
                    applied = dp.timed_apply(backend, client, comp.programs[host])
                    results.loads[f"{key} {host}"] = applied.seconds
                    if host == policy.HOST_A:
                        kept[key] = dp.Hyperwall(comp, backend, client)
                log(f"  {key}: loaded")
        # rule edits before any traffic, the variants taking turns at going first
        largest = plan.sizes[-1]
        for k in range(plan.edits):
            for variant in ("off", "on") if k % 2 == 0 else ("on", "off"):
                hw = kept[f"{variant}-{largest}"]
                results.edits.setdefault(variant, []).extend(dp.rule_edits(hw, 1, dp.FULL, log))
        for n in plan.sizes:  # after the edits: a listing fills the context's cache
            on = kept[f"on-{n}"]
            with inside(instances[f"on-{n}"].host_a):  # a context of its own, as the agent's
                own = dp.TimedClient()
            reader = HitReader(on.backend, HitTracker(), own)
            reader.read(time.time())  # the attribution, once per program
            assert on.backend.program is not None and on.backend.state is not None
            found = attribution(on.backend.program, on.backend.state, on.backend.local)
            for _ in range(plan.readings):
                results.readings.setdefault(n, []).append(_timed(partial(reader.read, 0.0)))
                full = partial(_read_everything, own, found)
                results.full_readings.setdefault(n, []).append(_timed(full))
            results.counted[n] = len(found.keys())
            log(
                f"  counters read at {n:,} rules: {_wall_cpu(results.readings[n])}; every set"
                f" listed: {_wall_cpu(results.full_readings[n])}"
            )
        for inst in instances.values():
            inst.start_servers(
                tools.server,
                (policy.IPERF_PORT, policy.CRR_PORT, policy.RR_PORT),
                1,
                dp.SERVER_LIFETIME,
            )
        work = [(f"on-{n}", f"off-{n}") for n in plan.sizes]
        work.append((f"on-{plan.sizes[-1]}", f"on-{plan.sizes[0]}"))
        work.append((f"on-{plan.sizes[0]}", "a1"))
        for key, base in work:
            for path, vm in PATHS.items():
                pairs = results.pairs.setdefault(f"{key} / {base}", {}).setdefault(path, [])
                for k in range(plan.pairs):
                    first, second = (key, base) if k % 2 else (base, key)
                    got = {first: conn_rate(tools, instances[first], vm, plan.pair_seconds)}
                    got[second] = conn_rate(tools, instances[second], vm, plan.pair_seconds)
                    pairs.append([got[key], got[base]])
                log(f"{key} / {base} {path}: median ratio {median_ratio(pairs):.3f}")
    results.seconds = time.perf_counter() - began
    results.load_end = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    return results


def _wall_cpu(samples: list[tuple[float, float]]) -> str:
    if not samples:
        return "-"
    wall = statistics.median(w for w, _ in samples)
    cpu = statistics.median(c for _, c in samples)
    return f"{wall * 1000:,.0f} / {cpu * 1000:,.0f} ms"


def _read_everything(client: dp.TimedClient, found: Attribution) -> None:
    """A reading that lists the whole table, every element counter attributed."""
    read_hits(client.list_table() or {}, found)


def _timed(work: Callable[[], object]) -> tuple[float, float]:
    """Wall and CPU seconds (this process: libnftables runs in it) of `work`."""
    start, cpu = time.perf_counter(), time.process_time()
    work()
    return time.perf_counter() - start, time.process_time() - cpu


def render(results: Results, command: str) -> str:
    plan, m = results.plan, results.machine
    lines = [
        SECTION,
        "",
        run_line(m, results.started, command, results.seconds, results.load_end),
        "",
        "What is measured: new connections per second (`hwb_client crr`, client and server "
        "pinned to one vCPU) through hyperwall's table as rendered now (`on`: a counter per "
        "block set element, `ct mark set` on every allow) and through the same table without "
        "them (`off`), "
        f"{plan.pairs} pairs of {plan.pair_seconds} s per path; the ratio is the median of "
        "the pairs' ratios.",
        "",
        *pairs_table(results.pairs, "first", "second"),
    ]
    lines += [
        "",
        "Reading the counters on host A, median of "
        f"{plan.readings}: the agent's `HitReader.read` when no block set's lookup counter "
        "moved since the last reading (the table's rules alone, a netlink dump), "
        "and when every set moved (the whole table listed, every element counter "
        "attributed: the most a reading costs):",
        "",
        "| rules | rule keys with counters | nothing moved: wall / CPU "
        "| every set moved: wall / CPU |",
        "|---|---|---|---|",
    ]
    for n, times in results.readings.items():
        full = results.full_readings.get(n, [])
        lines.append(
            f"| {n:,} | {results.counted.get(n, 0):,} | {_wall_cpu(times)} | {_wall_cpu(full)} |"
        )
    lines += [
        "",
        f"A rule edit and back at {plan.sizes[-1]:,} rules (`benchmarks.dataplane.rule_edits`"
        "), on each variant, before any traffic, the variants taking turns at going first: "
        "commands sent and kernel transaction time.",
        "",
        "| variant | edit | commands | delta | transaction |",
        "|---|---|---|---|---|",
    ]
    for variant, samples in results.edits.items():
        for s in samples:
            lines.append(
                f"| {variant} | {s['what']} | {s['commands']} | {s['delta']} | "
                f"{s['transaction'] * 1000:.1f} ms |"
            )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    return section_main("benchmarks/hit_counters", __doc__, (FULL, QUICK), run, render, argv)


if __name__ == "__main__":
    sys.exit(main())
