"""Smoke test of the data-plane benchmark (`benchmarks/dataplane`).

The pure parts (rule layout, folding, rival rulesets, report section) always run. The lab
run needs root, iproute2, nft, iptables, iperf3, gcc and python3-nftables: it builds the
topology at a tiny size (10 rules), runs every tool for about a second, and asserts the
structure of the results, not the numbers; then that no `hwb-` namespace is left.
"""

from __future__ import annotations

import importlib.util
import math
import os
import shutil
from pathlib import Path

import pytest

from benchmarks import dataplane, dataplane_report
from benchmarks import dataplane_policy as policy
from benchmarks import dataplane_topology as topo
from benchmarks.dataplane_results import PATHS, Results
from benchmarks.results_file import write_section
from hyperwall.compiler.fleet import FleetCompiler
from hyperwall.compiler.program import LookupRule

TOOLS = ("ip", "nft", "iptables-restore", "iperf3", "gcc", "taskset", "conntrack", "ss")


def _lab_missing() -> str | None:
    if os.geteuid() != 0:
        return "needs root (network namespaces)"
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        return f"missing {', '.join(missing)}"
    if importlib.util.find_spec("nftables") is None:
        return "python3-nftables is not importable"
    return None


# -- pure ------------------------------------------------------------------------------


def test_rules_fold_into_one_lookup_per_policy() -> None:
    catalog = policy.catalog(1_000, per_policy=400)
    program = FleetCompiler(catalog.config, catalog.workloads.values()).host_program(policy.HOST_A)
    svc = [c for name, c in program.chains.items() if name.startswith("in:")]
    assert len(svc) == 3  # 400 + 400 + 200 rules
    assert all(len(c.items) == 1 and isinstance(c.items[0], LookupRule) for c in svc)
    assert sum(len(b.elements) for b in program.block_sets.values()) == 1_000
    shape = dataplane.program_shape(program)
    assert shape["policy_chains"] == 3 and shape["block_elements"] == 1_000


def test_the_test_ports_are_admitted_by_the_last_rule_only() -> None:
    rules = list(policy.rules_of(25, per_policy=10))
    assert len(rules) == 25
    assert rules[-1].ports == policy.TEST_PORTS and rules[-1].source == policy.CLIENT.ip
    assert all(r.ports != policy.TEST_PORTS for r in rules[:-1])
    linear = policy.iptables_restore(25, per_policy=10).splitlines()
    accepts = [line for line in linear if "--dport" in line]
    assert len(accepts) == 25 and "5201:5203" in accepts[-1]
    assert linear[4].endswith("ESTABLISHED,RELATED -j ACCEPT")  # conntrack first
    assert policy.appliance_ruleset(25, per_policy=10).count(" . tcp . ") == 25


def test_write_section_replaces_only_its_own(tmp_path: Path) -> None:
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n\n## Policy compiler (benchmarks/compile)\n\nkeep me\n")
    write_section(doc, f"{dataplane_report.SECTION}\n\nfirst\n")
    write_section(doc, f"{dataplane_report.SECTION}\n\nsecond\n")
    text = doc.read_text()
    assert "keep me" in text and "second" in text and "first" not in text
    assert text.count(dataplane_report.SECTION) == 1


# -- the lab ---------------------------------------------------------------------------


@pytest.mark.lab
@pytest.mark.kernel
@pytest.mark.slow
@pytest.mark.skipif(_lab_missing() is not None, reason=_lab_missing() or "")
def test_benchmark_runs_at_a_tiny_size_and_cleans_up(tmp_path: Path) -> None:
    try:
        with topo.benchmark_lock():
            pass
    except RuntimeError as exc:
        pytest.skip(str(exc))  # a real benchmark run owns the namespaces right now
    plan = dataplane.SMOKE
    tools = dataplane.build_tools(tmp_path / "tools")
    logs: list[str] = []
    results = dataplane.run_benchmark(plan, tools, logs.append)

    assert topo.namespaces() == []
    keys = [c.key for c in plan.cases()]
    assert keys == ["a0", "a1", "b-10", "c-10", "d-10"]
    assert set(results.samples) == set(keys)
    for key in keys:
        for path in PATHS:
            metrics = results.samples[key][path]
            assert set(metrics) == set(dataplane.METRICS)
            for values in metrics.values():
                assert len(values) == plan.rounds
                assert all(not math.isnan(v) and v > 0 for v in values), (key, path, metrics)
    assert results.errors == {}
    for key in keys:  # no firewall answers "refused"; every firewall drops the port
        want = "refused" if key in ("a0", "a1") else "timeout"
        assert results.probes[key] == {p: want for p in PATHS}
    assert [load["mode"] for load in results.loads["b-10"]] == ["sync", "sync"]
    assert {c["what"] for c in results.changes[10]} == {"in", "out"}
    assert all(c["mode"] == "incremental" and c["delta"] > 0 for c in results.changes[10])
    assert len(results.edits[10]) == 2 * plan.edits
    assert results.scratch["rules"] == plan.scratch_rules
    assert results.scratch["total"] == pytest.approx(
        results.scratch["compile"] + results.scratch["apply"]
    )
    assert results.shapes[10]["policy_chains"] == 1
    for metric, case in (("conn_per_s", "b-10"), ("gbit_per_s", "b-10")):
        for path in PATHS:
            pairs = results.paired[metric][case][path]
            assert len(pairs) >= 1 and all(v > 0 for pair in pairs for v in pair)

    section = dataplane_report.render_section(results, "benchmarks/dataplane (smoke)", None)
    assert section.startswith(dataplane_report.SECTION)
    for heading in ("### Targets", "### Paired ratios", "### New connections", "### Control path"):
        assert heading in section
    again = Results.from_json(results.to_json())
    assert dataplane_report.render_section(again, "x", None).count("| b hyperwall") >= 3
    if importlib.util.find_spec("matplotlib") is not None:
        plot = tmp_path / "plot.png"
        dataplane_report.write_plot(results, plot)
        assert plot.stat().st_size > 0
