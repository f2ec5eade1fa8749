"""The agent's connection records: a thread that reads the host's conntrack NEW and DESTROY
events and writes a record to the flow log for each managed connection that ends.

Counterpart of `agent.connections` (the bounded table and the records, pure),
`dataplane.conntrack.listener` (the event socket, opened in the agent's own namespace: the
host's) and the flow log writer (`write`, shared with the NFLOG records). It reads the
program in force (`program`) without a lock: the reconciler replaces the reference, never
the object. Counts what it could not keep: `dropped` (table full), `overruns` (the kernel
dropped events: ENOBUFS), `unpaired` (a DESTROY whose NEW was not seen).

If the agent dies, the connections open at that moment get no NEW in the table of the next
agent; their DESTROY still gives a record (`unpaired`, start from the kernel's timestamp).
Connections that end while no agent runs leave no record: the events are not queued for a
socket that does not exist.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from hyperwall.agent.connections import LIMIT, ConnectionTable, ProgramIndex
from hyperwall.compiler.program import HostProgram
from hyperwall.dataplane.conntrack import accounting
from hyperwall.dataplane.conntrack.listener import EventListener
from hyperwall.flows.record import FlowRecord

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ConnectionStats:
    open: int
    records: int
    dropped: int
    unpaired: int
    overruns: int


class ConnectionLog:
    """Connection records of this host (`host`), from its conntrack events."""

    def __init__(
        self,
        host: str,
        program: Callable[[], HostProgram | None],
        write: Callable[[list[FlowRecord]], None],
        limit: int = LIMIT,
        netns: str | None = None,
    ) -> None:
        self.table = ConnectionTable(host, limit)
        self._netns = netns  # None: the agent's own namespace (the host's)
        self._program = program
        self._write = write
        self._index: ProgramIndex | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._listener: EventListener | None = None
        self.records = 0

    def start(self) -> None:
        """Accounting on in this namespace, the socket open (events from now on), then the
        reading thread."""
        if self._netns is None:
            accounting.enable_here()
        else:
            accounting.enable(self._netns)
        self._listener = EventListener(self._netns)
        self._thread = threading.Thread(target=self._run, name="connection-log", daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if self._listener is not None:
            self._listener.close()

    def stats(self) -> ConnectionStats:
        overruns = self._listener.overruns if self._listener is not None else 0
        t = self.table
        return ConnectionStats(len(t.open), self.records, t.dropped, t.unpaired, overruns)

    def _indexed(self, program: HostProgram | None) -> ProgramIndex | None:
        if program is None:
            return None
        if self._index is None or self._index.program is not program:
            self._index = ProgramIndex(program)
        return self._index

    def _run(self) -> None:
        assert self._listener is not None
        while not self._stop.is_set():
            try:
                events = self._listener.read(0.5)
            except OSError as exc:  # not ENOBUFS (counted inside): log, go on
                log.warning("reading conntrack events failed: %s", exc)
                self._stop.wait(1.0)
                continue
            index = self._indexed(self._program())
            now = time.time()
            records = [r for e in events if (r := self.table.handle(e, now, index))]
            if not records:
                continue
            try:
                self._write(records)  # one write per batch of events
                self.records += len(records)
            except OSError as exc:  # a full disk: these records are lost, the agent goes on
                log.warning("writing %d connection records failed: %s", len(records), exc)
