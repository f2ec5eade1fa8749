"""Smoke test of `benchmarks/compile` on a tiny fleet: it runs and reports. No timing asserted."""

from __future__ import annotations

import math
from pathlib import Path

from benchmarks.compile import SECTION, Results, render_section, run_benchmark
from benchmarks.results_file import write_section
from benchmarks.synthetic import TINY, generate

SIZE_KEYS = {"endpoints", "chains", "chain_items", "address_elements", "block_elements"}


def test_generator_is_deterministic_and_has_the_shape() -> None:
    fleet = generate(TINY)
    assert fleet.documents == generate(TINY).documents
    kinds = [d["kind"] for d in fleet.documents]
    assert kinds.count("Workload") == TINY.workloads
    assert kinds.count("Group") == TINY.groups
    assert kinds.count("Policy") == TINY.policies
    assert fleet.stats["rules"] == TINY.rules
    assert generate(TINY.with_seed(2)).documents != fleet.documents


def _run() -> Results:
    return run_benchmark(TINY, repeat=1, changes=3, edits=3, checks=2, profile_mode=True)


def test_benchmark_results_structure(tmp_path: Path) -> None:
    results = _run()
    ms = results.measurements
    for key in (
        "validate",
        "full.construct",
        "full.hosts",
        "full.total",
        "host.fresh",
        "host.fresh_warm",
        "host.warm",
        "label.total",
        "label.set",
        "label.program",
        "label.diff",
        "label.baseline",
        "edit.total",
        "edit.baseline",
        "agent.label.total",
        "agent.edit.total",
    ):
        assert ms[key].samples, key
        assert all(s >= 0 for s in ms[key].samples), key
        assert not math.isnan(ms[key].median), key
    assert len(ms["host.warm"].samples) == TINY.hosts
    assert ms["host.fresh"].passed in (True, False)
    assert ms["validate"].passed is None  # no target
    assert set(results.host_sizes) >= SIZE_KEYS
    assert results.host_sizes["endpoints"]["total"] == TINY.workloads
    assert set(results.changes) == {"label", "edit", "agent.label", "agent.edit"}
    for key, stats in results.changes.items():
        assert 0 < stats.count <= 3, key
        assert len(stats.summaries) == stats.count
        assert all("size" in s for s in stats.summaries)
        assert stats.checked == min(1 if key.startswith("agent.") else 2, stats.count)
    assert "host.fresh" in results.profiles
    assert results.profiles["host.fresh"]["own"]

    section = render_section(results, "benchmarks/compile --tiny")
    assert section.startswith(SECTION + "\n")
    assert "| measurement" in section and "Interpretation:" in section

    # the section is replaced in place; other sections are kept
    path = tmp_path / "benchmarks.md"
    path.write_text("# Benchmarks\n\n## Other\n\nkept\n")
    write_section(path, section)
    write_section(path, section.replace("Interpretation:", "Interpretation (again):"))
    text = path.read_text()
    assert text.count(SECTION) == 1
    assert "## Other\n\nkept\n" in text
    assert "Interpretation (again):" in text and "Interpretation:\n" not in text
