"""`benchmarks/audit` on the tiny fleet: the whole path runs (the fleet applied through a
`Manager`, assertions chosen so they hold, label changes re-checked by the gate, the ledger
verified, a report assembled) and the section is written; nothing is timed here."""

from __future__ import annotations

import asyncio
from pathlib import Path

from benchmarks import audit
from benchmarks.results_file import write_section


def test_tiny_run_checks_and_reports(tmp_path: Path) -> None:
    result = asyncio.run(audit.run("tiny", changes=2, assertions=3, seed=1, lint=True))
    assert result["assertions"] == 3 and result["full_checked"] == 3
    gated = result["gated"]
    assert len(result["baseline"].applies) == 2 and len(gated.applies) + gated.refused == 2
    assert max(gated.checked) >= 1  # the gate had assertions to re-check
    assert len(gated.gate) == len(gated.applies)  # the gate's own time, per committed change
    assert result["records"] == 1 + 2 + 1 + len(gated.applies)  # fleet, changes, assertions, …
    assert result["report_groups"] > 0
    text = audit.section(result, (0.5, 0.5, 0.5), 1.0, lint=True)
    assert text.startswith("## Audit and the assertion gate") and "| of which the gate" in text
    out = tmp_path / "benchmarks.md"
    write_section(out, text)
    assert out.read_text().count("## Audit and the assertion gate") == 1
