"""Results of the data-plane benchmark as a markdown section and a plot. Pure but for files.

Counterpart of `benchmarks.dataplane` (which measures into `Results`). The section replaces
only `## Data plane (benchmarks/dataplane)` in `docs/benchmarks.md`; other sections stay.
"""

from __future__ import annotations

import importlib
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks import dataplane_policy as policy
from benchmarks.dataplane_results import PATHS, Case, Results

SECTION = "## Data plane (benchmarks/dataplane)"
CONN_VS_A1 = 0.95  # targets from the issue
CONN_VS_LINEAR = 4.0
THROUGHPUT_VS_A0 = 0.97
CHANGE_SECONDS = 0.050
SCRATCH_SECONDS = 2.0
NAMES = {
    "a0": "a0 no firewall",
    "a1": "a1 conntrack only",
    "b": "b hyperwall",
    "c": "c iptables-nft linear",
    "c-legacy": "c iptables-legacy linear",
    "d": "d appliance (hairpin, set)",
}


# -- formatting ------------------------------------------------------------------------


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    return "\n".join([line(header), line(["-" * w for w in widths]), *(line(r) for r in rows)])


def _num(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.0f}%"


def _time(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 0.001:
        return f"{seconds * 1000:.1f} ms"
    return f"{seconds * 1e6:.0f} us"


def _med(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def _verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("pass" if ok else "**FAIL**")


def _rules(case: Case) -> str:
    return f"{case.rules:,}" if case.rules else "-"


def _range(values: Sequence[float], digits: int) -> str:
    if len(values) < 2:
        return ""
    return f" ({min(values):,.{digits}f}-{max(values):,.{digits}f})"


# -- tables ----------------------------------------------------------------------------


def metric_table(results: Results, metric: str, digits: int, bases: Sequence[str]) -> str:
    header = ["case", "rules"]
    for path in PATHS:
        header += [f"{path} median (min-max)"] + [f"vs {b}" for b in bases]
    rows = []
    for case in results.plan.cases():
        row = [NAMES[case.kind], _rules(case)]
        for path in PATHS:
            values = results.values(case.key, path, metric)
            row.append(_num(_med(values), digits) + _range(values, digits))
            row += [_ratio(results.ratio(case.key, b, path, metric)) for b in bases]
        rows.append(row)
    return _table(header, rows)


def latency_table(results: Results) -> str:
    header = ["case", "rules"]
    for path in PATHS:
        header += [f"{path} p50 us", "p99 us", "p50 vs a1"]
    rows = []
    for case in results.plan.cases():
        row = [NAMES[case.kind], _rules(case)]
        for path in PATHS:
            row += [
                _num(results.median(case.key, path, "rtt_p50_us"), 1),
                _num(results.median(case.key, path, "rtt_p99_us"), 1),
                _ratio(results.ratio(case.key, "a1", path, "rtt_p50_us")),
            ]
        rows.append(row)
    return _table(header, rows)


def shape_table(results: Results) -> str:
    plan = results.plan
    rows = []
    for n in plan.hyperwall:
        s = results.shapes.get(n, {})
        c = results.compile.get(n, {})
        rows.append(
            [
                f"{n:,}",
                str(len(policy.policy_sizes(n, plan.per_policy))),
                str(s.get("policy_chains", "-")),
                str(s.get("nft_rules", "-")),
                str(s.get("block_sets", "-")),
                _num(s.get("block_elements")),
                _num(s.get("largest_block")),
                f"{n + 2:,}",
                _time(c.get("validate")),
                _time(c.get("compile")),
            ]
        )
    header = [
        "rules",
        "policies",
        "policy chains on the server's path",
        "nft rules in them",
        "block sets",
        "block elements",
        "largest block",
        "linear chain (c)",
        "validation",
        "compile (2 hosts)",
    ]
    return _table(header, rows)


def loads_table(results: Results) -> str:
    rows = []
    for case in results.plan.cases():
        for load in results.loads.get(case.key, []):
            host = load["host"].rsplit("-", 1)[-1]
            transaction = load.get("transaction")
            rows.append(
                [
                    NAMES[case.kind],
                    _rules(case),
                    host,
                    _time(load["seconds"]),
                    _time(transaction),
                    _time(load.get("kernel")),
                    str(load.get("commands", "-")),
                ]
            )
    header = [
        "case",
        "rules",
        "namespace",
        "load (empty table)",
        "nft transaction",
        "kernel CPU",
        "commands",
    ]
    return _table(header, rows)


def _change_row(label: str, samples: Sequence[dict[str, Any]]) -> list[str]:
    def med(key: str) -> float | None:
        return _med([s[key] for s in samples])

    totals = [s["total"] for s in samples]
    return [
        label,
        str(len(samples)),
        _time(med("compile")),
        _time(med("apply")),
        _time(med("transaction")),
        _time(med("kernel")),
        _time(med("total")),
        _time(max(totals)) if totals else "-",
        _num(med("delta")),
        ", ".join(sorted({s["mode"] for s in samples})),
    ]


def control_table(results: Results) -> str:
    rows = []
    for n in results.plan.hyperwall:
        loads = results.loads.get(Case("b", n).key, [])
        if loads:
            first = loads[0]
            rows.append(
                [
                    f"{n:,}: full load, host A",
                    "1",
                    "-",
                    _time(first["seconds"]),
                    _time(first.get("transaction")),
                    _time(first.get("kernel")),
                    _time(first["seconds"]),
                    "-",
                    "-",
                    str(first.get("mode", "")),
                ]
            )
        changes = results.changes.get(n, [])
        for direction in ("in", "out"):
            picked = [c for c in changes if c["what"] == direction]
            if picked:
                rows.append(_change_row(f"{n:,}: label change, address {direction}", picked))
        edits = results.edits.get(n, [])
        if edits:
            rows.append(_change_row(f"{n:,}: rule edit (port)", edits))
    header = [
        "rules: what",
        "n",
        "compile",
        "apply",
        "nft transaction",
        "kernel CPU",
        "total median",
        "total max",
        "delta size",
        "backend mode",
    ]
    return _table(header, rows)


def scratch_table(results: Results) -> str:
    s = results.scratch
    if not s:
        return "(not run)"
    shape = s.get("shape", {})
    rows = [
        ["validation (build_catalog of the documents)", _time(s["validate"])],
        ["compile (fresh FleetCompiler + host_program)", _time(s["compile"])],
        ["apply (NftBackend.apply into an empty table)", _time(s["apply"])],
        ["  of which the nft transaction", _time(s["transaction"])],
        ["  of which kernel CPU", _time(s["kernel"])],
        [
            f"**compile + apply** (median of {len(s.get('runs', [s['total']]))} runs; "
            f"min-max {_time(min(s.get('runs', [s['total']])))}-"
            f"{_time(max(s.get('runs', [s['total']])))})",
            f"**{_time(s['total'])}**",
        ],
        ["validation + compile + apply", _time(s["total_with_validation"])],
        ["nft commands in the transaction", _num(s.get("commands"))],
        [
            "program: policy chains / block sets / block elements",
            f"{shape.get('policy_chains', '-')} / {shape.get('block_sets', '-')} / "
            f"{_num(shape.get('block_elements'))}",
        ],
    ]
    return _table([f"{s['rules']:,} rules on one host, from scratch", "time"], rows)


def profile_table(rows: Sequence[dict[str, Any]]) -> str:
    cells = [[r["function"], _num(r["calls"]), f"{r['own']:.3f}", f"{r['cum']:.3f}"] for r in rows]
    return _table(["function", "calls", "own s", "cumulative s"], cells)


def probes_text(results: Results) -> str:
    parts = []
    for case in results.plan.cases():
        got = results.probes.get(case.key, {})
        parts.append(f"{case.key}: " + "/".join(got.get(p, "-") for p in PATHS))
    return "; ".join(parts)


# -- targets ---------------------------------------------------------------------------


def targets(results: Results) -> list[list[str]]:
    plan = results.plan
    rows: list[list[str]] = []
    big = max(plan.hyperwall) if plan.hyperwall else None
    full = big == 100_000

    def both(case: str, base: str, metric: str) -> list[float | None]:
        """The paired phase's ratio where it ran, else the rounds' (paired per round)."""
        return [
            results.paired_ratio(case, p, metric) or results.ratio(case, base, p, metric)
            for p in PATHS
        ]

    if big is not None:
        got = both(f"b-{big}", "a1", "conn_per_s")
        ok = None if None in got else all(g is not None and g >= CONN_VS_A1 for g in got)
        rows.append(
            [
                f"new connections/s at {big:,} rules >= 95% of a1 (same-host / cross-host)",
                " / ".join(_pct(g) for g in got),
                _verdict(ok if full else None),
            ]
        )
    mid = 10_000 if 10_000 in plan.hyperwall and 10_000 in plan.linear else None
    if mid is None:
        common = sorted(set(plan.hyperwall) & set(plan.linear))
        mid = common[-1] if common else None
    if mid is not None:
        got = []
        for p in PATHS:
            b, c = (results.paired_ratio(k, p, "conn_per_s") for k in (f"b-{mid}", f"c-{mid}"))
            got.append(b / c if b and c else results.ratio(f"b-{mid}", f"c-{mid}", p, "conn_per_s"))
        ok = None if None in got else all(g is not None and g >= CONN_VS_LINEAR for g in got)
        # the floor: conntrack alone (a1) against c, from the same pairs
        floor = [results.paired_ratio(f"c-{mid}", p, "conn_per_s") for p in PATHS]
        rows.append(
            [
                f"new connections/s at {mid:,} rules >= 4x linear iptables-nft (c)",
                " / ".join("-" if g is None else f"{g:.1f}x" for g in got)
                + (
                    f" (a1: {' / '.join(f'{1 / f:.1f}x' for f in floor if f)})"
                    if all(floor)
                    else ""
                ),
                _verdict(ok if mid == 10_000 else None),
            ]
        )
    worst: float | None = None
    paired_sizes = [n for n in plan.hyperwall if f"b-{n}" in results.paired.get("gbit_per_s", {})]
    conntrack = [results.paired_ratio("a1", p, "gbit_per_s") for p in PATHS]
    for n in paired_sizes or plan.hyperwall:
        for g in both(f"b-{n}", "a0", "gbit_per_s"):
            if g is not None:
                worst = g if worst is None else min(worst, g)
    rows.append(
        [
            "throughput >= 97% of a0 (lowest ratio over the paired sizes and both paths)"
            if paired_sizes
            else "throughput >= 97% of a0 (lowest ratio over every hyperwall size and path)",
            _pct(worst)
            + (f" (a1: {' / '.join(_pct(c) for c in conntrack)})" if None not in conntrack else ""),
            _verdict(None if worst is None or not full else worst >= THROUGHPUT_VS_A0),
        ]
    )
    if big is not None:
        changes = results.changes.get(big, [])
        edits = results.edits.get(big, [])
        for label, picked in (
            ("label change, address in", [c for c in changes if c["what"] == "in"]),
            ("label change, address out", [c for c in changes if c["what"] == "out"]),
            ("rule edit", edits),
        ):
            med = _med([c["total"] for c in picked])
            rows.append(
                [
                    f"one incremental change at {big:,} rules < 50 ms: {label} "
                    "(compile + apply, median)",
                    _time(med),
                    _verdict(None if med is None or not full else med < CHANGE_SECONDS),
                ]
            )
    s = results.scratch
    if s:
        rows.append(
            [
                f"a host with {s['rules']:,} rules programmed from scratch < 2 s "
                "(compile + apply; validation not counted)",
                _time(s["total"]),
                _verdict(s["total"] < SCRATCH_SECONDS if s["rules"] >= 120_000 else None),
            ]
        )
    return rows


# -- the section -----------------------------------------------------------------------


def method_text(results: Results) -> str:
    plan = results.plan
    m = results.machine
    machine = (
        f"Machine: {m.get('nproc')} vCPUs ({m.get('cpu')}), Linux {m.get('kernel')}, "
        f"{m.get('nft')}, {m.get('iptables')}, {m.get('iperf3')}, Python {m.get('python')}; "
        "shared and noisy (other work ran at the same time: load average "
        f"{m.get('load')} at the start, {results.load_end} at the end)."
    )
    return (
        machine
        + f"""

Method:

- Topology: network namespaces, one copy per case (so each case's firewall is loaded once and
  the cases interleave without reloading): host A with the client VM and server-a, host B with
  server-b, a veth underlay; routed Calico-style attachment (VM /32, default via 169.254.1.1
  onlink with a permanent neighbour; host /32 routes and permanent neighbours, ip_forward,
  rp_filter 0). Same-host = client -> server-a, cross-host = client -> server-b.
- Rules: N rules `allow from group src-NN to group servers on tcp/P` with distinct ports, in
  policies of at most {plan.per_policy:,} rules (applied to `servers`, direction in), tenant default
  drop; the client may open anything (one egress rule). The rule that admits the benchmark's
  ports is the last rule of the last policy; its policy's rules all come from the client's group
  (so the client's address matches every rule of that policy but the port), the other policies'
  from other addresses. A probe to a port no rule admits must time out (dropped) in b, c, d.
- Cases: a0 no firewall; a1 `ct state established,related accept` then accept, in a forward base
  chain on both hosts; b hyperwall (documents -> build_catalog -> FleetCompiler -> NftBackend
  in each host namespace); c the same rules as one linear FORWARD chain, iptables-restore
  (conntrack accept first, traffic not to a local VM accepted, then
  `-s SRC -d SERVERS -p tcp --dport P -j ACCEPT` in evaluation order, policy DROP) with
  iptables-nft (c-legacy: iptables-legacy); d no firewall on the hosts, host A policy-routes
  every flow of its VMs (and from host B) through an appliance namespace and back, whose
  nftables forward chain is conntrack then one concatenated interval set
  `saddr . daddr . l4proto . dport` holding all N rules (the same lookup hyperwall's folded
  blocks do, so d differs from b by the hairpin).
- Metrics, per case, path and round: throughput = iperf3, one TCP stream,
  {plan.iperf_seconds} s (client on vCPU {plan.iperf_client_cpu}, server on vCPU {plan.server_cpu});
  latency = 64-byte request/response over one persistent TCP connection for
  {plan.rr_seconds:g} s, p50/p99 of every round trip; connection rate = connect, 64-byte
  request, reply, close, one after the other for {plan.crr_seconds:g} s (this is where rules
  are evaluated). Latency and connection-rate client and server are both pinned to vCPU
  {plan.client_cpu} (taskset): KERNEL_FACTS found unpinned latency bimodal depending on
  whether they share a vCPU. Conntrack is flushed before each case.
- {plan.rounds} rounds, round-robin over the cases (each round starts one case later; the order
  of the two paths alternates). Tables show medians over rounds with min-max; ratios ("vs a1")
  are medians of the per-round ratios (case and baseline measured in the same round).
- Control path, on host A of each hyperwall case: the full load is the NftBackend.apply that
  programmed the fresh namespace; then, on the warm FleetCompiler and NftBackend, a label
  change of workload `roamer` that moves its address into and out of group `partners`
  (used by {policy.MOVER_RULES} rules of the first policy), and a port edit of the first
  policy's middle rule and back (new PolicyConfig with that policy replaced; set_config). compile =
  set_workload/set_config + host_program; apply = NftBackend.apply (diff, render, plan, the
  nft transaction); kernel CPU = the transaction's system time."""
    )


def _extra(results: Results, case: str) -> str:
    """How much longer a new connection takes than with a1, from the median rates."""
    found = []
    for path in PATHS:
        rate, base = (results.median(k, path, "conn_per_s") for k in (case, "a1"))
        if rate and base:
            found.append(1 / rate - 1 / base)
    if not found:
        return "-"
    return " / ".join(f"{x * 1e6:+,.0f} us" for x in found)


def paired_table(results: Results) -> str:
    """The paired phase: median and quartiles of case/baseline over the pairs."""
    rows = []
    for metric, label, base in (
        ("conn_per_s", "new connections/s", "a1"),
        ("gbit_per_s", "throughput", "a0"),
    ):
        for case, per_path in results.paired.get(metric, {}).items():
            cells = [label, f"{case} vs {base}"]
            for path in PATHS:
                ratio = results.paired_ratio(case, path, metric)
                spread = results.paired_spread(case, path, metric)
                quart = f" ({spread[0]:.2f}-{spread[1]:.2f})" if spread else ""
                cells.append(f"{ratio:.3f}{quart}" if ratio is not None else "-")
            cells.append(str(max((len(v) for v in per_path.values()), default=0)))
            rows.append(cells)
    if not rows:
        return ""
    return _table(
        ["metric", "pair", "same-host ratio (quartiles)", "cross-host ratio (quartiles)", "pairs"],
        rows,
    )


def interpretation(results: Results) -> str:
    plan = results.plan
    lines = []
    for n in plan.hyperwall:
        same = results.ratio(f"b-{n}", "a1", "same-host", "conn_per_s")
        cross = results.ratio(f"b-{n}", "a1", "cross-host", "conn_per_s")
        tput = results.ratio(f"b-{n}", "a0", "same-host", "gbit_per_s")
        lines.append(
            f"- hyperwall at {n:,} rules: {_pct(same)} (same-host) and {_pct(cross)} "
            f"(cross-host) of a1's connection rate ({_extra(results, f'b-{n}')} per new "
            f"connection than a1); throughput {_pct(tput)} of a0 (same-host)."
        )
    for kind, sizes in (("c", plan.linear), ("c-legacy", plan.legacy), ("d", plan.appliance)):
        for n in sizes:
            same = results.ratio(f"{kind}-{n}", "a1", "same-host", "conn_per_s")
            cross = results.ratio(f"{kind}-{n}", "a1", "cross-host", "conn_per_s")
            lines.append(
                f"- {NAMES[kind]} at {n:,} rules: {_pct(same)} / {_pct(cross)} of a1's "
                f"connection rate (same-host / cross-host; {_extra(results, f'{kind}-{n}')} per "
                "new connection than a1)."
            )
    return "\n".join(lines)


FINDINGS = """Findings (from profiling and side experiments on the FIRST version, which kept every
folded block in concatenated interval sets; they led to the exact-match hash sets measured
above, see docs/design/dataplane.md "Block sets"; 2026-11-27, not re-measured by each run):

- **A new connection's cost in hyperwall is the concatenated interval set lookup (nftables
  `pipapo`), and it grows with the number of elements that match the leading fields.** A
  folded block is looked up as `ip saddr . ip daddr . meta l4proto . th dport`. When a policy's
  rules share their source (the classic "from X to the server on port P_i"; here every rule of
  the client's policy), every element matches the first three fields and pipapo's bitmap refill
  walks all of them for each new connection. `perf -C 1` during the connection-rate test at
  10,000 rules: `nft_pipapo_avx2_refill` 21.6% + `nft_pipapo_avx2_fill` 9.9% of all samples
  on that vCPU, in the client's softirq context. Policies whose source does not match cost
  little (the lookup fails in the first field), so 100,000 rules in 10 policies cost about what
  the one matching 10,000-element block costs. At 10,000 rules this one lookup costs about as
  much as walking 10,000 linear iptables-nft rules (b/c was 0.6-0.7x in one full run and
  1.3-1.9x in another), far from 4x.
- **The field order fixes it.** Side experiment, the same 10,000 rules in the appliance (d),
  same-host, 5 interleaved rounds of 2 s, median connections/s: a1 5,227; b hyperwall 1,396;
  d with `saddr . daddr . l4proto . dport` 1,561; d with `th dport . meta l4proto . ip saddr .
  ip daddr` **3,833** (73% of a1 even through the hairpin). Loading that set took 0.34 s instead
  of 3.5 s (10,000 elements) and 2.97 s instead of 37 s (100,000). Putting the most selective
  field (the port) first in the block's concatenation is the single change that would move
  the data-plane and load targets the most.
- **Loading pipapo sets is slow and grows with the set.** `perf` of `nft -f` of one
  10,000-element set (source first): ~88% in `nft_pipapo_avx2_refill`/`fill` (every inserted
  element is first looked up to refuse overlaps, and that lookup walks every element with the
  same source); 1,000 elements load in ~50 ms, 10,000 in ~3.7 s, 30,000 in ~11.8 s, 100,000 in
  ~37 s, all kernel CPU. KERNEL_FACTS' 381 ms per 100,000 elements was a plain set.
- **Deleting pipapo elements costs time proportional to the set**: `nft_pipapo_remove` ~97% of
  the time; one element out of a 10,000-element set costs ~60-130 ms of kernel CPU (~10 ms at
  1,000; 1,000 deletions from 10,000 took 102 s); with the port first, ~15-30 ms (nft process
  included). A rule edit deletes one element of its policy's block, and a label change that
  takes an address out of a folded group deletes one element per rule using the group (10 here),
  so incremental changes are bounded by block size: blocks of 10,000 rules cannot meet 50 ms.
- **The compile side of an incremental change is proportional to the change** since each
  chain keeps its per-rule elements and is re-folded only around the rules that changed
  (`compiler/fold.py`, docs/design/compiler.md); before that, a rule edit or a membership
  change of a folded group re-folded the policy's whole chain (100-650 ms for a 10,000-rule
  policy). The apply side sends element texts written directly (`dataplane/nft/json_text.py`)
  and plans a delta without walking whole sets (docs/design/dataplane.md).
- **Throughput is noise-dominated here.** Bulk traffic never reaches the rules (conntrack
  accepts established packets first; per packet there is one base chain with an
  interface . source-address lookup and the ct state compare), but single-stream iperf3 on
  this shared 2-vCPU machine varied +-50% within a case (a0 alone 4.3-17.8 Gbit/s over 8
  rounds in a side experiment): the rounds' ratios should be read with their min-max ranges,
  and the target is judged on the paired phase (many short pairs, each case next to a0).
- **Measuring a firewall's CPU cost directly** (side experiment after the rounds proved too
  noisy to tell 3% apart): `perf record -C 1` during the connection-rate test, share of the
  vCPU in nf_tables functions (`nft_*`, pipapo, rhash, jhash, `nf_hook_slow`). Conntrack-only
  a1: 1.6-2.0%. Hyperwall before this session's changes: 5.6% at 10 rules, 7.0% at 100,000;
  the per-packet interface . MAC . IP lookup alone ~2.8% (a1 plus only those two rules: 4.7%)
  and the second base chain ~1%; one pipapo lookup per connection (a 3-port range rule)
  0.6-0.8%. After (one base chain, interface . IP per packet, MAC on new connections, short
  port ranges as hash elements): 4.3-4.9% at 10 rules, 6.3-6.4% at 100,000 (ten hash
  lookups per new connection, one per policy on the server's path), with the run-to-run
  connection rate itself moving +-10%.
- **Session 4 (same method, us of CPU per connection in nf_tables functions above a1,
  10 rules):** an established packet first goes to chain `established`, which accepts a
  packet not from a VM on the interface-name prefix and one from a VM on a hit in
  `iifname . ip saddr`; a new connection is dispatched by one lookup at each end
  (`iifname . ether saddr . ip saddr` from a VM, `oifname . ip daddr` to one), which is
  also the anti-spoofing and own-address check. Same host ~7.8 -> ~6.3, cross host
  ~11.9 -> ~7.8 (a connection costs ~210 / ~245 us of CPU in all). Side experiments
  (40 interleaved pairs, cross host, against a1): the
  same program with no per-packet source check at all 0.99, with the check in per-VM
  netdev ingress chains instead (constants, no name load) 0.955, with the check as
  rendered 0.962: the check costs ~3%, and netdev chains are no cheaper here. This
  kernel has no flowtable (`CONFIG_NF_FLOW_TABLE` is not set: `flow add` fails), the
  only way for established packets to skip conntrack and the forward hook, so no stateful
  firewall can beat a1's throughput or connection rate on it.
- **Loading from scratch** now sends the big exact block sets' elements as one nfnetlink
  batch (`NFT_MSG_NEWSETELEM`, written with `struct`) instead of through libnftables:
  120,000 elements in ~0.07 s of Python and ~0.3-0.4 s of kernel time, against 0.8-0.9 s
  on two threads before."""


def render_section(results: Results, command: str, plot: str | None) -> str:
    target_rows = targets(results)
    parts = [
        SECTION,
        "",
        f"Run {results.started} with `{command}` (git `{results.machine.get('git')}`), "
        f"{results.seconds / 60:.1f} min in all.",
        "",
        method_text(results),
        "",
        "### Targets",
        "",
        _table(["target (from the issue)", "measured", "result"], target_rows),
        "",
    ]
    paired = paired_table(results)
    if paired:
        parts += [
            "### Paired ratios (what the targets are judged on)",
            "",
            f"After the rounds, each case is measured right next to its baseline, alternating "
            f"which goes first: {results.plan.pairs} pairs of {results.plan.pair_seconds:g} s "
            f"for the connection rate (against a1; {results.plan.minor_pairs} for the sizes "
            f"no target names), {results.plan.throughput_pairs} pairs of "
            f"{results.plan.throughput_pair_seconds} s for throughput (against a0: a1, and "
            "hyperwall at the smallest and largest rule counts). The median of the pairs' "
            "ratios is far steadier than the ratio of two cases' medians over a few rounds "
            "(which moved +-15% between runs here). The 4x target divides hyperwall's paired "
            "ratio by c's.",
            "",
            paired,
            "",
        ]
    parts += [
        "### New connections per second (client -> server; rules evaluated on the first packet)",
        "",
        metric_table(results, "conn_per_s", 0, ("a1", "a0")),
        "",
        "### TCP throughput, Gbit/s (iperf3, one stream)",
        "",
        metric_table(results, "gbit_per_s", 2, ("a0", "a1")),
        "",
        "### Request/response latency over one TCP connection (64 bytes each way)",
        "",
        latency_table(results),
        "",
    ]
    if plot:
        parts += [f"![data plane: connection rate, throughput, latency vs rules]({plot})", ""]
    parts += [
        "### Program shape (hyperwall, host A) and compile times",
        "",
        shape_table(results),
        "",
        "### Loading each case's firewall (the kernel transaction into an empty table)",
        "",
        loads_table(results),
        "",
        "### Control path (hyperwall, host A): full load, one label change, one rule edit",
        "",
        control_table(results),
        "",
        "### A host programmed from scratch",
        "",
        scratch_table(results),
        "",
    ]
    for name, rows in results.profiles.items():
        parts += [f"cProfile, {name} (top functions by own time):", "", profile_table(rows), ""]
    parts += [
        f"Probe to a port no rule admits (tcp/{policy.DENIED_PORT}; same-host/cross-host): "
        + probes_text(results)
        + ".",
        "",
    ]
    errors = [
        f"{case} {path}: {'; '.join(sorted(set(msgs)))}"
        for case, per in results.errors.items()
        for path, msgs in per.items()
    ]
    if errors:
        parts += ["Errors during measurements: " + " | ".join(errors), ""]
    parts += ["Interpretation:", "", interpretation(results), "", FINDINGS, ""]
    return "\n".join(parts).rstrip() + "\n"


# -- the plot --------------------------------------------------------------------------


def write_plot(results: Results, out: Path) -> None:
    """Connection rate, throughput and p50 latency against the rule count, per case."""
    matplotlib: Any = importlib.import_module("matplotlib")
    matplotlib.use("Agg")
    plt: Any = importlib.import_module("matplotlib.pyplot")
    plan = results.plan
    panels = (
        ("conn_per_s", "new connections / s"),
        ("gbit_per_s", "throughput, Gbit/s"),
        ("rtt_p50_us", "request/response p50, us"),
    )
    fig, axes = plt.subplots(1, 3, figsize=(16, 5.2))
    colors = {"a0": "black", "a1": "grey", "b": "tab:blue", "c": "tab:red"}
    colors |= {"c-legacy": "tab:orange", "d": "tab:green"}
    styles = {"same-host": "-", "cross-host": "--"}
    sizes = sorted({n for n in (*plan.hyperwall, *plan.linear, *plan.appliance, *plan.legacy)})
    for ax, (metric, title) in zip(axes, panels, strict=True):
        for path, style in styles.items():
            for kind in ("a0", "a1"):
                value = results.median(kind, path, metric)
                if value is not None:
                    ax.axhline(value, color=colors[kind], linestyle=style, linewidth=1)
            for kind, ns in (
                ("b", plan.hyperwall),
                ("c", plan.linear),
                ("c-legacy", plan.legacy),
                ("d", plan.appliance),
            ):
                xs = [n for n in ns if results.median(f"{kind}-{n}", path, metric) is not None]
                ys = [results.median(f"{kind}-{n}", path, metric) for n in xs]
                if xs:
                    ax.plot(xs, ys, style, marker="o", color=colors[kind])
        ax.set_xscale("log")
        if metric == "conn_per_s":
            ax.set_yscale("log")
        else:
            ax.set_ylim(bottom=0)
        ax.set_xticks(sizes)
        ax.set_xticklabels([f"{n:,}" for n in sizes], rotation=30)
        ax.set_xlabel("rules")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
    handles = [
        plt.Line2D([], [], color=colors[k], marker="" if k in ("a0", "a1") else "o", label=NAMES[k])
        for k in colors
    ]
    handles += [plt.Line2D([], [], color="black", linestyle=s, label=p) for p, s in styles.items()]
    fig.legend(handles=handles, loc="lower center", ncol=8, fontsize=8)
    fig.suptitle(f"hyperwall data plane, {results.started}: medians of {plan.rounds} rounds")
    fig.tight_layout(rect=(0, 0.07, 1, 0.95))
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
