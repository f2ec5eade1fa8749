"""Benchmark of the flow log: `benchmarks/flowlog [--quick]`.

What logging every new connection costs the connection rate, and what the pipeline
(kernel NFLOG -> `nflog.reader` -> `agent.flowlog` -> the flow log file) sustains. In
copies of the data-plane benchmark's topology (`benchmarks.dataplane_topology`: client and
server-a on host A, server-b on host B; namespaces `hwb-hwc-*`), each loaded with hyperwall
(`NftBackend`) from one small fleet: `client-out` lets the client send, `server-in` admits
the client's connections to the servers on the connection-rate port. Three variants:

- `off`: `server-in` not logged, no flow log running (the floor of this comparison);
- `logged`: `server-in` with `log: true` as rendered (the per-rule limit of
  `expr.LOG_RATE` per second: above it, the kernel counts and suppresses), the agent's
  flow log running on both hosts (`agent.flowlog.FlowLog`, one thread per host namespace in
  this process, writing to a temporary file);
- `every`: the same with the limit statements stripped from the transactions: every new
  connection is logged, read and written (the pipeline at the connection rate);
- `kernel`: `every`'s table with no flow log running: the kernel logs every connection and,
  with no listener bound to the group, drops the message (the kernel's share of `every`).

New connections per second (`hwb_client crr`, pinned) are measured in pairs `logged/off`
and `every/off`, back to back with the order alternating, same host and across hosts; the
ratio is the median of the pairs' ratios (target: logging costs < 10%, ratio > 0.90).
During `every` runs the process's CPU time (the flow log threads: the benchmark's own
thread only waits for the client) per record written gives the agent's CPU per record.
Then the pipeline alone: a UDP flood from the client to a port no rule admits (the tenant's
default drop, logged, no limit in `every`), for `flood_seconds`: packets that reached the
log rule (its kernel counter), records written, records/s and CPU per record; what the
socket could not hold is counted (`overruns`). Results go to `docs/benchmarks.md`, section
`## Flow log (benchmarks/flowlog)`.
"""

from __future__ import annotations

import datetime
import json
import resource
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks import dataplane as dp
from benchmarks import dataplane_policy as policy
from benchmarks import dataplane_topology as topo
from benchmarks.dataplane_policy import CLIENT, HOST_A, HOST_B, SERVER_A, SERVER_B
from benchmarks.paired import conn_rate, median_ratio, pairs_table, run_line
from benchmarks.section_cli import section_main
from hyperwall.agent.flow_sink import FlowSink
from hyperwall.agent.flowlog import FlowLog
from hyperwall.compiler.fleet import FleetCompiler
from hyperwall.compiler.program import HostProgram
from hyperwall.dataplane.netns import inside
from hyperwall.dataplane.nft.backend import NftBackend
from hyperwall.dataplane.nft.json_text import Raw
from hyperwall.dataplane.nft.log_counters import log_chains, read_log_counters
from hyperwall.policy.catalog import build_catalog
from hyperwall.policy.errors import Source

SECTION = "## Flow log (benchmarks/flowlog)"
PATHS = {"same-host": SERVER_A, "cross-host": SERVER_B}
VARIANTS = ("off", "logged", "every", "kernel")
FLOOD_PORT = 9
FLOOD = """
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
end, sent = time.monotonic() + float(sys.argv[3]), 0
while time.monotonic() < end:
    for _ in range(256):
        try:
            s.sendto(b"x", (sys.argv[1], int(sys.argv[2])))
            sent += 1
        except OSError:
            pass
print(sent)
"""


@dataclass(frozen=True)
class Plan:
    pairs: int = 12
    pair_seconds: float = 1.0
    flood_seconds: float = 5.0


FULL = Plan()
QUICK = Plan(pairs=2, pair_seconds=0.3, flood_seconds=1.0)


