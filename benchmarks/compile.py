"""Benchmark of the policy compiler on a synthetic fleet: `benchmarks/compile [--quick]`.

The fleet (`benchmarks.synthetic`) is generated as raw documents, validated with
`build_catalog`, then compiled with `FleetCompiler`. Measured, wall-clock (`perf_counter`),
median of several repetitions, with the peak RSS of each phase:

1. validation: `build_catalog` of every document;
2. full compile: `FleetCompiler(config, workloads)` plus `host_program` for every host, and
   the size of each host's program;
3. one host from scratch (`compile_host`: a fresh compiler; the process's caches, such as
   parsed addresses and selectors, cleared first) and with those caches warm; and
   `host_program(host)` on a warm compiler;
4. one workload label change that moves the workload between groups, on a warm compiler
   that holds the previous program of the workload's host:
   `set_workload` + `host_program(host)` + `delta.diff(old, new)`;
5. one rule edit (a port or a peer of one rule of one policy; the new `PolicyConfig` shares
   everything but that policy): `set_config` + `host_program(host)` + `delta.diff`;
6. the naive alternative for 4 and 5: a fresh `compile_host` of the affected host, which
   is also compared with the incremental result (they must be equal).

4 and 5 run twice: on the "fleet compiler" that compiled every host (as a central manager
would hold it), then on an "agent compiler" that only ever compiled one host. Every time is
also taken as CPU time (`process_time`), which a busy machine inflates less.

Results are printed and written as the section `## Policy compiler (benchmarks/compile)` of
`docs/benchmarks.md` (other sections are kept). A target that is missed is profiled with
cProfile and its hot spots are reported too.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import datetime
import gc
import math
import os
import platform
import pstats
import random
import re
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from benchmarks.results_file import RESULTS, progress, publish
from benchmarks.synthetic import FULL, QUICK, FleetShape, generate
from hyperwall.compiler import delta
from hyperwall.compiler.fleet import FleetCompiler, compile_host
from hyperwall.compiler.program import HostProgram
from hyperwall.policy.catalog import build_catalog
from hyperwall.policy.errors import Source
from hyperwall.policy.model import Catalog, Group, Peer, PolicyConfig, PolicyDef, Workload
from hyperwall.policy.ports import parse_port_spec

SECTION = "## Policy compiler (benchmarks/compile)"
ONE_HOST_TARGET = 1.0  # seconds, from the issue
INCREMENTAL_TARGET = 0.020
REPO = Path(__file__).resolve().parent.parent

T = TypeVar("T")
Log = Callable[[str], None]


# -- measuring -------------------------------------------------------------------------


def _all_programs(compiler: FleetCompiler, hosts: Sequence[str]) -> dict[str, HostProgram]:
    return {h: compiler.host_program(h) for h in hosts}


def clear_process_caches() -> int:
    """Clear the `functools` caches of hyperwall's modules (parsed addresses, selectors...).

    A fresh `FleetCompiler` starts from nothing, but module-level caches survive it; a
    compile "from scratch" as a new process would run it clears them. Returns how many.
    """
    cleared = 0
    for name, module in list(sys.modules.items()):
        if not name.startswith("hyperwall") or module is None:
            continue
        for value in list(vars(module).values()):
            clear = getattr(value, "cache_clear", None)
            if callable(clear) and getattr(value, "__module__", None) == name:
                clear()
                cleared += 1
    return cleared


def _status_kib(key: str) -> int | None:
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return None
    found = re.search(rf"^{key}:\s+(\d+) kB", text, re.MULTILINE)
    return int(found.group(1)) if found else None


class PeakRss:
    """The peak resident set size of one phase.

    On Linux the process's high-water mark (VmHWM) is reset at the start of the phase
    (`/proc/self/clear_refs`), so the peak is the phase's own. Elsewhere it falls back to
    `ru_maxrss`, the peak of the whole process so far.
    """

    def __init__(self) -> None:
        gc.collect()
        try:
            Path("/proc/self/clear_refs").write_text("5")
            self.per_phase = _status_kib("VmHWM") is not None
        except OSError:
            self.per_phase = False

    def mib(self) -> float:
        kib = _status_kib("VmHWM") if self.per_phase else None
        if kib is None:
            kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
        return kib / 1024


@dataclass(slots=True)
class Measurement:
    key: str
    label: str
    samples: list[float] = field(default_factory=list)  # wall-clock seconds
    cpu: list[float] = field(default_factory=list)  # CPU seconds of the process, same runs
    target: float | None = None
    peak_rss_mib: float | None = None

    def record(self, wall: float, cpu: float) -> None:
        self.samples.append(wall)
        self.cpu.append(cpu)

    def time(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn(*args)` once, record its wall-clock and CPU time, return its result."""
        wall, cpu = time.perf_counter(), time.process_time()
        out = fn(*args)
        self.record(time.perf_counter() - wall, time.process_time() - cpu)
        return out

    @property
    def cpu_median(self) -> float:
        return statistics.median(self.cpu) if self.cpu else math.nan

    @property
    def median(self) -> float:
        return statistics.median(self.samples) if self.samples else math.nan

    @property
    def min(self) -> float:
        return min(self.samples) if self.samples else math.nan

    @property
    def max(self) -> float:
        return max(self.samples) if self.samples else math.nan

    @property
    def cpu_passed(self) -> bool | None:
        if self.target is None or not self.cpu:
            return None
        return self.cpu_median < self.target

    @property
    def passed(self) -> bool | None:
        if self.target is None or not self.samples:
            return None
        return self.median < self.target


