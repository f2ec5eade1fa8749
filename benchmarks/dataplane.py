"""Benchmark of the data plane: `benchmarks/dataplane [--quick]`.

Hyperwall's nftables program against no firewall, a conntrack-only floor, a linear
iptables chain and a hairpinned firewall appliance, VM to VM in network namespaces
(`benchmarks.dataplane_topology`), with the same per-port rules in every case
(`benchmarks.dataplane_policy`). Cases, each in its own copy of the topology so that they
are loaded once and interleaved round-robin:

- a0: no firewall;          a1: conntrack only (established accept, everything else accept);
- b:  hyperwall (documents -> build_catalog -> FleetCompiler -> NftBackend on both hosts);
- c:  the rules as one linear iptables-nft FORWARD chain (c-legacy: iptables-legacy);
- d:  no firewall on the hosts; host A routes every flow of its VMs through an appliance
      namespace whose nftables table holds the rules as elements of one concatenated set.

Per case and round, same-host (client -> server-a) and cross-host (client -> server-b):
TCP throughput (iperf3, one stream), request/response latency over one connection and new
connections per second (`dataplane_tools/hwb_client.c` against `hwb_server.c`); and a probe
to a port no rule admits (a firewall must drop it). Then the control path on the hyperwall
hosts: full program load, one label change, one rule edit, and a host with 120,000 rules
programmed from scratch. Results go to `docs/benchmarks.md` (section
`## Data plane (benchmarks/dataplane)`) and `docs/benchmarks-dataplane.png`.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import dataclasses
import datetime
import json
import math
import os
import platform
import pstats
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks import dataplane_policy as policy
from benchmarks import dataplane_topology as topo
from benchmarks.dataplane_policy import CLIENT, SERVER_A, Vm
from benchmarks.dataplane_report import render_section, write_plot
from benchmarks.dataplane_results import PATHS, Case, Plan, Results
from benchmarks.results_file import write_section
from hyperwall.compiler import delta
from hyperwall.compiler.fleet import FleetCompiler
from hyperwall.compiler.program import Endpoint, HostProgram, LookupRule
from hyperwall.dataplane.netns import inside
from hyperwall.dataplane.nft import plan as planner
from hyperwall.dataplane.nft.backend import NftBackend
from hyperwall.dataplane.nft.json_text import encode
from hyperwall.dataplane.nft.kernel import NftKernel
from hyperwall.dataplane.nft.render import Options, render_program
from hyperwall.dataplane.nft.table import TableState, policy_chain_name
from hyperwall.policy.catalog import build_catalog
from hyperwall.policy.errors import Source
from hyperwall.policy.model import Catalog

REPO = Path(__file__).resolve().parent.parent
TOOLS_SRC = Path(__file__).resolve().parent / "dataplane_tools"
DEFAULT_OUTPUT = REPO / "docs" / "benchmarks.md"
DEFAULT_PLOT = REPO / "docs" / "benchmarks-dataplane.png"
METRICS = ("conn_per_s", "gbit_per_s", "rtt_p50_us", "rtt_p99_us")
SERVER_LIFETIME = 3600  # seconds; the echo servers exit by themselves after this

Log = Callable[[str], None]


def _ifname(ep: Endpoint) -> str:
    return policy.vm_ifname(ep.mac)


OPTIONS = Options(vm_prefix="hwb-v", ifname_of=_ifname)


# -- what to run -----------------------------------------------------------------------


FULL = Plan()
QUICK = Plan(
    hyperwall=(10, 100),
    linear=(10, 100),
    legacy=(100,),
    appliance=(100,),
    rounds=1,
    iperf_seconds=1,
    rr_seconds=1.0,
    crr_seconds=1.0,
    scratch_rules=1_200,
    scratch_runs=1,
    changes=1,
    edits=1,
    per_policy=50,
    profile=False,
    pairs=1,
    minor_pairs=1,
    pair_seconds=0.5,
    throughput_pairs=1,
    throughput_pair_seconds=1,
)
SMOKE = dataclasses.replace(
    QUICK,
    hyperwall=(10,),
    linear=(10,),
    legacy=(),
    appliance=(10,),
    rr_seconds=0.5,
    crr_seconds=0.5,
    scratch_rules=120,
    per_policy=100,
)


def _cpus(plan: Plan) -> Plan:
    """Fall back to CPU 0 for every process on a one-CPU machine."""
    if len(os.sched_getaffinity(0)) >= 2:
        return plan
    return dataclasses.replace(plan, client_cpu=0, server_cpu=0, iperf_client_cpu=0)


# -- tools -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Tools:
    client: str
    server: str


def build_tools(out: Path) -> Tools:
    """Compile the C tools into `out` with gcc -O2 (the wrapper script does the same)."""
    out.mkdir(parents=True, exist_ok=True)
    for name in ("hwb_client", "hwb_server"):
        topo.run(
            ["gcc", "-O2", "-Wall", "-Wextra", "-o", str(out / name), str(TOOLS_SRC / f"{name}.c")]
        )
    return tools_in(out)


def tools_in(directory: Path) -> Tools:
    tools = Tools(str(directory / "hwb_client"), str(directory / "hwb_server"))
    for path in (tools.client, tools.server):
        if not os.access(path, os.X_OK):
            raise FileNotFoundError(f"{path}: not built (see benchmarks/dataplane)")
    return tools


# -- timing the kernel transactions ------------------------------------------------------


class TimedClient(NftKernel):
    """An NftKernel that records each transaction's wall time and the kernel's CPU time."""

    def __init__(self) -> None:
        super().__init__()
        self.wall: list[float] = []
        self.kernel: list[float] = []

    @contextlib.contextmanager
    def _timed(self) -> Iterator[None]:
        start, sys_start = time.perf_counter(), _sys_time()
        try:
            yield
        finally:
            self.wall.append(time.perf_counter() - start)
            self.kernel.append(_sys_time() - sys_start)

    def run(self, commands: list[dict[str, Any]]) -> None:
        with self._timed():
            super().run(commands)

    def add_elements(self, sets: Sequence[tuple[str, Sequence[bytes]]]) -> None:
        """The netlink bulk load of a fresh table's big sets, timed as a transaction."""
        with self._timed():
            super().add_elements(sets)


