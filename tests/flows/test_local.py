"""Local flow logs: every host's files (rotated ones too) merged by time and filtered with
the shared predicate; bad lines are skipped and counted."""

from __future__ import annotations

import json
from pathlib import Path

from hyperwall.flows.filter import FlowFilter, time_us
from hyperwall.flows.local import read_local
from hyperwall.flows.record import FlowRecord
from hyperwall.flows.writer import FlowLogWriter


def _write(path: Path, host: str, times: list[int], rule: str = "acme/p/r") -> None:
    with FlowLogWriter(path, max_bytes=400, backups=5) as writer:
        writer.write(
            [
                FlowRecord(time=t, host=host, workload="acme/web-1", rule=rule, action="drop")
                for t in times
            ]
        )


def test_merged_by_time_across_hosts_and_rotations(tmp_path: Path) -> None:
    a, b = tmp_path / "hv1" / "flows.jsonl", tmp_path / "hv2" / "flows.jsonl"
    _write(a, "hv1", [1, 4, 5, 9, 12])
    _write(b, "hv2", [2, 3, 10], rule="acme/q/s")
    assert (tmp_path / "hv1" / "flows.jsonl.1").exists()  # some of it was rotated
    with b.open("a") as f:
        f.write('{"time": "not a time"}\n{"torn\n')
    records, skipped = read_local([a, b], FlowFilter())
    assert [time_us(r["time"]) for r in records] == [1, 2, 3, 4, 5, 9, 10, 12]
    assert skipped == 2
    only, _ = read_local([a, b], FlowFilter(rule="acme/q"))
    assert [r["host"] for r in only] == ["hv2"] * 3
    since, _ = read_local([a, b], FlowFilter(since=5))
    assert [time_us(r["time"]) for r in since] == [5, 9, 10, 12]
    newest, _ = read_local([a, b], FlowFilter(), limit=2)
    assert [time_us(r["time"]) for r in newest] == [10, 12]
    assert read_local([tmp_path / "none" / "flows.jsonl"], FlowFilter()) == ([], 0)
    assert json.loads(json.dumps(records[0]))["workload"] == "acme/web-1"
