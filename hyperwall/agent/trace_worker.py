"""The agent's part of a live trace (`hyperwall trace --live`): arm, inject, observe, answer.

One thread long-polls the manager for this host's trace tasks
(`GET /v1/agent/HOST/traces/desired`, `manager.trace_routes`):

- `arm`: open a trace-event listener (`nft.trace_kernel.TraceListener`), add the trace
  rule that marks exactly this probe (`TraceTable.arm`), tell the manager (`armed`), then,
  in a thread of its own, read events until our table decided the probe or the task's
  deadline passed, remove the trace rule (always: `finally`), map the hits to rule ids
  (`nft.trace_attribute`, against the program and table the backend holds and the rule
  handles read from the kernel) and post them (`result`);
- `inject`: send the probe into the source VM's host-side interface (`Injector`), or for an
  external source into the interface the host routes the source address to.

On start every trace rule and the probe device left by an earlier run are removed (they are
recognisable by name: table `inet hyperwall_trace`, device `hwfprobe`). Failures are
reported to the manager in the result's `error` and never reach the reconcile loop.
"""

from __future__ import annotations

import json
import logging
import secrets
import subprocess
import threading
import time
from collections.abc import Callable
from typing import Any

from hyperwall.agent.manager_source import Client, ManagerError, backoff
from hyperwall.compiler.program import HostProgram
from hyperwall.dataplane.nft.render import Options
from hyperwall.dataplane.nft.table import TableState
from hyperwall.dataplane.nft.trace_attribute import attribute, decided, first_packet
from hyperwall.dataplane.nft.trace_frame import PROTOS, Probe
from hyperwall.dataplane.nft.trace_kernel import (
    TRACE_TABLE,
    Injector,
    TraceListener,
    TraceTable,
    chain_name,
)
from hyperwall.dataplane.nft.trace_netlink import TraceEvent
from hyperwall.evaluator.packet import Packet

log = logging.getLogger(__name__)

# The program and the table the backend last applied (None before the first sync).
Applied = Callable[[], tuple[HostProgram | None, TableState | None]]
EXTERNAL_MAC = "02:00:00:00:00:01"  # the source MAC of a probe from an external address


def probe_of(task: dict[str, Any]) -> Probe:
    p = task["probe"]
    return Probe(str(p["src"]), str(p["dst"]), str(p["proto"]), int(p["port"]), int(p["tag"]))


def packet_of(probe: Probe) -> Packet:
    """The probe as the reference evaluator sees it (for a folded block's rule)."""
    return Packet(probe.src, probe.dst, PROTOS[probe.proto], sport=probe.tag, dport=probe.port)


def describe(event: TraceEvent) -> str:
    """One step of the path as text: `chain#handle verdict [target]`."""
    handle = f"#{event.handle}" if event.handle is not None else ""
    target = f" {event.target}" if event.target else ""
    return f"{event.chain}{handle} {event.type} {event.verdict or ''}{target}".rstrip()


def route_device(address: str) -> str:
    """The interface this host routes `address` to (where a packet from it arrives)."""
    out = subprocess.run(
        ["ip", "-j", "route", "get", address], capture_output=True, text=True, check=False
    )
    if out.returncode != 0:
        raise OSError(f"no route to {address}: {out.stderr.strip()}")
    routes = json.loads(out.stdout)
    return str(routes[0]["dev"])