def _sys_time() -> float:
    return resource.getrusage(resource.RUSAGE_THREAD).ru_stime


def client_in(ns: str) -> TimedClient:
    with inside(ns):
        return TimedClient()


@dataclass
class Applied:
    """One NftBackend.apply, with the transaction's share."""

    seconds: float
    transaction: float
    kernel: float
    mode: str
    commands: int

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def timed_apply(backend: NftBackend, client: TimedClient, program: HostProgram) -> Applied:
    before = len(client.wall)
    start = time.perf_counter()
    result = backend.apply(program)
    seconds = time.perf_counter() - start
    return Applied(
        seconds,
        sum(client.wall[before:]),
        sum(client.kernel[before:]),
        result.mode,
        result.commands,
    )


# -- traffic ---------------------------------------------------------------------------


def _json_line(text: str) -> dict[str, Any]:
    for line in reversed(text.strip().splitlines()):
        if line.startswith("{"):
            found: dict[str, Any] = json.loads(line)
            return found
    raise ValueError(f"no JSON in output: {text[:200]!r}")


def run_client(
    tools: Tools, inst: topo.Instance, mode: str, dst: str, port: int, amount: float, cpu: int
) -> dict[str, Any]:
    arg = str(int(amount)) if mode == "probe" else f"{amount:g}"
    cmd = ["taskset", "-c", str(cpu), tools.client, mode, dst, str(port), arg]
    timeout = 30 if mode == "probe" else amount + 30
    return _json_line(topo.run(cmd, ns=inst.vm_ns(CLIENT), timeout=timeout).stdout)


