"""Benchmark of the compliance analyses on the synthetic fleet of `benchmarks/compile`:
`benchmarks/compliance [--quick]` (or `python -m benchmarks.compliance`).

The fleet (10,000 workloads, 1,000 groups, 10,000 rules; `benchmarks.synthetic`) gets 100
Assertion documents, validated with it by `build_catalog`: 40 tenant-isolation assertions
(nothing from one tenant's group reaches another tenant's group, on any service: these
hold and must be checked exhaustively), 30 taken from allow rules (the rule's `from` reaches
its `to` on its services: some hold, some do not, as other rules and the other end decide)
and 30 "no SSH from the internet into a group". Measured, wall-clock (`perf_counter`):

1. full verification: `check_assertions` of all 100 on a compiled fleet, `--repeat` times:
   the first run starts with the analysis caches empty (what `hyperwall verify` does), the
   later ones reuse them (what the manager's gate does, `analysis.view`); baseline in the
   same run: compiling the fleet (`FleetCompiler` construction);
2. the manager's gate on an apply of a label change: `gate.check_change(old, new, ...,
   known)` with the compiler advanced to the change and `known` the assertions the full
   verification found to hold (a touched one known to hold is re-checked on the changed
   addresses' cases, `analysis.delta`; the others whole); p50/p99/max over `--changes`
   label changes that move a workload between groups, after one full garbage collection
   (a long-running manager made its first long ago; its cost is reported). Then the same
   changes with every touched assertion checked whole (`touched_assertions` +
   `check_assertions`: the gate knowing nothing), on a second compiler warmed by one full
   verification (so that neither pass finds the other's caches). Baselines in the same
   run: the apply's own compile step (`set_workload` + `host_program` of the workload's
   host) and a full re-check of all 100;
3. the reachability matrix with `reach`: the first 100, 250, 500 groups, then every group
   (1,000 x 1,000), each size only if the time budget (`--reach-budget`) allows it at the
   growth measured so far (a skipped size is reported as such); wall-clock and this
   process's CPU time (the machine is shared);
4. lint (`analysis.lint`) of the whole fleet as `hyperwall lint` runs it (a fresh
   compiler, the findings counted per kind); on a fleet larger than `--quick`'s, that one
   too; wall-clock and CPU time. Baseline in the same run: one full verification (above).

Results are printed and written as the section `## Compliance (benchmarks/compliance)` of
`docs/benchmarks.md` (other sections are kept).
"""

from __future__ import annotations

import argparse
import datetime
import gc
import random
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, cast

from benchmarks.compile import label_changes, machine, raw_documents
from benchmarks.results_file import progress, publish
from benchmarks.synthetic import FULL, QUICK, FleetShape, generate
from hyperwall.analysis.assertions import check_assertions, touched_assertions
from hyperwall.analysis.lint import lint
from hyperwall.analysis.reach import group_sides, reach
from hyperwall.analysis.view import FleetView
from hyperwall.compiler.fleet import FleetCompiler
from hyperwall.compiler.fleet_programs import FleetPrograms
from hyperwall.manager.gate import check_change
from hyperwall.policy.catalog import build_catalog
from hyperwall.policy.model import Catalog, RuleDef, Workload

SECTION = "## Compliance (benchmarks/compliance)"
FULL_TARGET = 10.0  # seconds for 100 assertions, from the issue
INCREMENTAL_TARGET = 0.100  # p99 seconds added to an apply
Log = Callable[[str], None]


# -- the assertions ----------------------------------------------------------------------


def _assertion(name: str, tenant: str | None, expect: str, **spec: Any) -> dict[str, Any]:
    meta = {"name": name, **({"tenant": tenant} if tenant else {})}
    return {
        "apiVersion": "hyperwall.io/v1",
        "kind": "Assertion",
        "metadata": meta,
        "spec": {"expect": expect, **spec},
    }


def _peers(rule: RuleDef) -> tuple[list[dict[str, str]], list[dict[str, str]]] | None:
    """A rule's peers as an assertion of its tenant writes them (groups and CIDRs only)."""
    sides = []
    for peers in (rule.sources, rule.destinations):
        if not peers or any(p.kind not in ("group", "cidr") for p in peers):
            return None
        sides.append(
            [
                {"group": p.value.rpartition("/")[2]} if p.kind == "group" else {"cidr": p.value}
                for p in peers
            ]
        )
    return sides[0], sides[1]


