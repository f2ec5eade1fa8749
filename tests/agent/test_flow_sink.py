"""`agent.flow_sink`: batches from several threads land whole, one line per record, and are
counted."""

from __future__ import annotations

import threading
from pathlib import Path

from hyperwall.agent.flow_sink import FlowSink
from hyperwall.flows.record import FlowRecord, decode_lines


def test_threads_write_whole_batches(tmp_path: Path) -> None:
    sink = FlowSink(tmp_path / "log" / "flows.jsonl")

    def write(thread: int) -> None:
        for batch in range(50):
            sink.write([FlowRecord(time=i, host=f"t{thread}", sport=batch) for i in range(20)])

    threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    sink.close()
    lines = (tmp_path / "log" / "flows.jsonl").read_bytes().splitlines()
    records = [r for _, r in decode_lines(lines)]
    assert len(records) == sink.counts.written == 4 * 50 * 20
    # each batch of 20 is contiguous: the lock keeps batches whole
    for start in range(0, len(records), 20):
        batch = records[start : start + 20]
        assert {(r.host, r.sport) for r in batch} == {(batch[0].host, batch[0].sport)}