def run_iperf(inst: topo.Instance, dst: str, seconds: int, cpu: int) -> float:
    cmd = ["taskset", "-c", str(cpu), "iperf3", "-c", dst, "-p", str(policy.IPERF_PORT)]
    cmd += ["-t", str(max(1, seconds)), "-J", "--connect-timeout", "3000"]
    done = topo.run(cmd, ns=inst.vm_ns(CLIENT), timeout=seconds + 30, check=False)
    report = json.loads(done.stdout) if done.stdout.strip().startswith("{") else {}
    if done.returncode != 0 or "error" in report:
        raise topo.CommandFailed(f"iperf3: {report.get('error') or done.stderr.strip()}")
    return float(report["end"]["sum_received"]["bits_per_second"]) / 1e9


def measure_path(tools: Tools, plan: Plan, inst: topo.Instance, server: Vm) -> dict[str, Any]:
    """Throughput, request/response and connection rate from the client to `server`.

    A tool that fails is recorded as an error (`error_*`) and the benchmark goes on.
    """
    out: dict[str, Any] = {}
    failures = (topo.CommandFailed, ValueError, KeyError, subprocess.TimeoutExpired)
    try:
        out["gbit_per_s"] = run_iperf(inst, server.ip, plan.iperf_seconds, plan.iperf_client_cpu)
    except failures as exc:
        out["error_iperf"] = str(exc)
    try:
        rr = run_client(
            tools, inst, "rr", server.ip, policy.RR_PORT, plan.rr_seconds, plan.client_cpu
        )
        if rr.get("transactions"):
            out["rtt_p50_us"] = rr["rtt_p50_us"]
            out["rtt_p99_us"] = rr["rtt_p99_us"]
        out["rr_errors"] = rr.get("errors", 0)
    except failures as exc:
        out["error_rr"] = str(exc)
    try:
        crr = run_client(
            tools, inst, "crr", server.ip, policy.CRR_PORT, plan.crr_seconds, plan.client_cpu
        )
        if crr.get("connections"):
            out["conn_per_s"] = crr["per_second"]
        out["crr_errors"] = crr.get("errors", 0)
    except failures as exc:
        out["error_crr"] = str(exc)
    return out


# -- the cases -------------------------------------------------------------------------


@dataclass
class Compiled:
    """One rule count compiled: the catalog, a warm compiler and both hosts' programs."""

    rules: int
    validate: float
    compile: float
    compiler: FleetCompiler
    programs: dict[str, HostProgram]
    catalog: Catalog


def validated(rules: int, per_policy: int) -> tuple[Catalog, float]:
    """The fleet's documents validated by `build_catalog`, and how long that took."""
    docs = policy.documents(rules, per_policy)
    start = time.perf_counter()
    catalog = build_catalog((d, Source("dataplane.yaml", i + 1)) for i, d in enumerate(docs))
    return catalog, time.perf_counter() - start


def compile_rules(rules: int, per_policy: int) -> Compiled:
    catalog, validate = validated(rules, per_policy)
    start = time.perf_counter()
    compiler = FleetCompiler(catalog.config, catalog.workloads.values())
    programs = {h: compiler.host_program(h) for h in (policy.HOST_A, policy.HOST_B)}
    return Compiled(rules, validate, time.perf_counter() - start, compiler, programs, catalog)


def program_shape(program: HostProgram, server: Vm = SERVER_A) -> dict[str, int]:
    """How long the server's ingress path is in the kernel: chains, nft rules, elements."""
    ep = next(e for e in program.endpoints.values() if e.mac == server.mac)
    state = render_program(program, OPTIONS)
    chains = [name for tier in ep.ingress for name in tier]
    items = [i for c in chains for i in program.chains[c].items]
    blocks = [i.block for i in items if isinstance(i, LookupRule)]
    return {
        "policy_chains": len(chains),
        "chain_items": len(items),
        "nft_rules": sum(len(state.chains[policy_chain_name(c)].rules) for c in chains),
        "block_sets": len(blocks),
        "block_elements": sum(len(program.block_sets[b].elements) for b in blocks),
        "largest_block": max((len(program.block_sets[b].elements) for b in blocks), default=0),
        "table_sets": len(state.sets),
        "table_chains": len(state.chains),
    }