@dataclass(frozen=True, slots=True)
class HotSpot:
    function: str
    calls: int
    tottime: float
    cumtime: float


@dataclass(slots=True)
class ChangeStats:
    """The incremental changes of one kind (label changes or rule edits)."""

    kind: str
    descriptions: list[str] = field(default_factory=list)
    delta_sizes: list[int] = field(default_factory=list)
    summaries: list[dict[str, int]] = field(default_factory=list)
    program_sizes: list[int] = field(default_factory=list)  # elements of the new program
    checked: int = 0  # compared with a fresh compile of the host
    mismatches: list[str] = field(default_factory=list)  # incremental != fresh, or bad delta

    @property
    def count(self) -> int:
        return len(self.delta_sizes)

    def example(self) -> tuple[str, dict[str, int]]:
        """The change whose delta has the median size, and its delta's summary."""
        if not self.delta_sizes:
            return "", {}
        order = sorted(range(self.count), key=lambda i: self.delta_sizes[i])
        i = order[len(order) // 2]
        return self.descriptions[i], self.summaries[i]


@dataclass(slots=True)
class Results:
    shape: FleetShape
    stats: dict[str, int]
    machine: dict[str, str]
    started: str
    measurements: dict[str, Measurement] = field(default_factory=dict)
    host_sizes: dict[str, dict[str, float]] = field(default_factory=dict)
    one_host: str = ""
    changes: dict[str, ChangeStats] = field(default_factory=dict)  # by measurement prefix
    consistency: list[str] = field(default_factory=list)  # problems found besides timing
    profiles: dict[str, dict[str, list[HotSpot]]] = field(default_factory=dict)
    wall_seconds: float = 0.0

    def problems(self) -> list[str]:
        """Consistency problems: incremental vs. fresh compiles, deltas."""
        return self.consistency + [p for s in self.changes.values() for p in s.mismatches]

    def add(self, m: Measurement) -> Measurement:
        self.measurements[m.key] = m
        return m

    def speedup(self, incremental: str, baseline: str) -> float:
        inc, base = self.measurements.get(incremental), self.measurements.get(baseline)
        if inc is None or base is None or not inc.samples or not base.samples:
            return math.nan
        return base.median / inc.median if inc.median > 0 else math.inf


def profile(fn: Callable[[], object], top: int = 12) -> dict[str, list[HotSpot]]:
    """Run `fn` under cProfile: the `top` functions by own time ("own"), and the `top`
    functions of hyperwall by cumulative time ("cumulative")."""
    profiler = cProfile.Profile()
    profiler.enable()
    fn()
    profiler.disable()
    raw: Mapping[Any, Any] = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    rows: list[HotSpot] = []
    for (filename, line, name), (_, calls, tottime, cumtime, _) in raw.items():
        where = filename.removeprefix(str(REPO) + "/")
        where = re.sub(r".*/(lib/python[^/]+/)", r"\1", where)
        rows.append(HotSpot(f"{name} ({where}:{line})", calls, tottime, cumtime))
    own = sorted(rows, key=lambda r: r.tottime, reverse=True)[:top]
    ours = [r for r in rows if "(hyperwall/" in r.function]
    cumulative = sorted(ours, key=lambda r: r.cumtime, reverse=True)[:top]
    total = sum(r.tottime for r in rows)
    return {"own": own, "cumulative": cumulative, "total": [HotSpot("total", 0, total, total)]}


# -- the fleet -------------------------------------------------------------------------


def raw_documents(docs: Sequence[dict[str, Any]]) -> list[tuple[dict[str, Any], Source]]:
    return [(doc, Source("synthetic.yaml", i + 1)) for i, doc in enumerate(docs)]


def selected_groups(groups: Sequence[Group], w: Workload) -> frozenset[str]:
    """The groups whose own selector picks `w` (tenant groups of its tenant, provider ones)."""
    labels = w.selector_labels()
    return frozenset(
        g.key
        for g in groups
        if g.selector is not None and g.tenant in (None, w.tenant) and g.selector.matches(labels)
    )


def label_changes(
    workloads: Mapping[str, Workload],
    groups: Sequence[Group],
    count: int,
    rng: random.Random,
    host: str | None = None,
) -> list[tuple[Workload, str]]:
    """`count` label changes of distinct tenant workloads (on `host`) that change groups.

    Each is a new `role` among the roles its app uses, a new `env`, or a new `app` of the
    same tenant, kept only if the set of groups whose selector picks the workload changes.
    """
    values: dict[tuple[str | None, str], set[str]] = {}
    for w in workloads.values():
        if w.tenant is None or "app" not in w.labels:
            continue
        for key in ("role", "env", "app"):
            if key in w.labels:
                scope = w.labels["app"] if key == "role" else w.tenant
                values.setdefault((scope, key), set()).add(w.labels[key])
    keys = sorted(
        k
        for k, w in workloads.items()
        if w.tenant is not None and "app" in w.labels and host in (None, w.host)
    )
    rng.shuffle(keys)
    out: list[tuple[Workload, str]] = []
    for key in keys:
        if len(out) >= count:
            break
        w = workloads[key]
        label = ("role", "env", "app")[len(out) % 3]
        scope = w.labels["app"] if label == "role" else w.tenant or ""
        options = sorted(values.get((scope, label), set()) - {w.labels[label]})
        if not options:
            continue
        value = rng.choice(options)
        new = replace(w, labels={**w.labels, label: value})
        if selected_groups(groups, w) != selected_groups(groups, new):
            out.append((new, f"{key}: {label} {w.labels[label]} -> {value}"))
    return out


def installed_policies(program: HostProgram) -> set[str]:
    """Keys of the policies a host's endpoints dispatch to (chains are `DIR:POLICYKEY`)."""
    return {
        name.partition(":")[2]
        for ep in program.endpoints.values()
        for tier in (*ep.ingress, *ep.egress)
        for name in tier
    }


def edit_rule(
    config: PolicyConfig, policy: PolicyDef, kind: str, rng: random.Random
) -> tuple[PolicyDef, str]:
    """`policy` with one rule changed: its first service becomes another tcp port
    (`kind == "port"`), or its first source (else destination) peer another group."""
    index = rng.randrange(len(policy.rules))
    rule = policy.rules[index]
    if kind == "port":
        port = rng.randrange(10_000, 20_000)
        services = (parse_port_spec(f"tcp/{port}"), *(rule.services or ())[1:])
        return replace(policy, rules=_swap(policy, index, replace(rule, services=services))), (
            f"{rule.id}: first service -> tcp/{port}"
        )
    side = "sources" if rule.sources or not rule.destinations else "destinations"
    peers: tuple[Peer, ...] = getattr(rule, side)
    choices = sorted(
        k
        for k, g in config.groups.items()
        if g.tenant == policy.tenant and k not in {p.value for p in peers}
    )
    group = rng.choice(choices)
    changed: dict[str, Any] = {side: (Peer("group", group), *peers[1:])}
    first = f"{peers[0].kind} {peers[0].value}" if peers else "any"
    return replace(policy, rules=_swap(policy, index, replace(rule, **changed))), (
        f"{rule.id}: {side[:-1]} {first} -> group {group}"
    )


def _swap(policy: PolicyDef, index: int, rule: Any) -> tuple[Any, ...]:
    rules = list(policy.rules)
    rules[index] = rule
    return tuple(rules)


def _elements(program: HostProgram) -> int:
    size = program.size()
    return sum(size.get(k, 0) for k in ("chain_items", "address_elements", "block_elements"))


# -- the benchmark ---------------------------------------------------------------------


def _load() -> str:
    try:
        return ", ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


def machine() -> dict[str, str]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.partition(":")[2].strip()
                break
    except OSError:
        pass
    try:
        nproc = str(len(os.sched_getaffinity(0)))
    except AttributeError:
        nproc = str(os.cpu_count())
    try:
        rev = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        rev = "unknown"
    return {
        "load": _load(),
        "nproc": nproc,
        "cpu": cpu,
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "system": f"{platform.system()} {platform.release()}",
        "git": rev,
    }


def run_benchmark(
    shape: FleetShape,
    *,
    repeat: int = 3,
    changes: int = 50,
    edits: int = 30,
    checks: int = 5,
    profile_mode: bool | None = None,
    log: Log | None = None,
) -> Results:
    """Generate the fleet of `shape` and measure; see the module docstring.

    `repeat`: repetitions of the expensive measurements (validation, full compile; one host
    gets `repeat + 2`); `changes`/`edits`: label changes and rule edits; `checks`: how many of
    each are also compiled from scratch (the baseline, and a consistency check).
    `profile_mode`: True profiles every target, None only missed ones, False none.
    """
    say: Log = log or (lambda _: None)
    wall = time.perf_counter()
    started = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    fleet = generate(shape)
    results = Results(shape, fleet.stats, machine(), started)
    raw = raw_documents(fleet.documents)
    say(f"fleet: {shape.describe()}; {len(raw):,} documents")

    # 1. validation
    m = results.add(Measurement("validate", f"validate {len(raw):,} documents (build_catalog)"))
    rss = PeakRss()
    catalog: Catalog | None = None
    for _ in range(repeat):
        catalog = None
        clear_process_caches()
        gc.collect()
        catalog = m.time(build_catalog, raw)
    m.peak_rss_mib = rss.mib()
    assert catalog is not None
    say(f"validate: {_fmt(m.median)}")
    config, workloads = catalog.config, dict(catalog.workloads)
    hosts = sorted({w.host for w in workloads.values()})

    # 2. full compile
    construct = results.add(Measurement("full.construct", "full compile: FleetCompiler(...)"))
    all_hosts = results.add(
        Measurement("full.hosts", f"full compile: host_program x {len(hosts)} hosts")
    )
    full = results.add(Measurement("full.total", "full compile: total"))
    rss = PeakRss()
    fc: FleetCompiler | None = None
    programs: dict[str, HostProgram] = {}
    for _ in range(repeat):
        fc, programs = None, {}
        clear_process_caches()
        gc.collect()
        fc = construct.time(FleetCompiler, config, workloads.values())
        programs = all_hosts.time(_all_programs, fc, hosts)
        full.record(
            construct.samples[-1] + all_hosts.samples[-1], construct.cpu[-1] + all_hosts.cpu[-1]
        )
    full.peak_rss_mib = construct.peak_rss_mib = all_hosts.peak_rss_mib = rss.mib()
    assert fc is not None
    say(f"full compile: {_fmt(full.median)}")
    sizes = {h: p.size() for h, p in programs.items()}
    for metric in next(iter(sizes.values())):
        values = [s[metric] for s in sizes.values()]
        results.host_sizes[metric] = {
            "min": min(values),
            "median": statistics.median(values),
            "max": max(values),
            "total": sum(values),
        }
    by_items = [h for _, h in sorted((_elements(p), h) for h, p in programs.items())]
    host = results.one_host = by_items[len(by_items) // 2]  # a typical host

    # 3. one host
    cold = results.add(
        Measurement(
            "host.fresh",
            f"one host from scratch: compile_host({host}), cold process caches",
            target=ONE_HOST_TARGET,
        )
    )
    warm_caches = results.add(
        Measurement("host.fresh_warm", "one host from scratch, warm process caches")
    )
    rss = PeakRss()
    fresh: HostProgram | None = None
    for _ in range(repeat + 2):
        fresh = None
        clear_process_caches()
        gc.collect()
        fresh = cold.time(compile_host, config, workloads, host)
    for _ in range(repeat + 2):
        fresh = None
        gc.collect()
        fresh = warm_caches.time(compile_host, config, workloads, host)
    cold.peak_rss_mib = warm_caches.peak_rss_mib = rss.mib()
    if fresh != programs[host]:
        results.consistency.append(
            f"compile_host({host}) differs from the full compile's host_program({host})"
        )
    fresh = None
    warm = results.add(
        Measurement("host.warm", "host_program(host) on a warm compiler, every host")
    )
    rss = PeakRss()
    for h in hosts:
        program = warm.time(fc.host_program, h)
        if program != programs[h]:
            results.consistency.append(f"warm host_program({h}) differs from its first result")
    warm.peak_rss_mib = rss.mib()
    say(f"one host: {_fmt(cold.median)} cold, {_fmt(warm_caches.median)} warm caches")

    # profiles of missed targets (or of every target, if asked)
    def maybe_profile(key: str, run: Callable[[], object]) -> None:
        m = results.measurements[key]
        if profile_mode is False or not m.samples or (profile_mode is None and m.passed):
            return
        say(f"profiling: {m.label.strip()}")
        results.profiles[key] = profile(run)

    def one_host() -> None:
        clear_process_caches()
        compile_host(config, workloads, host)

    maybe_profile("host.fresh", one_host)

    # 4.-6. incremental changes on the fleet compiler (every host compiled, like a manager)
    rng = random.Random(shape.seed)
    spare = 10 if profile_mode is not False else 0  # more changes, to profile
    groups = list(config.groups.values())
    # (the baselines are added to the results after the changes, for the table's order)
    label_base = Measurement("label.baseline", "baseline for a label change: fresh compile_host")
    edit_base = Measurement("edit.baseline", "baseline for a rule edit: fresh compile_host")
    planned = label_changes(workloads, groups, changes + spare, rng)
    phase = _Phase(results, fc, workloads, checks, rng)
    phase.labels("label", "label change (fleet compiler)", planned[:changes], label_base)
    where_installed: dict[str, list[str]] = {}
    for h, p in sorted(programs.items()):
        for key in installed_policies(p):
            where_installed.setdefault(key, []).append(h)
    targets = [
        (k, rng.choice(where_installed[k]))
        for k in sorted(config.policies)
        if config.policies[k].tenant is not None and k in where_installed
    ]
    rng.shuffle(targets)
    phase.edits("edit", "rule edit (fleet compiler)", targets[:edits], edit_base)
    say(
        f"fleet compiler: label change {_fmt(results.measurements['label.total'].median)}, "
        f"rule edit {_fmt(results.measurements['edit.total'].median)}"
    )
    if planned[changes:]:
        maybe_profile("label.total", partial(phase.replay_labels, planned[changes:]))
    if targets[edits : edits + spare]:
        maybe_profile("edit.total", partial(phase.replay_edits, targets[edits : edits + spare]))
    current = phase.fc.config
    del fc, programs, phase
    gc.collect()

    # the same on an agent's compiler: only its own host was ever compiled
    agent = FleetCompiler(current, workloads.values())
    agent.host_program(host)
    agent_phase = _Phase(results, agent, workloads, max(1, checks // 2), rng)
    local = label_changes(workloads, groups, changes + spare, rng, host=host)
    agent_phase.labels(
        "agent.label", f"label change (agent compiler, {host})", local[:changes], label_base
    )
    installed = sorted(installed_policies(agent.host_program(host)))
    agent_targets = [(k, host) for k in installed if current.policies[k].tenant is not None]
    rng.shuffle(agent_targets)
    agent_phase.edits(
        "agent.edit", f"rule edit (agent compiler, {host})", agent_targets[:edits], edit_base
    )
    results.add(label_base)
    results.add(edit_base)
    say(
        f"agent compiler: label change "
        f"{_fmt(results.measurements['agent.label.total'].median)}, rule edit "
        f"{_fmt(results.measurements['agent.edit.total'].median)}; baselines "
        f"{_fmt(label_base.median)}, {_fmt(edit_base.median)}"
    )
    if local[changes:]:
        maybe_profile("agent.label.total", partial(agent_phase.replay_labels, local[changes:]))
    if agent_targets[edits : edits + spare]:
        maybe_profile(
            "agent.edit.total",
            partial(agent_phase.replay_edits, agent_targets[edits : edits + spare]),
        )
    results.machine["load_end"] = _load()
    results.wall_seconds = time.perf_counter() - wall
    return results


class _Phase:
    """Timed incremental changes on one warm compiler; see `run_benchmark`."""

    def __init__(
        self,
        results: Results,
        fc: FleetCompiler,
        workloads: dict[str, Workload],
        checks: int,
        rng: random.Random,
    ) -> None:
        self.results, self.fc, self.workloads = results, fc, workloads
        self.checks, self.rng = checks, rng

    def _measurements(self, key: str, title: str, setter: str) -> list[Measurement]:
        add = self.results.add
        return [
            add(
                Measurement(
                    f"{key}.total",
                    f"{title}: {setter} + host_program + diff",
                    target=INCREMENTAL_TARGET,
                )
            ),
            add(Measurement(f"{key}.set", f"  of which {setter}")),
            add(Measurement(f"{key}.program", "  of which host_program")),
            add(Measurement(f"{key}.diff", "  of which delta.diff")),
        ]

    def _step(
        self,
        stats: ChangeStats,
        ms: list[Measurement],
        what: str,
        host: str,
        change: Callable[[Any], object],
        argument: Any,
    ) -> HostProgram:
        old = self.fc.host_program(host)  # the program the host holds before the change
        gc.collect()
        t0, c0 = time.perf_counter(), time.process_time()
        change(argument)
        t1, c1 = time.perf_counter(), time.process_time()
        new = self.fc.host_program(host)
        t2, c2 = time.perf_counter(), time.process_time()
        d = delta.diff(old, new)
        t3, c3 = time.perf_counter(), time.process_time()
        walls = (t3 - t0, t1 - t0, t2 - t1, t3 - t2)
        cpus = (c3 - c0, c1 - c0, c2 - c1, c3 - c2)
        for m, wall, cpu in zip(ms, walls, cpus, strict=True):
            m.record(wall, cpu)
        stats.descriptions.append(what)
        stats.delta_sizes.append(d.size())
        stats.summaries.append(d.summary())
        stats.program_sizes.append(_elements(new))
        if delta.apply(old, d) != new:
            stats.mismatches.append(f"{what}: delta.apply(old, diff(old, new)) != new")
        return new

    def _check(
        self, stats: ChangeStats, baseline: Measurement, what: str, host: str, new: Any
    ) -> None:
        scratch = baseline.time(compile_host, self.fc.config, self.workloads, host)
        stats.checked += 1
        if scratch != new:
            stats.mismatches.append(f"{what}: incremental program != compile_host (fresh)")

    def labels(
        self,
        key: str,
        title: str,
        changes: Sequence[tuple[Workload, str]],
        baseline: Measurement,
    ) -> None:
        stats = self.results.changes[key] = ChangeStats(title)
        ms = self._measurements(key, title, "set_workload")
        rss = PeakRss()
        for i, (new_w, what) in enumerate(changes):
            new = self._step(stats, ms, what, new_w.host, self.fc.set_workload, new_w)
            self.workloads[new_w.key] = new_w
            if i < self.checks:
                self._check(stats, baseline, what, new_w.host, new)
        ms[0].peak_rss_mib = rss.mib()

    def edits(
        self,
        key: str,
        title: str,
        targets: Sequence[tuple[str, str]],
        baseline: Measurement,
    ) -> None:
        stats = self.results.changes[key] = ChangeStats(title)
        ms = self._measurements(key, title, "set_config")
        rss = PeakRss()
        for i, (policy_key, host) in enumerate(targets):
            new_config, what = self._edited(policy_key, i)
            new = self._step(stats, ms, what, host, self.fc.set_config, new_config)
            if i < self.checks:
                self._check(stats, baseline, what, host, new)
        ms[0].peak_rss_mib = rss.mib()

    def _edited(self, policy_key: str, i: int) -> tuple[PolicyConfig, str]:
        """The current config with one rule of one policy edited (outside the timing)."""
        config = self.fc.config
        kind = ("port", "peer")[i % 2]
        policy, what = edit_rule(config, config.policies[policy_key], kind, self.rng)
        return replace(config, policies={**config.policies, policy_key: policy}), what

    def replay_labels(self, changes: Sequence[tuple[Workload, str]]) -> None:
        """More label changes, untimed (to be profiled)."""
        for new_w, _ in changes:
            self.fc.set_workload(new_w)
            self.workloads[new_w.key] = new_w
            self.fc.host_program(new_w.host)

    def replay_edits(self, targets: Sequence[tuple[str, str]]) -> None:
        """More rule edits, untimed (to be profiled)."""
        for i, (policy_key, host) in enumerate(targets):
            self.fc.set_config(self._edited(policy_key, i)[0])
            self.fc.host_program(host)


# -- reporting -------------------------------------------------------------------------


def _fmt(seconds: float) -> str:
    if math.isnan(seconds):
        return "—"
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 0.01:
        return f"{seconds * 1000:.0f} ms"
    if seconds >= 0.001:
        return f"{seconds * 1000:.1f} ms"
    return f"{seconds * 1000:.2f} ms"


def _num(value: float) -> str:
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.1f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(header), rule, *(line(r) for r in rows)])


def results_table(results: Results) -> str:
    rows = []
    for m in results.measurements.values():
        target = f"< {_fmt(m.target)}" if m.target is not None else ""
        verdict = {True: "pass", False: "**FAIL**", None: ""}[m.passed]
        if m.passed is not None and m.passed != m.cpu_passed:
            verdict += f" (CPU: {'pass' if m.cpu_passed else 'fail'})"
        rss = f"{m.peak_rss_mib:,.0f}" if m.peak_rss_mib is not None else ""
        rows.append(
            [
                m.label,
                _fmt(m.median),
                _fmt(m.min),
                _fmt(m.max),
                _fmt(m.cpu_median),
                str(len(m.samples)),
                target,
                verdict,
                rss,
            ]
        )
    header = [
        "measurement",
        "median",
        "min",
        "max",
        "CPU median",
        "n",
        "target",
        "result",
        "peak RSS MiB",
    ]
    return _table(header, rows)


def sizes_table(results: Results) -> str:
    rows = [
        [metric, *(_num(v[k]) for k in ("min", "median", "max", "total"))]
        for metric, v in results.host_sizes.items()
    ]
    return _table(["per host", "min", "median", "max", "fleet total"], rows)


def changes_table(results: Results) -> str:
    rows = []
    for key, stats in results.changes.items():
        if not stats.count:
            rows.append([stats.kind, "0", "", "", "", "", ""])
            continue
        speed = results.speedup(f"{key}.total", _baseline_key(key))
        rows.append(
            [
                stats.kind,
                str(stats.count),
                _num(statistics.median(stats.delta_sizes)),
                _num(max(stats.delta_sizes)),
                _num(statistics.median(stats.program_sizes)),
                f"{speed:,.0f}x" if math.isfinite(speed) else "—",
                f"{stats.checked - len(stats.mismatches)}/{stats.checked} equal"
                if not stats.mismatches
                else f"**{len(stats.mismatches)} mismatches**",
            ]
        )
    header = [
        "change",
        "n",
        "delta size, median",
        "max",
        "host program elements",
        "speedup vs. fresh",
        "fresh compile check",
    ]
    return _table(header, rows)


def _short(function: str) -> str:
    """`add (hyperwall/compiler/boxes.py:48)` -> `boxes.add`."""
    found = re.fullmatch(r"(.*) \((?:.*/)?([^/]+?)(?:\.py)?:\d+\)", function)
    if not found or found.group(2) == "~":
        return function.split(" (")[0]
    return f"{found.group(2)}.{found.group(1)}"


def _baseline_key(key: str) -> str:
    return "label.baseline" if key.endswith("label") else "edit.baseline"


def _summary_text(summary: Mapping[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in summary.items() if v) or "empty"


def shape_text(results: Results) -> str:
    s, st = results.shape, results.stats
    tenant_w, provider_w = st.get("Workload.tenant", 0), st.get("Workload.provider", 0)
    groups = {k.split(".")[1]: v for k, v in st.items() if k.startswith("Group.")}
    applied = {k.split(".")[2]: v for k, v in st.items() if k.startswith("Policy.appliedTo.")}
    rules = {k.split(".")[1]: v for k, v in st.items() if re.fullmatch(r"rules\.[a-z]+", k)}
    peers = {k.split(".")[1]: v for k, v in st.items() if k.startswith("peers.")}

    def parts(d: Mapping[str, int], *keys: str) -> str:
        return ", ".join(f"{d.get(k, 0):,} {k}" for k in keys)

    return "\n".join(
        [
            f"- {s.workloads:,} workloads on {s.hosts} hosts ({s.workloads_per_host} per host): "
            f"{tenant_w:,} of {s.tenants} tenants, {provider_w:,} provider infra VMs; one "
            f"interface each, IPv4, {st.get('Workload.ipv6', 0):,} also IPv6; labels app, "
            "role, env, zone, team, version (+ pci on some apps).",
            f"- {s.groups:,} groups ({groups.get('tenant', 0):,} tenant, "
            f"{groups.get('provider', 0):,} provider): "
            + parts(groups, "selector", "members", "cidrs", "nested")
            + ".",
            f"- {s.policies:,} policies ({st.get('Policy.tenant', 0):,} tenant, "
            f"{st.get('Policy.provider', 0):,} provider), appliedTo: "
            + parts(applied, "selector", "group", "workload", "scope")
            + " (scope = the whole tenant, or every workload).",
            f"- {st.get('rules', 0):,} rules: "
            + parts(rules, "allow", "drop", "reject", "pass", "log")
            + "; peers: "
            + parts(peers, "group", "selector", "cidr", "workload")
            + f"; {st.get('rules.services.any', 0):,} rules without services.",
        ]
    )


def interpretation(results: Results) -> str:
    ms = results.measurements
    lines = []
    per_host = ms["full.hosts"].median / max(1, results.shape.hosts)
    lines.append(
        f"A full compile of the fleet takes {_fmt(ms['full.total'].median)} "
        f"({_fmt(ms['full.construct'].median)} to build the compiler's fleet state, then "
        f"{_fmt(per_host)} per host on average, since hosts share address sets and chains)."
    )
    cold, warm = ms["host.fresh"], ms["host.fresh_warm"]
    verdict = "meets" if cold.passed else "misses"
    lines.append(
        f"One host from scratch takes {_fmt(cold.median)} ({_fmt(warm.median)} when the "
        f"process's parse caches are warm): it {verdict} the {_fmt(ONE_HOST_TARGET)} target. "
        f"A warm compiler hands a host's program back in {_fmt(ms['host.warm'].median)}."
    )
    for key, stats in results.changes.items():
        m = ms[f"{key}.total"]
        if not m.samples:
            continue
        what, summary = stats.example()
        speed = results.speedup(f"{key}.total", _baseline_key(key))
        share = max((ms[f"{key}.{p}"] for p in ("set", "program", "diff")), key=lambda x: x.median)
        lines.append(
            f"A {stats.kind} costs {_fmt(m.median)} median ({_fmt(m.max)} max) and "
            f"{'meets' if m.passed else 'misses'} the {_fmt(INCREMENTAL_TARGET)} target; "
            f"{share.label.strip().removeprefix('of which ')} dominates. Recompiling the "
            f"host instead costs {_fmt(ms[_baseline_key(key)].median)} ({speed:,.0f}x more). "
            f"Its delta has {_num(statistics.median(stats.delta_sizes))} changes at the median "
            f"(e.g. {what}: {_summary_text(summary)})."
        )
    for key, views in results.profiles.items():
        total = views["total"][0].tottime or 1.0
        top = ", ".join(
            f"{_short(s.function)} {100 * s.tottime / total:.0f}%" for s in views["own"][:4]
        )
        inner = [
            s
            for s in views["cumulative"]
            if s.cumtime < 0.9 * total and not s.function.startswith("<")
        ][:3]
        below = ", ".join(f"{_short(s.function)} {100 * s.cumtime / total:.0f}%" for s in inner)
        lines.append(
            f"Profile of *{ms[key].label.strip()}*: own time mostly in {top}; "
            f"cumulative: {below} (tables below)."
        )
    problems = results.problems()
    if problems:
        lines.append(
            "**Consistency problems** (incremental vs. fresh compile, or delta): "
            + "; ".join(problems[:5])
            + (f" and {len(problems) - 5} more" if len(problems) > 5 else "")
            + "."
        )
    else:
        lines.append(
            "Every checked incremental program equals a fresh compile of the same host, and "
            "every delta applied to the old program gives the new one."
        )
    return "\n".join(f"- {line}" for line in lines)


def profiles_text(results: Results, top: int = 8) -> str:
    out = []
    for key, views in results.profiles.items():
        m = results.measurements[key]
        for view, title in (
            ("own", "by own time"),
            ("cumulative", "hyperwall, by cumulative time"),
        ):
            out.append(f"cProfile of *{m.label.strip()}*, top {top} {title}:\n")
            rows = [
                [s.function, f"{s.calls:,}", f"{s.tottime:.3f}", f"{s.cumtime:.3f}"]
                for s in views[view][:top]
            ]
            out.append(_table(["function", "calls", "own s", "cumulative s"], rows))
            out.append("")
    return "\n".join(out).strip()


def busy_note(results: Results) -> str:
    """A warning when other processes competed for the CPUs during the run."""
    loads = []
    for key in ("load", "load_end"):
        with contextlib.suppress(ValueError):
            loads.append(float(results.machine.get(key, "").split(",")[0]))
    if not loads or max(loads) < 1.5:
        return ""
    return (
        f" **The machine was busy** (1-minute load up to {max(loads):.1f}, this benchmark "
        "accounts for 1): wall-clock times are inflated; the CPU column (this process's CPU "
        "time) is less sensitive to that, though not immune (shared caches and cores)."
    )


def render_section(results: Results, command: str) -> str:
    mach = results.machine
    parts = [
        SECTION,
        "",
        f"Run {results.started} with `{command}` (git `{mach['git']}`), "
        f"{results.wall_seconds:.0f} s in all.",
        f"Machine: {mach['nproc']} CPUs ({mach['cpu']}), {mach['python']}, {mach['system']}; "
        f"load average {mach['load']} at the start, {mach.get('load_end', '?')} at the end."
        + busy_note(results),
        "",
        f"Fleet: synthetic (`benchmarks/synthetic.py`, seed {results.shape.seed}), "
        "generated as raw documents and validated with `build_catalog`:",
        "",
        shape_text(results),
        "",
        "Times are wall-clock medians (`time.perf_counter`), and the median CPU time of the "
        "same runs (`time.process_time`); targets are judged on wall-clock; peak RSS is the "
        "process's "
        "high-water mark during that phase (it includes the documents and catalog held "
        "throughout). A compile *from scratch* uses a fresh `FleetCompiler`; *cold* also "
        "clears hyperwall's module-level caches (parsed addresses and selectors) first. "
        f"The typical host is the one with the median program size ({results.one_host}).",
        "",
        results_table(results),
        "",
        sizes_table(results),
        "",
        "Incremental changes, on a warm compiler holding the host's previous program "
        "(delta size = `ProgramDelta.size()`: changed set elements plus whole objects):",
        "",
        changes_table(results),
        "",
        "Interpretation:",
        "",
        interpretation(results),
    ]
    if results.profiles:
        parts += ["", profiles_text(results)]
    return "\n".join(parts).rstrip() + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="benchmarks/compile",
        description="Benchmark the policy compiler on a synthetic fleet.",
    )
    parser.add_argument(
        "--quick", action="store_true", help="a 10x smaller fleet (1,000 workloads), for smoke runs"
    )
    parser.add_argument("--seed", type=int, default=None, help="fleet seed (default 1)")
    parser.add_argument("--repeat", type=int, default=3, help="repetitions of big measurements")
    parser.add_argument("--changes", type=int, default=50, help="label changes to time")
    parser.add_argument("--edits", type=int, default=30, help="rule edits to time")
    parser.add_argument("--checks", type=int, default=5, help="changes also compiled fresh")
    parser.add_argument(
        "--profile",
        dest="profile",
        action="store_const",
        const=True,
        default=None,
        help="profile every target (default: only missed ones)",
    )
    parser.add_argument("--no-profile", dest="profile", action="store_const", const=False)
    parser.add_argument(
        "--output",
        type=Path,
        default=None,
        help=f"results file (default {RESULTS.relative_to(REPO)}; --quick: none)",
    )
    parser.add_argument("--no-write", action="store_true", help="only print the results")
    args = parser.parse_args(argv)
    shape = QUICK if args.quick else FULL
    if args.seed is not None:
        shape = shape.with_seed(args.seed)

    results = run_benchmark(
        shape,
        repeat=max(1, args.repeat),
        changes=args.changes,
        edits=args.edits,
        checks=args.checks,
        profile_mode=args.profile,
        log=progress,
    )
    publish(
        "compile",
        argv if argv is not None else sys.argv[1:],
        lambda command: render_section(results, command),
        args.output,
        args.quick,
        args.no_write,
    )
    return 1 if results.problems() else 0


if __name__ == "__main__":
    sys.exit(main())
