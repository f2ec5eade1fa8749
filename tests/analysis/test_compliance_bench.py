"""Smoke test of `benchmarks/compliance` on a tiny fleet: it runs, checks real assertions and
reports every measurement. No timing is asserted."""

from __future__ import annotations

import random
from pathlib import Path

from benchmarks.compile import raw_documents
from benchmarks.compliance import SECTION, make_assertions, render_section, run_benchmark
from benchmarks.results_file import write_section
from benchmarks.synthetic import TINY, generate
from hyperwall.analysis.assertions import check_assertions
from hyperwall.policy.catalog import build_catalog


def test_the_assertions_are_valid_documents_and_some_hold() -> None:
    fleet = generate(TINY).documents
    plain = build_catalog(raw_documents(fleet))
    docs = make_assertions(plain, random.Random(1))
    catalog = build_catalog(raw_documents([*fleet, *docs]))
    results = check_assertions(catalog)
    assert len(results) == len(docs) and any(r.holds for r in results)


def test_benchmark_runs_and_writes_its_section(tmp_path: Path) -> None:
    lines: list[str] = []
    results = run_benchmark(TINY, repeat=1, changes=3, reach_groups=None, log=lines.append)
    assert len(results.full) == 1 and results.held + results.failed > 0
    assert results.gate and len(results.gate) == len(results.touched) == len(results.incremental)
    assert results.reach and results.reach[-1][0] == TINY.groups
    assert [workloads for workloads, _, _, _ in results.lint] == [TINY.workloads]
    section = render_section(results, "benchmarks/compliance --test")
    count = results.held + results.failed
    assert section.startswith(SECTION) and f"full verification, {count} assertions" in section
    assert "the gate after a label change" in section and "checked whole" in section
    assert f"lint of the whole fleet of {TINY.workloads:,} workloads" in section
    out = tmp_path / "benchmarks.md"
    write_section(out, section)
    assert SECTION in out.read_text() and "reach matrix" in out.read_text()