@dataclass
class Hyperwall:
    """A hyperwall case's state kept for the control-path measurements on host A."""

    compiled: Compiled
    backend: NftBackend
    client: TimedClient


def load_case(
    case: Case,
    inst: topo.Instance,
    compiled: dict[int, Compiled],
    plan: Plan,
    log: Log,
) -> tuple[list[dict[str, Any]], Hyperwall | None]:
    """Program the case's firewall into its instance; returns each load's timings."""
    loads: list[dict[str, Any]] = []
    kept: Hyperwall | None = None
    if case.kind == "a1":
        for ns in (inst.host_a, inst.host_b):
            start = time.perf_counter()
            topo.nft_load(ns, policy.conntrack_only_ruleset())
            loads.append({"host": ns, "seconds": time.perf_counter() - start})
    elif case.kind == "b":
        comp = compiled[case.rules]
        for host, ns in ((policy.HOST_A, inst.host_a), (policy.HOST_B, inst.host_b)):
            client = client_in(ns)
            backend = NftBackend(client, OPTIONS)
            applied = timed_apply(backend, client, comp.programs[host])
            loads.append({"host": ns, **applied.as_dict()})
            if host == policy.HOST_A:
                kept = Hyperwall(comp, backend, client)
    elif case.kind in ("c", "c-legacy"):
        restore = "iptables-restore" if case.kind == "c" else "iptables-legacy-restore"
        text = policy.iptables_restore(case.rules, per_policy=plan.per_policy)
        for ns in (inst.host_a, inst.host_b):
            start = time.perf_counter()
            topo.run([restore], ns=ns, stdin=text, timeout=900)
            loads.append({"host": ns, "seconds": time.perf_counter() - start})
    elif case.kind == "d":
        start = time.perf_counter()
        topo.nft_load(inst.firewall, policy.appliance_ruleset(case.rules, plan.per_policy), 900)
        loads.append({"host": inst.firewall, "seconds": time.perf_counter() - start})
    for load in loads:
        log(f"  {case.key}: loaded {load['host']} in {load['seconds']:.2f} s")
    return loads, kept


# -- control path ----------------------------------------------------------------------


def timed_change(
    hw: Hyperwall, change: Callable[[FleetCompiler], None], what: str
) -> dict[str, Any]:
    """One change on a warm compiler and a warm backend: compile, then apply to the kernel."""
    compiler = hw.compiled.compiler
    old = hw.backend.program
    assert old is not None
    start = time.perf_counter()
    change(compiler)
    program = compiler.host_program(policy.HOST_A)
    compiled = time.perf_counter() - start
    applied = timed_apply(hw.backend, hw.client, program)
    d = delta.diff(old, program)
    return {
        "what": what,
        "compile": compiled,
        "apply": applied.seconds,
        "transaction": applied.transaction,
        "kernel": applied.kernel,
        "total": compiled + applied.seconds,
        "mode": applied.mode,
        "commands": applied.commands,
        "delta": d.size(),
    }


def label_changes(hw: Hyperwall, count: int, log: Log) -> list[dict[str, Any]]:
    """The roamer's label moves its address into group `partners`, then out, `count` times."""
    out: list[dict[str, Any]] = []
    catalog = hw.compiled.catalog
    for _ in range(count):
        for into in (True, False):
            moved = policy.roamer_moved(catalog, into)

            def relabel(c: FleetCompiler, w: Any = moved) -> None:
                c.set_workload(w)

            sample = timed_change(hw, relabel, "in" if into else "out")
            out.append(sample)
            log(
                f"  label change ({sample['what']}) at {hw.compiled.rules:,} rules: "
                f"{_ms(sample['total'])} (compile {_ms(sample['compile'])}, "
                f"kernel transaction {_ms(sample['transaction'])}, delta {sample['delta']})"
            )
    return out


