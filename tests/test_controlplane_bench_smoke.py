"""`benchmarks/controlplane` on the tiny fleet with SQLite: the whole path runs (manager
process, simulated agents, label changes) and every affected agent reports every change;
nothing is timed here."""

from __future__ import annotations

import argparse
from pathlib import Path

from benchmarks.controlplane import counts, relabel_documents, report, run_store
from benchmarks.synthetic import TINY, generate


def test_tiny_run_realizes_every_change(tmp_path: Path) -> None:
    fleet = generate(TINY)
    args = argparse.Namespace(procs=1, changes=3, burst=2, pause=0.0, seed=3)
    result = run_store("sqlite", fleet.documents, args, tmp_path)
    assert len(result.fleet_wide) == 3 and len(result.apply_calls) == 3
    assert sum(result.affected) > 0  # the changes moved workloads between groups
    assert len(result.per_agent) == sum(result.affected)
    assert result.burst == 2 and result.burst_realized > 0
    text = report(TINY, counts(fleet.documents), [result], argparse.Namespace(**vars(args)))
    assert text.startswith("## Control plane") and "| sqlite |" in text


def test_label_changes_move_workloads() -> None:
    docs = generate(TINY).documents
    changed = relabel_documents(docs, 4, seed=1)
    assert len(changed) == 4
    before = {(d["metadata"].get("tenant"), d["metadata"]["name"]): d for d in docs}
    for doc, _ in changed:
        old = before[(doc["metadata"].get("tenant"), doc["metadata"]["name"])]
        assert doc["metadata"]["labels"] != old["metadata"]["labels"]
        assert doc["spec"] == old["spec"]