def make_assertions(catalog: Catalog, rng: random.Random) -> list[dict[str, Any]]:
    """The 100 assertions of the module docstring, drawn deterministically."""
    out: list[dict[str, Any]] = []
    by_tenant: dict[str, list[str]] = {}
    for g in catalog.config.groups.values():
        if g.tenant is not None and g.selector is not None:
            by_tenant.setdefault(g.tenant, []).append(g.key)
    tenants = sorted(by_tenant)
    for i in range(40):
        a, b = rng.sample(tenants, 2)
        src, dst = rng.choice(sorted(by_tenant[a])), rng.choice(sorted(by_tenant[b]))
        out.append(
            _assertion(
                f"isolation-{i}", None, "deny", to=[{"group": dst}], **{"from": [{"group": src}]}
            )
        )
    rules = [
        (p.tenant, r)
        for p in catalog.config.policies.values()
        if p.tenant is not None
        for r in p.rules
        if r.action == "allow" and r.services and _peers(r) is not None
    ]
    for i, (tenant, rule) in enumerate(rng.sample(rules, min(30, len(rules)))):
        peers = _peers(rule)
        assert peers is not None
        services = sorted({str(s) for s in rule.services or ()})
        out.append(
            _assertion(
                f"rule-{i}", tenant, "allow", to=peers[1], services=services, **{"from": peers[0]}
            )
        )
    for i in range(30):
        tenant = rng.choice(tenants)
        dst = rng.choice(sorted(by_tenant[tenant])).rpartition("/")[2]
        out.append(
            _assertion(
                f"no-ssh-{i}",
                tenant,
                "deny",
                to=[{"group": dst}],
                services=["tcp/22"],
                **{"from": [{"cidr": "203.0.113.0/24"}]},
            )
        )
    return out


# -- measuring ---------------------------------------------------------------------------