def rule_edits(hw: Hyperwall, count: int, plan: Plan, log: Log) -> list[dict[str, Any]]:
    """One rule of the first policy (the middle one) changes its port, and back."""
    sizes = policy.policy_sizes(hw.compiled.rules, plan.per_policy)
    index = sizes[0] // 2 if sizes[0] > 1 else 0
    original = policy.FIRST_PORT + index
    out: list[dict[str, Any]] = []
    for k in range(count):
        for port in (30_000 + k, original):
            config = policy.rule_edited(hw.compiled.compiler.config, 0, index, port)

            def edit(c: FleetCompiler, cfg: Any = config) -> None:
                c.set_config(cfg)

            sample = timed_change(hw, edit, f"tcp/{port}")
            out.append(sample)
            log(
                f"  rule edit (-> tcp/{port}) at {hw.compiled.rules:,} rules: "
                f"{_ms(sample['total'])} (compile {_ms(sample['compile'])}, "
                f"kernel transaction {_ms(sample['transaction'])}, delta {sample['delta']})"
            )
    return out


def from_scratch(
    rules: int, per_policy: int, log: Log, runs: int = 1
) -> tuple[dict[str, Any], Catalog]:
    """A host with `rules` rules: validate, then `runs` times compile (fresh compiler) and
    load an empty table in a fresh namespace; the medians of the runs."""
    catalog, validate = validated(rules, per_policy)
    ns = f"{topo.PREFIX}scratch-ha"
    samples: list[dict[str, Any]] = []
    program: HostProgram | None = None
    for _ in range(max(1, runs)):
        topo.run(["ip", "netns", "add", ns])
        try:
            client = client_in(ns)
            backend = NftBackend(client, OPTIONS)
            start = time.perf_counter()
            compiler = FleetCompiler(catalog.config, catalog.workloads.values())
            program = compiler.host_program(policy.HOST_A)
            compile_s = time.perf_counter() - start
            applied = timed_apply(backend, client, program)
        finally:
            topo.run(["ip", "netns", "del", ns], check=False)
        samples.append(
            {
                "compile": compile_s,
                "apply": applied.seconds,
                "transaction": applied.transaction,
                "kernel": applied.kernel,
                "commands": applied.commands,
                "total": compile_s + applied.seconds,
            }
        )
        log(
            f"{rules:,} rules from scratch: compile {_s(compile_s)} + apply "
            f"{_s(applied.seconds)} (kernel transaction {_s(applied.transaction)}) = "
            f"{_s(compile_s + applied.seconds)}; validation {_s(validate)}"
        )
        time.sleep(1)  # let the kernel free the namespace before the next load
    assert program is not None
    med = {k: statistics.median(x[k] for x in samples) for k in samples[0]}
    totals = [x["total"] for x in samples]
    out = {
        "rules": rules,
        "validate": validate,
        **med,
        "runs": totals,
        "total_with_validation": validate + med["total"],
        "shape": program_shape(program),
    }
    return out, catalog


def _profile(work: Callable[[], object], top: int) -> list[dict[str, Any]]:
    """cProfile of `work`: the `top` functions by own time."""
    prof = cProfile.Profile()
    prof.enable()
    work()
    prof.disable()
    raw: dict[tuple[str, int, str], tuple[Any, ...]] = pstats.Stats(prof).stats  # type: ignore[attr-defined]
    rows = []
    for (filename, line, name), (_, calls, tottime, cumtime, _) in raw.items():
        where = re.sub(r".*/(hyperwall|benchmarks|nftables|lib/python[^/]+)/", r"\1/", filename)
        label = f"{name} ({where}:{line})" if filename != "~" else name
        rows.append({"function": label, "calls": calls, "own": tottime, "cum": cumtime})
    return sorted(rows, key=lambda r: r["own"], reverse=True)[:top]


