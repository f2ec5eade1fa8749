"""The agent's flow log of logged decisions: a thread that reads the host's NFLOG group and
writes a record per logged packet, and every `summary_seconds` a summary record per rule
whose log rate limit suppressed records.

Counterpart of `nflog.reader` (the socket, opened in the agent's own namespace: the
host's), `nflog.decisions` (message -> record, pure), `nft.log_counters` (the counters
around each log statement) and the flow log writer (`write`, shared with the connection
records: `agent.flow_sink`). It reads the program in force (`program`) without a lock: the
reconciler replaces the reference, never the object; a new program gets a new
`Attributor`, which keeps the previous program's rule numbers (for packets logged before
the change and read after it).

Bounded memory under a flood: one read buffer and at most `BATCH` messages at a time; what
the thread cannot keep up with stays in the kernel's socket buffer, and what does not fit
there the kernel drops and this counts (`overruns`). The log rules' own rate limit
(`expr.LOG_RATE` per rule) keeps the rate low in the first place; what it suppresses is
counted by the kernel and reported here per rule. Counts are kept in `FlowLogStats` and
written to `STATE_DIR/flowlog.json` with every summary.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hyperwall.agent.metrics import FlowCounts
from hyperwall.compiler.program import HostProgram
from hyperwall.compiler.rule_numbers import parse_log_prefix
from hyperwall.dataplane.nflog.decisions import Attributor
from hyperwall.dataplane.nflog.messages import LogMessage
from hyperwall.dataplane.nflog.reader import NflogReader
from hyperwall.dataplane.nft.expr import LOG_GROUP
from hyperwall.dataplane.nft.kernel import NftKernel
from hyperwall.dataplane.nft.log_counters import (
    Reading,
    SuppressionTracker,
    log_chains,
    read_log_counters,
)
from hyperwall.dataplane.nft.plan import BRIDGE
from hyperwall.dataplane.nft.render import Options
from hyperwall.flows.record import FlowRecord

log = logging.getLogger(__name__)

BATCH = 2048  # messages read (and records written) at a time
SUMMARY_SECONDS = 10.0
NAMES = 4096  # interface names remembered (cleared on each new program)
MAX_RULES = 10_000  # rules whose suppressed totals are kept for the status


@dataclass
class FlowLogStats:
    records: int = 0  # decision records written
    suppressed: int = 0  # records the kernel's rate limit suppressed (summed)
    overruns: int = 0  # times the kernel dropped messages for lack of socket room
    foreign: int = 0  # messages of our group with a prefix that is not ours
    unmapped: int = 0  # records whose rule id could not be mapped back (rule null)
    lost: int = 0  # records a failed write lost (a full disk)
    errors: int = 0  # messages lost to an unexpected error making their records
    by_rule: dict[str, int] = field(default_factory=dict)  # suppressed per rule id


class FlowLog:
    """Decision records of host `host`, from its NFLOG group."""

    def __init__(
        self,
        host: str,
        program: Callable[[], HostProgram | None],
        options: Options,
        write: Callable[[Sequence[FlowRecord]], None],
        status_path: Path | None = None,
        summary_seconds: float = SUMMARY_SECONDS,
        counts: FlowCounts | None = None,
        group: int = LOG_GROUP,
    ) -> None:
        self.host = host
        self.group = group
        self.stats = FlowLogStats()
        self._program = program
        self._options = options
        self._write = write
        self._status_path = status_path
        self._summary_seconds = summary_seconds
        self._counts = counts  # the metrics' counts (`agent.metrics`)
        self._attributor: Attributor | None = None
        self._names: dict[int, str | None] = {}
        self._tracker = SuppressionTracker()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._reader: NflogReader | None = None

    def start(self) -> None:
        """Start the reading thread; it binds the group in this namespace (records from
        then on), and retries every second while the group is taken (a predecessor that is
        still going away)."""
        self._thread = threading.Thread(target=self._run, name="flow-log", daemon=True)
        self._thread.start()

    def _bind(self) -> NflogReader | None:
        while not self._stop.is_set():
            try:
                return NflogReader(self.group)
            except OSError as exc:
                log.warning("binding NFLOG group %d failed (retrying): %s", self.group, exc)
                self._stop.wait(1.0)
        return None

    def stop(self, timeout: float | None = None) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    # -- records --------------------------------------------------------------------------

    def _name(self, index: int) -> str | None:
        if index not in self._names:
            if len(self._names) >= NAMES:
                self._names.clear()
            try:
                self._names[index] = socket.if_indextoname(index)
            except OSError:
                self._names[index] = None  # gone already
        return self._names[index]

    def _current(self) -> Attributor | None:
        program = self._program()
        if program is None:
            return None
        if self._attributor is None or self._attributor.program is not program:
            self._attributor = Attributor(program, self._options.ifname, self._attributor)
            self._names.clear()  # interfaces come and go with programs: name them afresh
        return self._attributor

    def records(self, messages: Sequence[LogMessage], now_us: int) -> list[FlowRecord]:
        """The records of a batch of messages (counting those that are not ours)."""
        attributor = self._current()
        out: list[FlowRecord] = []
        for message in messages:
            record = (
                None
                if attributor is None
                else attributor.record(message, self._name, self.host, now_us)
            )
            if record is None:
                self.stats.foreign += 1
                continue
            if record.rule is None:
                self.stats.unmapped += 1
            out.append(record)
        return out

    def _emit(self, records: list[FlowRecord]) -> None:
        if not records:
            return
        try:
            self._write(records)
        except OSError as exc:  # a full disk: these records are lost, the agent goes on
            self.stats.lost += len(records)
            log.warning("writing %d flow records failed: %s", len(records), exc)

    # -- suppression ----------------------------------------------------------------------

    def _read_counters(self, kernel: NftKernel) -> Reading:
        attributor = self._current()
        if attributor is None:
            return {}
        reading: Reading = {}
        for chain in log_chains(attributor.program, self._options.mode):
            family, name = (
                ("bridge", chain[len(BRIDGE) :]) if chain.startswith(BRIDGE) else ("inet", chain)
            )
            try:
                listing = json.loads(kernel.command(f"list chain {family} hyperwall {name}"))
            except Exception:  # not there (yet, or any more): nothing to read
                continue
            reading.update(read_log_counters(chain, listing))
        return reading

    def summarize(self, reading: Reading, now_us: int) -> list[FlowRecord]:
        """Summary records of what was suppressed since the last reading."""
        attributor = self._current()
        out: list[FlowRecord] = []
        for prefix_text, count in sorted(self._tracker.update(reading).items()):
            prefix = parse_log_prefix(prefix_text)
            if prefix is None:
                continue
            rule = prefix.rule_id(attributor.numbers() if attributor is not None else None)
            out.append(
                FlowRecord(
                    time=now_us,
                    host=self.host,
                    kind="suppressed",
                    direction=prefix.direction,
                    action=prefix.action,
                    rule=rule,
                    suppressed=count,
                )
            )
            self.stats.suppressed += count
            key = rule or f"#{prefix.number:x}"
            if key in self.stats.by_rule or len(self.stats.by_rule) < MAX_RULES:
                self.stats.by_rule[key] = self.stats.by_rule.get(key, 0) + count
            if self._counts is not None:
                self._counts.suppressed += count
        return out

    def save_status(self) -> None:
        if self._status_path is None:
            return
        tmp = self._status_path.with_name(self._status_path.name + ".tmp")
        tmp.write_text(json.dumps(asdict(self.stats), sort_keys=True))
        os.replace(tmp, self._status_path)

    # -- the thread -----------------------------------------------------------------------

    def _run(self) -> None:
        reader = self._reader = self._bind()
        if reader is None:
            return
        kernel = NftKernel()  # a libnftables context of this thread's own
        next_summary = time.monotonic()
        try:
            while not self._stop.is_set():
                try:
                    messages = reader.read(0.5, BATCH)
                except OSError as exc:  # not ENOBUFS (counted inside): log, go on
                    log.warning("reading NFLOG group %d failed: %s", self.group, exc)
                    self._stop.wait(1.0)
                    continue
                self.stats.overruns = reader.overruns
                try:
                    records = self.records(messages, time.time_ns() // 1000)
                except Exception:  # a bug must not end the flow log: count, log, go on
                    self.stats.errors += len(messages)
                    log.exception("making flow records of %d messages failed", len(messages))
                    continue
                self.stats.records += len(records)
                self._emit(records)
                if time.monotonic() >= next_summary:
                    next_summary = time.monotonic() + self._summary_seconds
                    self._summary(kernel)
        finally:
            reader.close()
            kernel.close()

    def _summary(self, kernel: NftKernel) -> None:
        try:
            self._emit(self.summarize(self._read_counters(kernel), time.time_ns() // 1000))
        except Exception as exc:  # counters are best effort: the records go on
            log.warning("reading the log counters failed: %s", exc)
        with contextlib.suppress(OSError):
            self.save_status()


def read_flowlog_status(path: Path) -> dict[str, Any] | None:
    """What an agent last wrote to `STATE_DIR/flowlog.json`; None if nothing yet."""
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data
