"""`benchmarks/hypervisor`'s discover part on a small node file: every domain is managed and
the report renders; nothing is timed here (the lab part runs in tests/lab's guest tests)."""

from __future__ import annotations

from benchmarks.hypervisor import Series, section
from benchmarks.hypervisor_discover import run


def test_discover_run_and_report() -> None:
    result = run(domains=30, repeat=1)
    assert result.domains == 30 and result.managed == 30
    series = Series(enforced=[0.05, 0.06], event=[0.01, 0.02])
    text = section(result, series, series, "{}")
    assert text.startswith("## Hypervisor integration")
    assert "label change -> enforced | 2 |" in text and "over 30 domains" in text
