"""The agent's one flow log writer, shared by the threads that make records: the NFLOG
reader (logged decisions) and the connection log (`agent.connection_log`). A lock makes
each batch one append and keeps rotation single-threaded (`flows.writer` is not
thread-safe); `counts` is what the metrics report as records written."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

from hyperwall.agent.metrics import FlowCounts
from hyperwall.flows.record import FlowRecord
from hyperwall.flows.writer import FlowLogWriter


class FlowSink:
    """Appends records to the flow log at `path`."""

    def __init__(self, path: Path, counts: FlowCounts | None = None) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._writer = FlowLogWriter(path)
        self._lock = threading.Lock()
        self.counts = counts if counts is not None else FlowCounts()

    def write(self, records: Sequence[FlowRecord]) -> None:
        """One batch, appended whole (OSError if the disk refuses: the caller counts it)."""
        with self._lock:
            self._writer.write(records)
            self.counts.written += len(records)

    def close(self) -> None:
        with self._lock:
            self._writer.close()
