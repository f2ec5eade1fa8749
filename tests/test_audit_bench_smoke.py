"""`benchmarks/audit` on the tiny fleet: the whole path runs (the fleet applied through a
`Manager`, assertions chosen so they hold, label changes re-checked by the gate, the ledger
verified, a report assembled) and the section is written; nothing is timed here."""

from __future__ import annotations

import asyncio
from pathlib import Path

from benchmarks import audit
from benchmarks.results_file import write_section


def test_tiny_run_checks_and_reports(tmp_path: Path) -> None:
    result = asyncio.run(audit.run("tiny", changes=2, assertions=3, seed=1))
    assert result["assertions"] == 3 and result["full_checked"] == 3
    assert len(result["baseline"]) == 2 and len(result["gated"]) + result["refused"] == 2
    assert max(result["checked"]) >= 1  # the gate had assertions to re-check
    assert result["records"] == 1 + 2 + 1 + len(result["gated"])  # fleet, changes, assertions, …
    assert result["report_groups"] > 0
    text = audit.section(result, (0.5, 0.5, 0.5), 1.0)
    assert text.startswith("## Audit and the assertion gate") and "| gate adds" in text
    out = tmp_path / "benchmarks.md"
    write_section(out, text)
    assert out.read_text().count("## Audit and the assertion gate") == 1