def profile_scratch(catalog: Catalog, top: int = 12) -> list[dict[str, Any]]:
    """cProfile of the Python side of a from-scratch host: compile, render, plan, encode."""

    def work() -> None:
        compiler = FleetCompiler(catalog.config, catalog.workloads.values())
        program = compiler.host_program(policy.HOST_A)
        encode(planner.plan(TableState(), render_program(program, OPTIONS)))

    return _profile(work, top)


def profile_changes(hw: Hyperwall, plan: Plan, top: int = 12) -> dict[str, list[dict[str, Any]]]:
    """cProfile of a label change (in, then out) and a rule edit (there and back), each pair
    run whole: compile, apply, kernel transaction."""
    catalog = hw.compiled.catalog
    sizes = policy.policy_sizes(hw.compiled.rules, plan.per_policy)
    index = sizes[0] // 2 if sizes[0] > 1 else 0

    def relabel() -> None:
        for into in (True, False):
            hw.compiled.compiler.set_workload(policy.roamer_moved(catalog, into))
            hw.backend.apply(hw.compiled.compiler.host_program(policy.HOST_A))

    def edit() -> None:
        for port in (40_000, policy.FIRST_PORT + index):
            config = policy.rule_edited(hw.compiled.compiler.config, 0, index, port)
            hw.compiled.compiler.set_config(config)
            hw.backend.apply(hw.compiled.compiler.host_program(policy.HOST_A))

    return {
        f"label change in + out at {hw.compiled.rules:,} rules": _profile(relabel, top),
        f"rule edit there + back at {hw.compiled.rules:,} rules": _profile(edit, top),
    }


# -- the benchmark ---------------------------------------------------------------------


def machine() -> dict[str, str]:
    cpu = platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.partition(":")[2].strip()
                break

    def version(cmd: list[str]) -> str:
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=False)
        except OSError:
            return "unknown"
        lines = (done.stdout or done.stderr).strip().splitlines()
        return lines[0] if lines else "unknown"

    return {
        "nproc": str(len(os.sched_getaffinity(0))),
        "cpu": cpu,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "nft": version(["nft", "--version"]),
        "iptables": version(["iptables", "--version"]),
        "iperf3": version(["iperf3", "--version"]),
        "git": version(["git", "-C", str(REPO), "describe", "--always", "--dirty"]),
        "load": " ".join(Path("/proc/loadavg").read_text().split()[:3]),
    }


def rounds_order(cases: Sequence[Case], r: int) -> list[Case]:
    """Round-robin: each round starts one case later, so no case always follows another."""
    k = r % len(cases)
    return [*cases[k:], *cases[:k]]