def documents(log: bool) -> list[dict[str, Any]]:
    def doc(kind: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
        meta = {"name": name, **({} if kind == "Tenant" else {"tenant": "t"})}
        return {"apiVersion": "hyperwall.io/v1", "kind": kind, "metadata": meta, "spec": spec}

    docs = [doc("Tenant", "t", {"defaultAction": "drop", "logDefault": log})]
    for vm in (CLIENT, SERVER_A, SERVER_B):
        interfaces = [{"name": "eth0", "mac": vm.mac, "ips": [vm.ip]}]
        docs.append(doc("Workload", vm.name, {"host": vm.host, "interfaces": interfaces}))
    out = {"name": "client-out", "action": "allow", "direction": "out"}
    docs.append(
        doc("Policy", "client-out", {"appliedTo": {"workload": CLIENT.name}, "rules": [out]})
    )
    rule = {
        "name": "server-in",
        "action": "allow",
        "direction": "in",
        "from": [{"workload": CLIENT.name}],
        "services": [f"tcp/{policy.CRR_PORT}"],
        "log": log,
    }
    docs.append(doc("Policy", "server-in", {"rules": [rule]}))
    return docs


def programs(log: bool) -> dict[str, HostProgram]:
    docs = documents(log)
    catalog = build_catalog((d, Source("flowlog.yaml", i + 1)) for i, d in enumerate(docs))
    compiler = FleetCompiler(catalog.config, catalog.workloads.values())
    return {h: compiler.host_program(h) for h in (HOST_A, HOST_B)}


class Unlimited(dp.TimedClient):
    """A kernel client that sends the table without the log rules' rate limits (`every`)."""

    def run(self, commands: list[dict[str, Any]]) -> None:
        super().run([_without_limit(c) for c in commands])


def _without_limit(command: dict[str, Any]) -> dict[str, Any]:
    (verb, body), *_ = command.items()
    rule = body.get("rule")
    if rule is not None and isinstance(rule.get("expr"), Raw):
        expr = [s for s in json.loads(rule["expr"].text) if "limit" not in s]
        return {verb: {"rule": {**rule, "expr": Raw(json.dumps(expr))}}}
    return command


@dataclass
class Case:
    inst: topo.Instance
    backends: dict[str, NftBackend] = field(default_factory=dict)
    clients: dict[str, dp.TimedClient] = field(default_factory=dict)
    flowlogs: dict[str, FlowLog] = field(default_factory=dict)

    def records(self) -> int:
        return sum(f.stats.records for f in self.flowlogs.values())


@dataclass
class Results:
    plan: Plan
    machine: dict[str, str]
    started: str = ""
    seconds: float = 0.0
    load_end: str = ""
    pairs: dict[str, dict[str, list[list[float]]]] = field(default_factory=dict)
    every: dict[str, float] = field(
        default_factory=lambda: {"records": 0, "cpu": 0.0, "seconds": 0.0}
    )
    flood: dict[str, float] = field(default_factory=dict)


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _settle(case: Case, quiet: float = 3.0, limit: float = 120.0) -> None:
    """Wait until the flow log threads have written what the kernel sent them: no new
    record for `quiet` seconds (a loaded machine may starve them for a while)."""
    end = time.monotonic() + limit
    last, since = case.records(), time.monotonic()
    while time.monotonic() < end and time.monotonic() - since < quiet:
        time.sleep(0.25)
        now = case.records()
        if now != last:
            last, since = now, time.monotonic()


def _build(variant: str, progs: dict[str, dict[str, HostProgram]], folder: Path) -> Case:
    case = Case(topo.Instance(f"hwc-{variant}"))
    case.inst.build()
    for host, ns in ((HOST_A, case.inst.host_a), (HOST_B, case.inst.host_b)):
        with inside(ns):
            client = Unlimited() if variant in ("every", "kernel") else dp.TimedClient()
        case.clients[host] = client
        backend = case.backends[host] = NftBackend(client, dp.OPTIONS)
        backend.apply(progs["off" if variant == "off" else "logged"][host])
        if variant in ("off", "kernel"):
            continue
        sink = FlowSink(folder / variant / host / "flows.jsonl")
        flowlog = FlowLog(host, _program_of(backend), dp.OPTIONS, sink.write)
        with inside(ns):  # the thread, its NFLOG socket and nft context live there
            flowlog.start()
        case.flowlogs[host] = flowlog
    return case


def _program_of(backend: NftBackend) -> Callable[[], HostProgram | None]:
    return lambda: backend.program


def _default_counters(case: Case) -> tuple[int, int]:
    """(packets that reached host A's logged-default rules, packets logged)."""
    backend = case.backends[HOST_A]
    assert backend.program is not None
    total = logged = 0
    for chain in log_chains(backend.program, "routed"):
        if not chain.startswith("d_"):
            continue
        listing = json.loads(case.clients[HOST_A].command(f"list chain inet hyperwall {chain}"))
        for (_, _), (t, lg) in read_log_counters(chain, listing).items():
            total, logged = total + t, logged + lg
    return total, logged


def run(plan: Plan, tools: dp.Tools, log: dp.Log) -> Results:
    results = Results(plan, dp.machine())
    results.started = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    began = time.perf_counter()
    progs = {"off": programs(False), "logged": programs(True)}
    with topo.lab(), tempfile.TemporaryDirectory(prefix="hwc-flowlog-") as tmp:
        folder = Path(tmp)
        cases: dict[str, Case] = {}
        try:
            for variant in VARIANTS:
                cases[variant] = _build(variant, progs, folder)
                cases[variant].inst.start_servers(
                    tools.server,
                    (policy.IPERF_PORT, policy.CRR_PORT, policy.RR_PORT),
                    1,
                    dp.SERVER_LIFETIME,
                )
                log(f"{variant}: loaded")
            for variant in ("logged", "every", "kernel"):
                for path, server in PATHS.items():
                    pairs = results.pairs.setdefault(f"{variant} / off", {}).setdefault(path, [])
                    for k in range(plan.pairs):
                        order = (variant, "off") if k % 2 else ("off", variant)
                        got: dict[str, float] = {}
                        for name in order:
                            case = cases[name]
                            records, cpu = case.records(), _cpu()
                            got[name] = conn_rate(tools, case.inst, server, plan.pair_seconds)
                            if name == "every":
                                _settle(case)
                                results.every["records"] += case.records() - records
                                results.every["cpu"] += _cpu() - cpu
                                results.every["seconds"] += plan.pair_seconds
                        pairs.append([got[variant], got["off"]])
                    log(f"{variant} / off {path}: median ratio {median_ratio(pairs):.3f}")
            every = cases["every"]
            before_total, before_logged = _default_counters(every)
            records, cpu = every.records(), _cpu()
            sent = topo.run(
                ["python3", "-c", FLOOD, SERVER_A.ip, str(FLOOD_PORT), str(plan.flood_seconds)],
                ns=every.inst.vm_ns(CLIENT),
                timeout=plan.flood_seconds + 60,
            ).stdout.strip()
            _settle(every)
            total, logged = _default_counters(every)
            reader = every.flowlogs[HOST_A]
            results.flood = {
                "sent": float(sent or 0),
                "reached": total - before_total,
                "logged": logged - before_logged,
                "records": every.records() - records,
                "cpu": _cpu() - cpu,
                "seconds": plan.flood_seconds,
                "overruns": reader.stats.overruns,
            }
            log(f"flood: {results.flood}")
        finally:
            for case in cases.values():
                for flowlog in case.flowlogs.values():
                    flowlog.stop(timeout=2.0)
    results.seconds = time.perf_counter() - began
    results.load_end = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    return results


def render(results: Results, command: str) -> str:
    plan = results.plan
    every, flood = results.every, results.flood
    lines = [
        SECTION,
        "",
        run_line(results.machine, results.started, command, results.seconds, results.load_end),
        "",
        "New connections per second (`hwb_client crr`, client and server pinned to one vCPU) "
        "with the admitting rule logged against not logged (`off`), "
        f"{plan.pairs} pairs of {plan.pair_seconds} s per path; `logged`: as rendered, at "
        "most 200 records/s per rule, the rest counted as suppressed; `every`: no limit, "
        "every connection logged, read and written; `kernel`: `every`'s table with no flow "
        "log running (the kernel's share: it logs, finds no listener, drops the message). "
        "Target: ratio > 0.90.",
        "",
        *pairs_table(results.pairs, "logged side", "off"),
    ]
    per_record = every["cpu"] / every["records"] * 1e6 if every["records"] else float("nan")
    rate = every["records"] / every["seconds"] if every["seconds"] else float("nan")
    lines += [
        "",
        f"During the `every` runs the flow log wrote {int(every['records']):,} records "
        f"({rate:,.0f} records/s over those runs) at {per_record:.1f} us of CPU per record "
        "(this process's CPU time: the flow log threads; the client's is not counted).",
    ]
    if flood:
        secs = flood["seconds"]
        cpu = flood["cpu"] / flood["records"] * 1e6 if flood["records"] else float("nan")
        kept = flood["records"] / flood["reached"] if flood["reached"] else float("nan")
        lines += [
            "",
            f"The pipeline alone, a {secs:g} s UDP flood to a default drop (logged, no limit):",
            "",
            "| sent | reached the log rule | records written | written/s | kept | CPU/record | "
            "socket overruns |",
            "|---|---|---|---|---|---|---|",
            f"| {flood['sent']:,.0f} | {flood['reached']:,.0f} | {flood['records']:,.0f} | "
            f"{flood['records'] / secs:,.0f} | {kept:.1%} | {cpu:.1f} us | "
            f"{flood['overruns']:,.0f} |",
        ]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    return section_main("benchmarks/flowlog", __doc__, (FULL, QUICK), run, render, argv)


if __name__ == "__main__":
    sys.exit(main())
