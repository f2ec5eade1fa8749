"""Smoke test of `benchmarks/flowship`'s parts that need no manager process: the store and
its floor, the files' read floor, the section. No timing asserted."""

from __future__ import annotations

from pathlib import Path

from benchmarks.flowship import Results, bench_store, read_floor, render_section, write_log
from hyperwall.flows.tail import log_files


def test_store_and_read_floor_run(tmp_path: Path) -> None:
    store, floor = bench_store(tmp_path, 2)
    assert store > 0 and floor > 0
    log = tmp_path / "agent" / "flows.jsonl"
    write_log(log, 1500)
    assert log_files(log)
    assert read_floor(log, tmp_path) > 0


def test_section_names_every_row() -> None:
    r = Results(store_rate=1, store_floor=2, ship_rate=3, ship_floor=4, health_ms=1, query_ms=2)
    text = render_section(r, 10, 1)
    assert text.startswith("## Flow shipping (benchmarks/flowship)")
    for row in ("flow store", "shipping", "agent CPU", "GET /v1/flows"):
        assert row in text
