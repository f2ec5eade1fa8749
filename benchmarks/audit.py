"""Audit benchmark: what the assertion gate adds to an apply, the ledger's verification,
and the compliance report's assembly, on the synthetic fleet through a real `Manager`.

Setup: the fleet of `benchmarks/synthetic.py` (FULL: 10,000 workloads on 100 hosts, 1,000
groups, 1,000 policies, 10,000 rules) applied as one revision to a `Manager` on a SQLite
store in a temporary folder (in this process, no HTTP: the apply is `Manager.change`, the
work behind `POST /v1/apply`: incremental validation, the gate, the commit with its ledger
record, the fleet programs).

Measured, in one run:
- baseline: `--changes` single-workload label changes that move a workload of the
  assertions' tenant between groups, applied one at a time with no assertions in the fleet;
- `--assertions` assertions between groups of one tenant (each one's `expect` chosen so it
  holds: a group pair and a service its tenant's rules name, `deny` if nothing reaches,
  else `allow` if everything does, else another pair), applied as one revision: the gate
  checks them all (full verification);
- the same number of other label changes with the assertions in place: the gate re-checks
  only the assertions whose `from`/`to` select the moved workload (a change that would
  break one is refused and counted, not timed). "adds" = gated minus baseline, per
  percentile;
- `verify_store` over the whole ledger; `build_report` for the tenant of the assertions.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.controlplane import pct, relabel_documents
from benchmarks.results_file import write_section
from benchmarks.synthetic import FULL, QUICK, TINY, generate
from hyperwall.analysis.assertions import Checker
from hyperwall.manager.auth import PROVIDER_ADMIN, Principal
from hyperwall.manager.gate import AssertionsBroken
from hyperwall.manager.report import build_report
from hyperwall.manager.service import Manager
from hyperwall.policy.model import AssertionDef, Catalog, Peer
from hyperwall.policy.ports import parse_port_spec
from hyperwall.store.audit import verify_store
from hyperwall.store.sqlite import SqliteStore

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "benchmarks.md"
SHAPES = {"full": FULL, "quick": QUICK, "tiny": TINY}
ADMIN = Principal("bench", PROVIDER_ADMIN, None, None)


def step(text: str) -> None:
    """Progress on stderr (a full run takes minutes)."""
    print(f"{time.strftime('%H:%M:%S')} {text}", file=sys.stderr, flush=True)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:,.0f} ms" if seconds >= 0.01 else f"{seconds * 1000:.1f} ms"


def busiest_tenant(catalog: Catalog) -> str:
    """The tenant with the most groups (the assertions are about its groups)."""
    counts: dict[str, int] = {}
    for g in catalog.config.groups.values():
        if g.tenant is not None:
            counts[g.tenant] = counts.get(g.tenant, 0) + 1
    return max(sorted(counts), key=lambda t: counts[t])


def pick_assertions(catalog: Catalog, tenant: str, count: int, seed: int) -> list[dict[str, Any]]:
    """`count` Assertion documents about `tenant`'s groups that hold now."""
    rng = random.Random(seed)
    names = sorted(g.name for g in catalog.config.groups.values() if g.tenant == tenant)
    services = sorted(
        {
            str(s)
            for p in catalog.config.policies.values()
            if p.tenant == tenant
            for r in p.rules
            for s in r.services or ()
        }
    )
    checker = Checker(catalog)
    out: list[dict[str, Any]] = []
    tries = 0
    while len(out) < count and tries < count * 20:
        tries += 1
        src, dst = rng.choice(names), rng.choice(names)
        service = rng.choice(services)
        for expect in ("deny", "allow"):
            probe = AssertionDef(
                tenant,
                "probe",
                "",
                (Peer("group", f"{tenant}/{src}"),),
                (Peer("group", f"{tenant}/{dst}"),),
                (parse_port_spec(service),),
                "deny" if expect == "deny" else "allow",
            )
            if checker.check_one(probe).holds:
                out.append(_document(tenant, len(out), src, dst, service, expect))
                break
    return out


def _document(tenant: str, i: int, src: str, dst: str, service: str, expect: str) -> dict[str, Any]:
    return {
        "apiVersion": "hyperwall.io/v1",
        "kind": "Assertion",
        "metadata": {"name": f"bench-{i:03d}", "tenant": tenant},
        "spec": {
            "description": f"{src} to {dst} on {service}: {expect}",
            "from": [{"group": src}],
            "to": [{"group": dst}],
            "services": [service],
            "expect": expect,
        },
    }


@dataclass
class Changes:
    """Label changes applied one at a time: each committed change's apply time, the gate's
    own time inside it (`GateResult.seconds`, what `/metrics` shows), the assertions it
    re-checked, and how many changes the gate refused (not timed)."""

    applies: list[float] = field(default_factory=list)
    gate: list[float] = field(default_factory=list)
    checked: list[int] = field(default_factory=list)
    refused: int = 0


async def timed_changes(manager: Manager, docs: Sequence[dict[str, Any]]) -> Changes:
    out = Changes()
    for doc in docs:
        start = time.perf_counter()
        try:
            plan, info = await manager.change(ADMIN, [doc], [], "relabel")
        except AssertionsBroken:
            out.refused += 1
            continue
        out.applies.append(time.perf_counter() - start)
        assert info is not None
        out.gate.append(plan.assertions.seconds)
        out.checked.append(len(plan.assertions.checked))
    return out