def _timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def _p(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


@dataclass
class Results:
    shape: FleetShape
    started: str
    machine: dict[str, str]
    catalog_seconds: float = 0.0
    compile_seconds: float = 0.0
    full: list[float] = field(default_factory=list)
    held: int = 0
    failed: int = 0
    gate: list[float] = field(default_factory=list)  # gate.check_change, knowing what held
    incremental: list[float] = field(default_factory=list)  # every touched one checked whole
    gate_cpu: list[float] = field(default_factory=list)  # the same, this process's CPU time
    incremental_cpu: list[float] = field(default_factory=list)
    touched: list[int] = field(default_factory=list)
    apply_compile: list[float] = field(default_factory=list)
    gc_seconds: float = 0.0  # a full garbage collection before the label changes (longest)
    full_after_change: float = 0.0
    # groups, wall seconds, CPU seconds of this process, reaching cells
    reach: list[tuple[int, float, float, int]] = field(default_factory=list)
    reach_skipped: list[int] = field(default_factory=list)  # sizes the budget did not allow
    # workloads, wall seconds, CPU seconds of this process, findings per kind
    lint: list[tuple[int, float, float, dict[str, int]]] = field(default_factory=list)
    wall_seconds: float = 0.0

    def problems(self) -> list[str]:
        out = []
        if statistics.median(self.full) >= FULL_TARGET:
            out.append(f"full verification {statistics.median(self.full):.1f} s >= {FULL_TARGET} s")
        if self.gate and _p(self.gate, 0.99) >= INCREMENTAL_TARGET:
            out.append(f"gate p99 {_p(self.gate, 0.99) * 1000:.0f} ms")
        return out


def run_benchmark(
    shape: FleetShape,
    repeat: int,
    changes: int,
    reach_groups: int | None,
    log: Log,
    reach_budget: float = 900.0,
) -> Results:
    began = time.perf_counter()
    results = Results(
        shape, datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"), machine()
    )
    rng = random.Random(shape.seed)
    log(f"generating and validating the fleet ({shape.workloads} workloads)")
    fleet = generate(shape).documents
    plain = build_catalog(raw_documents(fleet))
    documents = [*fleet, *make_assertions(plain, rng)]
    results.catalog_seconds, catalog = _timed(lambda: build_catalog(raw_documents(documents)))
    log("compiling the fleet (baseline)")
    results.compile_seconds, compiler = _timed(
        lambda: FleetCompiler(catalog.config, catalog.workloads.values())
    )
    for i in range(repeat):
        seconds, found = _timed(lambda: check_assertions(catalog, None, compiler))
        results.full.append(seconds)
        log(f"full verification {i + 1}/{repeat}: {seconds:.2f} s")
    results.held = sum(r.holds for r in found)
    results.failed = len(found) - results.held
    moves = label_changes(catalog.workloads, list(catalog.config.groups.values()), changes, rng)
    known = {r.name: catalog.config.assertions[r.name] for r in found if r.holds}
    log(f"{changes} label changes through the gate ({len(known)} assertions known to hold)")
    _collect(results)
    for new, _ in moves:
        changed = _with(catalog, new)
        seconds, _ = _timed(lambda: _advance(compiler, new))  # noqa: B023
        results.apply_compile.append(seconds)
        cpu = time.process_time()
        seconds, gated = _timed(
            lambda: check_change(catalog, changed, _advanced(compiler), known)  # noqa: B023
        )
        results.gate_cpu.append(time.process_time() - cpu)
        results.gate.append(seconds)
        results.touched.append(len(gated.checked))
        compiler.set_workload(catalog.workloads[new.key])
    log("the same changes, every touched assertion checked whole (fresh compiler, warmed)")
    compiler = FleetCompiler(catalog.config, catalog.workloads.values())
    check_assertions(catalog, None, compiler)
    _collect(results)
    for new, _ in moves:
        changed = _with(catalog, new)
        _advance(compiler, new)

        def whole() -> None:
            check_assertions(changed, touched_assertions(catalog, changed), compiler)  # noqa: B023

        cpu = time.process_time()
        seconds, _ = _timed(whole)
        results.incremental_cpu.append(time.process_time() - cpu)
        results.incremental.append(seconds)
        if new is moves[0][0]:
            results.full_after_change, _ = _timed(lambda: check_assertions(changed, None, compiler))  # noqa: B023
        compiler.set_workload(catalog.workloads[new.key])
    view = FleetView(catalog, compiler)
    groups = group_sides(view, None)
    sizes = sorted({n for n in (100, 250, 500, len(groups)) if n <= len(groups)})
    if reach_groups is not None:
        sizes = [min(reach_groups, len(groups))]
    deadline = time.perf_counter() + reach_budget
    for n in sizes:
        last = results.reach[-1] if results.reach else None
        # the matrix grows about with the square of its side: skip what cannot finish
        guess = 0.0 if last is None else last[1] * (n / last[0]) ** 2
        if time.perf_counter() + guess > deadline:
            results.reach_skipped.append(n)
            continue
        log(f"reach matrix of {n} groups (guess {guess:.0f} s)")
        cpu = time.process_time()
        seconds, matrix = _timed(lambda: reach(view, groups[:n], groups[:n]))  # noqa: B023
        results.reach.append((n, seconds, time.process_time() - cpu, len(matrix.cells)))
    _measure_lint(results, catalog, log)
    results.wall_seconds = time.perf_counter() - began
    results.machine["load_end"] = machine()["load"]
    return results


def _measure_lint(results: Results, catalog: Catalog, log: Log) -> None:
    """Lint of the whole fleet from a fresh compiler, as `hyperwall lint` runs; then of the
    `--quick` fleet when this one is larger."""
    fleets: list[tuple[int, Callable[[], Catalog]]] = [(results.shape.workloads, lambda: catalog)]
    if results.shape.workloads > QUICK.workloads:
        quick = replace(QUICK, seed=results.shape.seed)
        fleets.append(
            (quick.workloads, lambda: build_catalog(raw_documents(generate(quick).documents)))
        )
    for workloads, make in fleets:
        linted = make()
        log(f"lint of the {workloads:,}-workload fleet")
        cpu = time.process_time()
        seconds, found = _timed(lambda: lint(linted))  # noqa: B023
        cpu = time.process_time() - cpu
        kinds: dict[str, int] = {}
        for f in found:
            kinds[f.kind] = kinds.get(f.kind, 0) + 1
        results.lint.append((workloads, seconds, cpu, kinds))


def _with(catalog: Catalog, new: Workload) -> Catalog:
    workloads = dict(catalog.workloads)
    workloads[new.key] = new
    return replace(catalog, workloads=workloads)


def _advance(compiler: FleetCompiler, new: Workload) -> None:
    """The apply's own compile step: the compiler and the workload's host program."""
    compiler.set_workload(new)
    compiler.host_program(new.host)


def _collect(results: Results) -> None:
    """One full garbage collection before timed changes, its cost reported: a long-running
    manager made its first long ago (its fleet watch collects and freezes the fleet after
    loading, `manager/fleetwatch.py`); this process has not, and that first one, which
    walks every object of the fleet, would land inside one of the timed checks."""
    seconds, _ = _timed(gc.collect)
    results.gc_seconds = max(results.gc_seconds, seconds)


def _advanced(compiler: FleetCompiler) -> FleetPrograms:
    return cast(FleetPrograms, _Advanced(compiler))


class _Advanced:
    """Stands in for the fleet watch's `FleetPrograms` in `gate.check_change`: its trial
    compiler is the benchmark's, already advanced to the change (the apply's compile step,
    timed apart)."""

    def __init__(self, compiler: FleetCompiler) -> None:
        self.compiler = compiler

    @contextmanager
    def trial(self, catalog: Catalog) -> Iterator[FleetCompiler]:
        yield self.compiler


# -- the report --------------------------------------------------------------------------


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:,.1f} ms" if seconds < 10 else f"{seconds:,.1f} s"