class TraceWorker:
    """Follows the manager's trace tasks for this host (one thread, plus one per trace)."""

    def __init__(
        self, client: Client, applied: Applied, options: Options, wait: float = 30.0
    ) -> None:
        self.client = client
        self.applied = applied
        self.options = options
        self.wait = wait
        self.stop_event = threading.Event()
        self.thread: threading.Thread | None = None
        self.table: TraceTable | None = None
        self.injector = Injector()
        self.handled: dict[tuple[str, str], None] = {}  # tasks done (the manager may resend)

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Remove what an earlier run left (by name), then follow the manager."""
        self.table = TraceTable()
        self.table.remove_all()
        Injector.remove_all()
        self.thread = threading.Thread(target=self.run, name="trace-worker", daemon=True)
        self.thread.start()

    def stop(self, timeout: float | None = None) -> None:
        self.stop_event.set()
        if self.thread is not None:
            self.thread.join(timeout)

    def run(self) -> None:
        failures = 0
        while not self.stop_event.is_set():
            try:
                code, body = self.client._request(
                    "GET", f"/traces/desired?wait={self.wait:g}", timeout=self.wait + 30.0
                )
                failures = 0
            except (OSError, ManagerError) as exc:
                failures += 1
                log.warning("trace tasks: %s", exc)
                self.stop_event.wait(backoff(failures))
                continue
            if code != 200:
                continue
            try:
                tasks = json.loads(body)["tasks"]
            except (ValueError, KeyError, TypeError) as exc:
                log.warning("trace tasks: bad answer: %s", exc)
                continue
            for task in tasks:
                if isinstance(task, dict):
                    self.handle(task)

    # -- tasks -----------------------------------------------------------------------------

    def _post(self, trace_id: str, what: str, body: dict[str, Any] | None = None) -> None:
        try:
            self.client._request("POST", f"/traces/{trace_id}/{what}", body if body else {})
        except (OSError, ManagerError) as exc:
            log.warning("trace %s: posting %s failed: %s", trace_id, what, exc)

    def handle(self, task: dict[str, Any]) -> None:
        key = (str(task.get("id")), str(task.get("action")))
        if key in self.handled:
            return
        self.handled[key] = None
        while len(self.handled) > 1024:
            del self.handled[next(iter(self.handled))]
        try:
            if task["action"] == "arm":
                self.arm(task)
            elif task["action"] == "inject":
                self.inject(task)
        except Exception as exc:  # reported to the manager; the agent goes on
            log.warning("trace %s: %s failed: %s", task.get("id"), task.get("action"), exc)
            self._post(str(task.get("id")), "result", {"error": f"{task.get('action')}: {exc}"})

    def arm(self, task: dict[str, Any]) -> None:
        assert self.table is not None
        trace_id, probe = str(task["id"]), probe_of(task)
        deadline = time.monotonic() + max(0.5, float(task.get("seconds", 10.0)))
        listener = TraceListener()
        try:
            self.table.arm(trace_id, probe)
        except Exception:
            listener.close()
            raise
        thread = threading.Thread(
            target=self.observe, args=(trace_id, probe, listener, deadline), daemon=True
        )
        thread.start()
        self._post(trace_id, "armed")

    def observe(
        self, trace_id: str, probe: Probe, listener: TraceListener, deadline: float
    ) -> None:
        assert self.table is not None
        events: list[TraceEvent] = []
        error: str | None = None
        mine: set[int] = set()  # the packets our trace rule marked (other traces may run)

        def done(event: TraceEvent) -> bool:
            if event.table == TRACE_TABLE and event.chain == chain_name(trace_id):
                mine.add(event.id)
            return event.id in mine and decided(event)

        try:
            events = list(listener.events(deadline, done))
        except Exception as exc:
            error = f"reading trace events: {exc}"
        finally:
            listener.close()
            try:
                self.table.disarm(trace_id)
            except Exception as exc:
                log.warning("trace %s: removing the trace rule failed: %s", trace_id, exc)
        ours = first_packet([e for e in events if e.id in mine])
        program, state = self.applied()
        hits: list[dict[str, Any]] = []
        if program is not None and state is not None and ours:
            try:
                handles = {
                    e.chain: self.table.chain_handles("hyperwall", e.chain)
                    for e in ours
                    if e.chain.startswith("p_")
                }
                found = attribute(ours, program, state, handles, packet_of(probe))
                hits = [{"end": h.end, **h.to_json()} for h in found]
            except Exception as exc:
                error = f"attributing the trace: {exc}"
        elif not ours and error is None:
            error = "the probe was not seen on this host before the deadline"
        self._post(
            trace_id, "result", {"hits": hits, "path": [describe(e) for e in ours], "error": error}
        )

    def inject(self, task: dict[str, Any]) -> None:
        probe = probe_of(task)
        mark = 1 + secrets.randbelow(0x7FFFFFFE)  # never bit 31: the policy chains' pass mark
        if task.get("endpoint"):
            program, _ = self.applied()
            if program is None or task["endpoint"] not in program.endpoints:
                raise LookupError(f"endpoint {task['endpoint']!r} is not on this host")
            ep = program.endpoints[task["endpoint"]]
            self.injector.inject(probe, ep.ifname or self.options.ifname(ep), ep.mac, mark)
        else:
            self.injector.inject(probe, route_device(probe.src), EXTERNAL_MAC, mark)