async def run(
    shape_name: str, changes: int, assertions: int, seed: int, lint: bool
) -> dict[str, Any]:
    fleet = generate(SHAPES[shape_name])
    out: dict[str, Any] = {"shape": shape_name, "documents": len(fleet.documents)}
    with tempfile.TemporaryDirectory(prefix="hwb-audit-") as folder:
        store = await SqliteStore.open(os.path.join(folder, "store.db"))
        manager = Manager(store)
        await manager.start()
        try:
            step(f"applying the fleet ({len(fleet.documents):,} documents)")
            start = time.perf_counter()
            await manager.change(ADMIN, fleet.documents, [], "the fleet")
            out["fleet_apply"] = time.perf_counter() - start
            _, _, catalog = await manager.current_catalog()
            tenant = out["tenant"] = busiest_tenant(catalog)
            # label changes of the assertions' tenant: the ones the gate has work for
            moves = [
                doc
                for doc, _ in relabel_documents(fleet.documents, 50 * changes, seed)
                if doc["metadata"].get("tenant") == tenant
            ][: 2 * changes]
            assert len(moves) == 2 * changes, "not enough label changes in this fleet"
            step(f"{changes} label changes without assertions")
            out["baseline"] = await timed_changes(manager, moves[:changes])
            step(f"choosing {assertions} assertions that hold")
            _, _, catalog = await manager.current_catalog()
            start = time.perf_counter()
            rules = pick_assertions(catalog, tenant, assertions, seed)
            out["pick"] = time.perf_counter() - start
            out["assertions"] = len(rules)
            step("applying them (the gate checks them all)")
            start = time.perf_counter()
            plan, _ = await manager.change(ADMIN, rules, [], "assertions")
            out["full_apply"] = time.perf_counter() - start
            out["full_checked"] = len(plan.assertions.checked)
            out["full_gate"] = plan.assertions.seconds
            step(f"{changes} label changes with the assertions")
            out["gated"] = await timed_changes(manager, moves[changes:])
            step("verifying the ledger")
            start = time.perf_counter()
            verification = await verify_store(store)
            out["verify"] = time.perf_counter() - start
            out["records"] = verification.records
            assert verification.ok
            step("assembling the report")
            start = time.perf_counter()
            report = await build_report(manager, ADMIN, out["tenant"], with_lint=lint)
            out["report"] = time.perf_counter() - start
            out["report_groups"] = len(report["groups"])
        finally:
            await manager.stop()
    return out


def section(r: dict[str, Any], load: tuple[float, ...], took: float, lint: bool) -> str:
    base, gated = r["baseline"].applies, r["gated"].applies
    checked, refused, gate = r["gated"].checked, r["gated"].refused, r["gated"].gate
    rows = [
        ("label change apply, no assertions (baseline)", base),
        (f"label change apply, {r['assertions']} assertions", gated),
        ("of which the gate (`GateResult.seconds`, as `/metrics` shows it)", gate),
    ]
    lines = [
        "## Audit and the assertion gate (benchmarks/audit)",
        "",
        f"`benchmarks/audit` (see `benchmarks/audit.py`), {took:.0f} s in all; load average"
        f" {load[0]:.2f} at the start. Fleet: synthetic `{r['shape']}`"
        f" ({r['documents']:,} documents), one `Manager` on SQLite in this process;"
        " an apply is `Manager.change` (validation, gate, commit and ledger record, the"
        " fleet's programs).",
        "",
        "| measurement | n | p50 | p99 | max |",
        "|---|---|---|---|---|",
    ]
    for name, values in rows:
        lines.append(
            f"| {name} | {len(values)} | {ms(pct(values, 50))} | {ms(pct(values, 99))}"
            f" | {ms(max(values))} |"
        )
    added50 = pct(gated, 50) - pct(base, 50)
    added99 = pct(gated, 99) - pct(base, 99)
    lines += [
        f"| applies with minus without (two series of different changes: noisy) | |"
        f" {ms(added50)} | {ms(added99)} | |",
        "",
        f"- Gate target: adds < 100 ms p99 to an apply: the gate's own time inside the applies,"
        f" p99 {ms(pct(gate, 99))}: {'pass' if pct(gate, 99) < 0.1 else '**FAIL**'}. (The"
        " difference of the two series' percentiles mixes in how long each apply waited for"
        " the fleet's programs, which differs from change to change far more than the gate.)",
        f"- Assertions re-checked per label change: median {statistics.median(checked):g},"
        f" max {max(checked)} of {r['assertions']} (only those whose `from`/`to` select"
        f" the moved workload); {refused} of the {len(gated) + refused} changes were"
        " refused by the gate (they would have broken an assertion; not in the times).",
        f"- Full verification: applying the {r['assertions']} assertions (all checked by the"
        f" gate, {r['full_checked']}) took {ms(r['full_apply'])}, the apply included, of which"
        f" the gate {ms(r['full_gate'])}; target < 10 s:"
        f" {'pass' if r['full_gate'] < 10 else '**FAIL**'}.",
        f"- `verify_store` over the ledger ({r['records']:,} records, the fleet's first"
        f" revision holding {r['documents']:,} documents): {ms(r['verify'])}.",
        f"- Compliance report content for tenant {r['tenant']} ({r['report_groups']} groups in"
        f" the matrix, {r['assertions']} assertions, lint"
        f" {'included' if lint else 'left out'}): {ms(r['report'])}.",
        f"- The whole fleet's first apply: {r['fleet_apply']:.1f} s; choosing the assertions"
        f" (checker calls): {r['pick']:.1f} s.",
        "",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="full")
    parser.add_argument("--changes", type=int, default=30)
    parser.add_argument("--assertions", type=int, default=100)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument("--no-lint", action="store_true", help="a report without lint")
    args = parser.parse_args(argv)
    load = os.getloadavg()
    start = time.perf_counter()
    lint = not args.no_lint
    result = asyncio.run(run(args.shape, args.changes, args.assertions, args.seed, lint))
    text = section(result, load, time.perf_counter() - start, lint)
    print(text)
    if args.shape == "full" and not args.no_write:
        write_section(RESULTS, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