def _spread(values: Sequence[float], cpu: Sequence[float]) -> str:
    return (
        f"p50 {_ms(_p(values, 0.5))}, p99 {_ms(_p(values, 0.99))}, max {_ms(max(values))} "
        f"(CPU time of this process: p50 {_ms(_p(cpu, 0.5))}, p99 {_ms(_p(cpu, 0.99))})"
    )


def render_section(results: Results, command: str) -> str:
    mach, shape = results.machine, results.shape
    full = statistics.median(results.full)
    verdict = "met" if full < FULL_TARGET else "**missed**"
    gate_line = inc_line = "no label change found"
    if results.gate:
        p99 = _p(results.gate, 0.99)
        gate_verdict = "met" if p99 < INCREMENTAL_TARGET else "**missed**"
        gate_line = (
            f"{_spread(results.gate, results.gate_cpu)} over {len(results.gate)} label changes, "
            f"{statistics.mean(results.touched):.1f} assertions touched on average "
            f"(target p99 < {_ms(INCREMENTAL_TARGET)}: {gate_verdict})"
        )
    if results.incremental:
        inc_line = _spread(results.incremental, results.incremental_cpu)
    rows = [
        ("| measurement | result | baseline in the same run |", ""),
        ("|---|---|---|", ""),
        (
            f"| full verification, {results.held + results.failed} assertions "
            f"(median of {len(results.full)}) | "
            f"first run (the analysis caches empty, as `hyperwall verify` runs): "
            f"{_ms(results.full[0])} ({'met' if results.full[0] < FULL_TARGET else '**missed**'}); "
            f"median {_ms(full)} (caches warm, as the manager's gate runs; {verdict}); "
            f"{results.held} hold, {results.failed} fail; target < {FULL_TARGET:.0f} s | "
            f"compiling the whole fleet: {_ms(results.compile_seconds)} |",
            "",
        ),
        (
            f"| the gate after a label change (`gate.check_change` with the {results.held} "
            f"assertions known to hold: those touched re-checked on the changed addresses' "
            f"cases, `analysis.delta`, the others whole) | {gate_line} | "
            f"the apply's own compile step (`set_workload` + `host_program`): p50 "
            f"{_ms(_p(results.apply_compile, 0.5) if results.apply_compile else 0)}, p99 "
            f"{_ms(_p(results.apply_compile, 0.99) if results.apply_compile else 0)}; "
            f"one full garbage collection of the process "
            f"before the changes (not timed in them): {_ms(results.gc_seconds)} |",
            "",
        ),
        (
            f"| the same changes, every touched assertion checked whole (`touched_assertions` "
            f"+ `check_assertions`: the gate knowing nothing, e.g. its first check after a "
            f"start; on a second compiler, warmed by one full verification) | {inc_line} | "
            f"a full re-check of all of them after the first change: "
            f"{_ms(results.full_after_change)} |",
            "",
        ),
        *(
            (
                f"| reach matrix, {n:,} x {n:,} groups | {_ms(seconds)} ({_ms(cpu)} CPU; "
                f"{cells:,} reaching cells) | one full verification above: {_ms(full)} |",
                "",
            )
            for n, seconds, cpu, cells in results.reach
        ),
        *(
            (
                f"| reach matrix, {n:,} x {n:,} groups | not run: the time budget "
                "(`--reach-budget`) would not allow it at the measured growth | |",
                "",
            )
            for n in results.reach_skipped
        ),
        *(
            (
                f"| lint of the whole fleet of {workloads:,} workloads (`hyperwall lint`: a "
                f"fresh compiler, every enforcement point over the whole packet space) | "
                f"{_ms(seconds)} ({_ms(cpu)} CPU): "
                f"{', '.join(f'{n:,} {kind}' for kind, n in sorted(kinds.items())) or 'no finding'}"
                f" | one full verification above: {_ms(full)} |",
                "",
            )
            for workloads, seconds, cpu, kinds in results.lint
        ),
    ]
    return "\n".join(
        [
            SECTION,
            "",
            f"Run {results.started} with `{command}` (git `{mach['git']}`), "
            f"{results.wall_seconds:.0f} s in all. Machine: {mach['nproc']} CPUs ({mach['cpu']}), "
            f"{mach['python']}; load average {mach['load']} at the start, "
            f"{mach.get('load_end', '?')} at the end (the machine is shared: wall-clock times "
            "include waiting for a CPU).",
            "",
            f"Fleet: `benchmarks/synthetic.py` seed {shape.seed}: {shape.workloads:,} workloads on "
            f"{shape.hosts} hosts, {shape.groups:,} groups, {shape.policies:,} policies, "
            f"{shape.rules:,} rules, plus {results.held + results.failed} Assertions (40 "
            "tenant isolation, up to 30 from allow rules, 30 no-SSH-from-outside), validated "
            "with the fleet in "
            f"{_ms(results.catalog_seconds)}. Every check is exhaustive (equivalence classes, "
            "`docs/design/analysis.md`), never sampled.",
            "",
            *(r for r, _ in rows),
            "",
        ]
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="benchmarks/compliance", description="Benchmark verify, the gate's re-check and reach."
    )
    parser.add_argument("--quick", action="store_true", help="a 10x smaller fleet; prints only")
    parser.add_argument("--seed", type=int, default=None, help="fleet seed (default 1)")
    parser.add_argument("--repeat", type=int, default=3, help="full verifications to time")
    parser.add_argument("--changes", type=int, default=50, help="label changes to time")
    parser.add_argument(
        "--reach-groups", type=int, default=None, help="one matrix of this many groups"
    )
    parser.add_argument(
        "--reach-budget",
        type=float,
        default=900.0,
        help="seconds for the matrices of 100, 250, 500 and every group (default 900)",
    )
    parser.add_argument("--output", type=Path, default=None, help="results file")
    parser.add_argument("--no-write", action="store_true", help="only print the results")
    args = parser.parse_args(argv)
    shape = QUICK if args.quick else FULL
    if args.seed is not None:
        shape = shape.with_seed(args.seed)

    results = run_benchmark(
        shape, max(1, args.repeat), args.changes, args.reach_groups, progress, args.reach_budget
    )
    publish(
        "compliance",
        argv if argv is not None else sys.argv[1:],
        lambda command: render_section(results, command),
        args.output,
        args.quick,
        args.no_write,
    )
    return 1 if results.problems() else 0


if __name__ == "__main__":
    sys.exit(main())