def run_benchmark(plan: Plan, tools: Tools, log: Log, command: str = "") -> Results:
    """Everything, inside `topo.lab()` (locked, leftovers removed, cleaned up on any exit)."""
    plan = _cpus(plan)
    results = Results(plan, machine(), command)
    results.started = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    began = time.perf_counter()
    cases = plan.cases()
    with topo.lab():
        compiled: dict[int, Compiled] = {}
        for n in plan.hyperwall:
            comp = compiled[n] = compile_rules(n, plan.per_policy)
            results.compile[n] = {"validate": comp.validate, "compile": comp.compile}
            results.shapes[n] = program_shape(comp.programs[policy.HOST_A])
            log(
                f"compiled {n:,} rules: validation {_s(comp.validate)}, compile "
                f"{_s(comp.compile)}; server path {results.shapes[n]}"
            )
        results.scratch, scratch = from_scratch(
            plan.scratch_rules, plan.per_policy, log, plan.scratch_runs
        )
        if plan.profile:
            name = f"compile, render and plan of {plan.scratch_rules:,} rules from scratch"
            results.profiles[name] = profile_scratch(scratch)
        del scratch
        time.sleep(1)  # let the kernel free the deleted namespace before the next loads
        instances: dict[str, topo.Instance] = {}
        kept: dict[int, Hyperwall] = {}
        for case in cases:
            inst = instances[case.key] = topo.Instance(case.tag, appliance=case.kind == "d")
            inst.build()
            loads, hw = load_case(case, inst, compiled, plan, log)
            results.loads[case.key] = loads
            if hw is not None:
                kept[case.rules] = hw
            inst.start_servers(
                tools.server,
                (policy.IPERF_PORT, policy.CRR_PORT, policy.RR_PORT),
                plan.server_cpu,
                SERVER_LIFETIME,
            )
        log(f"topology ready: {len(instances)} instances, {len(topo.namespaces())} namespaces")
        for case in cases:
            inst = instances[case.key]
            results.probes[case.key] = {
                path: run_client(tools, inst, "probe", vm.ip, policy.DENIED_PORT, 300, 0)["result"]
                for path, vm in PATHS.items()
            }
        log(f"probes of the denied port: {results.probes}")
        for r in range(plan.rounds):
            paths = list(PATHS.items())
            if r % 2:
                paths.reverse()
            for case in rounds_order(cases, r):
                inst = instances[case.key]
                for path, vm in paths:
                    inst.flush_conntrack()
                    got = measure_path(tools, plan, inst, vm)
                    per = results.samples.setdefault(case.key, {}).setdefault(path, {})
                    for metric in METRICS:
                        per.setdefault(metric, []).append(float(got.get(metric, math.nan)))
                    problems = [f"{k}={v}" for k, v in got.items() if k.startswith("error")]
                    problems += [f"{k}={v}" for k, v in got.items() if k.endswith("_errors") and v]
                    if problems:
                        results.errors.setdefault(case.key, {}).setdefault(path, []).extend(
                            problems
                        )
                    log(
                        f"round {r + 1}/{plan.rounds} {case.key:>14} {path:>10}: "
                        + ", ".join(_fmt_metric(m, got.get(m)) for m in METRICS)
                        + (f" [{'; '.join(problems)}]" if problems else "")
                    )
                inst.flush_conntrack()
        paired_phase(plan, tools, instances, results, log)
        for n, hw in sorted(kept.items()):
            results.changes[n] = label_changes(hw, plan.changes, log)
            results.edits[n] = rule_edits(hw, plan.edits, plan, log)
        if plan.profile and kept:
            results.profiles.update(profile_changes(kept[max(kept)], plan))
    results.seconds = time.perf_counter() - began
    results.load_end = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    return results


def paired_phase(
    plan: Plan, tools: Tools, instances: dict[str, topo.Instance], results: Results, log: Log
) -> None:
    """Each case measured right next to its baseline, alternating which goes first, many
    times: the ratio of a pair is far steadier than the ratio of two rounds' medians."""
    work: list[tuple[str, str, str, int]] = []  # metric, case, baseline, pairs
    main = {max(plan.hyperwall, default=0), 10_000}
    for n in plan.hyperwall:
        work.append(("conn_per_s", f"b-{n}", "a1", plan.pairs if n in main else plan.minor_pairs))
    if 10_000 in plan.linear:
        work.append(("conn_per_s", "c-10000", "a1", plan.pairs))
    if plan.hyperwall:
        work.append(("gbit_per_s", "a1", "a0", plan.throughput_pairs))
        for n in sorted({min(plan.hyperwall), max(plan.hyperwall)}):
            work.append(("gbit_per_s", f"b-{n}", "a0", plan.throughput_pairs))

    def sample(metric: str, key: str, vm: Vm) -> float:
        inst = instances[key]
        inst.flush_conntrack()
        try:
            if metric == "gbit_per_s":
                return run_iperf(inst, vm.ip, plan.throughput_pair_seconds, plan.iperf_client_cpu)
            got = run_client(
                tools, inst, "crr", vm.ip, policy.CRR_PORT, plan.pair_seconds, plan.client_cpu
            )
            return float(got.get("per_second", math.nan))
        except (topo.CommandFailed, ValueError, KeyError, subprocess.TimeoutExpired):
            return math.nan

    for metric, key, base, count in work:
        if key not in instances or base not in instances:
            continue
        for path, vm in PATHS.items():
            pairs = results.paired.setdefault(metric, {}).setdefault(key, {}).setdefault(path, [])
            for k in range(count):
                first, second = (key, base) if k % 2 else (base, key)
                got = {first: sample(metric, first, vm)}
                got[second] = sample(metric, second, vm)
                pairs.append([got[key], got[base]])
            ratio = results.paired_ratio(key, path, metric)
            log(f"paired {metric} {key} vs {base} {path}: median ratio {ratio}")


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def _s(seconds: float) -> str:
    return f"{seconds:.2f} s" if seconds >= 1 else _ms(seconds)


