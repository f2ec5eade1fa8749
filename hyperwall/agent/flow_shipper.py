"""Shipping the host's flow log to the manager: one thread that tails the flow log files
(`flows.tail`) and POSTs batches to `/v1/agent/HOST/flows` (`flows.batch`), only in agents
that follow a manager.

Backpressure and memory: one batch at a time (at most `MAX_RECORDS` records, `MAX_BYTES`
bytes), never more in memory; the files are the buffer. Any failure (manager away, 429
busy, 503, a timeout) keeps the position and retries the same bytes after a jittered
exponential backoff (`manager_source.backoff`, capped at `max_backoff`); meanwhile the
agent keeps writing its flow log, and the shipper catches up batch by batch when the
manager answers again. What is not shipped before the writer rotates it out is lost
(`Tailer.lost_files`): the flow log's size bound is also the outage the shipping survives.

Exactly once: the position is saved after the manager acknowledged a batch; the manager
stores each batch with the host's position in one transaction and does not store a batch
again that starts before it (a crash between its commit and our save): its answer is where
to go on from, which this shipper saves. A record the manager would refuse (`record_problem`)
is skipped here and counted, so one bad line cannot stop the shipping; a 422 for a whole
batch (a manager of another version) is logged, counted and skipped likewise.
"""

from __future__ import annotations

import json
import logging
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hyperwall.agent.manager_source import Client, backoff
from hyperwall.flows.api import FlowBatchResult
from hyperwall.flows.batch import MAX_BYTES, MAX_RECORDS, record_problem
from hyperwall.flows.tail import Chunk, Position, Tailer

log = logging.getLogger(__name__)

CURSOR_FILE = "flow-ship.json"  # in the agent's state directory


class ShipError(Exception):
    """The manager did not take a batch: `status` is its HTTP status (0: no answer)."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"HTTP {status}: {detail}" if status else detail)
        self.status = status


@dataclass
class ShipCounts:
    """What the shipper did since the agent started (the agent's metrics read these)."""

    shipped: int = 0  # records the manager stored
    batches: int = 0
    failures: int = 0  # batches not taken (retried)
    rejected: int = 0  # records skipped: the manager would refuse them


def post_batch(client: Client, chunk: Chunk, records: list[dict[str, Any]]) -> FlowBatchResult:
    body = {"file": chunk.file, "offset": chunk.offset, "end": chunk.end, "records": records}
    req = urllib.request.Request(
        client.base + "/flows", data=json.dumps(body).encode(), method="POST"
    )
    req.add_header("Authorization", f"Bearer {client.token}")
    req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=30, context=client.context) as resp:
            return FlowBatchResult.model_validate_json(resp.read())
    except urllib.error.HTTPError as exc:
        raise ShipError(exc.code, exc.read()[:300].decode(errors="replace")) from None
    except (OSError, ValueError) as exc:  # refused, reset, timeout; a bad answer
        raise ShipError(0, str(exc) or type(exc).__name__) from None


class FlowShipper:
    def __init__(
        self,
        client: Client,
        host: str,
        flow_log: Path,
        state_dir: Path,
        max_backoff: float = 10.0,
        poll: float = 0.5,
    ) -> None:
        self.client = client
        self.host = host
        self.tailer = Tailer(flow_log, state_dir / CURSOR_FILE)
        self.max_backoff = max_backoff
        self.poll = poll
        self.counts = ShipCounts()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name="flow-shipper", daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def step(self) -> bool:
        """Ship one batch; True if there may be more right away. Raises ShipError."""
        chunk = self.tailer.read(MAX_RECORDS, MAX_BYTES)
        if chunk is None:
            return False
        records = [r for r in chunk.records if record_problem(r, self.host) is None]
        self.counts.rejected += len(chunk.records) - len(records)
        if not records:  # only unreadable lines: move on without a request
            self.tailer.save(Position(chunk.file, chunk.end))
            return True
        try:
            answer = post_batch(self.client, chunk, records)
        except ShipError as exc:
            if exc.status != 422:
                raise
            log.error("flow shipping: the manager refused a batch, skipped: %s", exc)
            self.counts.rejected += len(records)
            self.tailer.save(Position(chunk.file, chunk.end))
            return True
        self.counts.shipped += answer.stored
        self.counts.batches += 1
        offset = answer.offset if answer.file == chunk.file else chunk.end
        self.tailer.save(Position(chunk.file, offset))
        return True

    def run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                more = self.step()
            except ShipError as exc:
                failures += 1
                self.counts.failures += 1
                delay = backoff(failures, cap=self.max_backoff)
                log.warning("flow shipping: %s; again in %.1fs", exc, delay)
                self._stop.wait(delay)
                continue
            except OSError as exc:  # the files or the cursor: keep trying, slowly
                failures += 1
                log.warning("flow shipping: %s", exc)
                self._stop.wait(backoff(failures, cap=self.max_backoff))
                continue
            failures = 0
            if not more:
                self._stop.wait(self.poll)