def _fmt_metric(metric: str, value: Any) -> str:
    if value is None:
        return f"{metric}=-"
    return f"{metric}={value:.1f}" if metric != "gbit_per_s" else f"{metric}={value:.2f}"


# -- command line ----------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="benchmarks/dataplane",
        description="Benchmark hyperwall's data plane against no firewall, conntrack only, "
        "linear iptables and a firewall appliance, in network namespaces (needs root).",
    )
    parser.add_argument("--quick", action="store_true", help="tiny rule counts, one round")
    parser.add_argument("--rounds", type=int, default=None, help="rounds over all cases")
    parser.add_argument("--tools", type=Path, default=None, help="directory of built C tools")
    parser.add_argument("--output", type=Path, default=None, help="results markdown file")
    parser.add_argument("--plot", type=Path, default=None, help="plot PNG file")
    parser.add_argument("--json", type=Path, default=None, help="also write raw results here")
    parser.add_argument("--no-write", action="store_true", help="only print the results")
    parser.add_argument(
        "--from-json", type=Path, default=None, help="render results saved with --json again"
    )
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    if args.rounds is not None:
        plan = dataclasses.replace(plan, rounds=max(1, args.rounds))
    if os.geteuid() != 0 and args.from_json is None:
        print("benchmarks/dataplane: needs root (network namespaces)", file=sys.stderr)
        return 2

    def log(message: str) -> None:
        stamp = time.strftime("%H:%M:%S")
        print(f"[dataplane {stamp}] {message}", file=sys.stderr, flush=True)

    if args.from_json is not None:
        results = Results.from_json(json.loads(args.from_json.read_text()))
        args.quick = results.plan.rounds == 1 and max(results.plan.hyperwall) < 100_000
    else:
        command = _command(argv if argv is not None else sys.argv[1:])
        with _tools(args.tools) as tools:
            results = run_benchmark(plan, tools, log, command)
    if args.json is not None:
        args.json.write_text(json.dumps(results.to_json(), indent=1, default=str))
    command = results.command or "benchmarks/dataplane"
    write = not args.no_write and (not args.quick or args.output is not None)
    output = args.output or DEFAULT_OUTPUT
    plot = args.plot or (output.parent / DEFAULT_PLOT.name)
    section = render_section(results, command, plot.name if write else None)
    print(section)
    if write:
        write_plot(results, plot)
        write_section(output, section)
        log(f"wrote {output} and {plot}")
    return 0


def _command(args: Sequence[str]) -> str:
    """The command line as a user types it (without the wrapper's plumbing options)."""
    shown: list[str] = []
    skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg in ("--tools", "--json"):
            skip = True
        elif not arg.startswith(("--tools=", "--json=")):
            shown.append(arg)
    return " ".join(["benchmarks/dataplane", *shown])


@contextlib.contextmanager
def _tools(directory: Path | None) -> Iterator[Tools]:
    if directory is not None:
        yield tools_in(directory)
        return
    build = Path(tempfile.mkdtemp(prefix="hwb-tools-"))
    try:
        yield build_tools(build)
    finally:
        shutil.rmtree(build, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
