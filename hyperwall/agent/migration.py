"""The agent's part of a live migration: destination ready first, state in two phases, the
source left clean.

- **Destination** (`incoming`): the VM is placed on this host in the catalog the agent
  compiles (`IncomingOverlay`) before the documents say so, so its rules are in the kernel
  before its first packet arrives here; the handover receiver accepts its connection state,
  proven by the one-time key, and injects it into this host's conntrack table.
- **Source** (`send`): at `precopy` every conntrack entry of the VM's addresses is sent
  while the VM still runs here; at `switchover` only what changed since (new, changed and
  gone entries), so connections opened or closed during the move are right too. Then the
  VM's entries are removed here, except those another VM of this host is an end of (they
  are that VM's connections too). The rules go when the documents place the VM elsewhere.
- **Destination** (`done`): the documents place the VM here; the overlay and key go.

If the destination's agent is down, `incoming` fails and the orchestrator must not move
the VM (refused: the VM never runs unprotected). If a handover fails, the VM still moves
with its policy: new connections work, the failure is in the answer and the log.
Counterparts: `agent.control` (the socket), `agent.handover` (the transport),
`dataplane.conntrack` (the kernel's connection table), `lab.migrate` (the orchestrator).
"""

from __future__ import annotations

import hashlib
import logging
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from ipaddress import ip_address
from typing import Any

from hyperwall.agent.handover import HandoverReceiver, send_state
from hyperwall.compiler.program import HostProgram
from hyperwall.dataplane.conntrack import wire
from hyperwall.dataplane.conntrack.entry import Address, Entry, touches
from hyperwall.dataplane.conntrack.kernel import Conntrack, apply
from hyperwall.dataplane.conntrack.transfer import Delta, Key, delta, snapshot
from hyperwall.policy.model import Catalog

log = logging.getLogger(__name__)
READY_TIMEOUT = 30.0


class IncomingOverlay:
    """Wraps a catalog loader: the VMs announced as incoming are placed on this host."""

    def __init__(self, load: Callable[[], tuple[Catalog, str]], host: str) -> None:
        self.inner = load
        self.host = host
        self.vms: dict[str, str] = {}  # vm key -> the host it comes from
        self.lock = threading.Lock()

    def load(self) -> tuple[Catalog, str]:
        catalog, digest = self.inner()
        with self.lock:
            moving = {k: v for k, v in self.vms.items() if k in catalog.workloads}
        if not moving:
            return catalog, digest
        workloads = dict(catalog.workloads)
        for key in moving:
            workloads[key] = replace(workloads[key], host=self.host)
        mark = hashlib.sha256(",".join(sorted(moving)).encode()).hexdigest()[:8]
        return replace(catalog, workloads=workloads), f"{digest}:in-{mark}"


@dataclass
class Migrations:
    host: str
    overlay: IncomingOverlay | None
    receiver: HandoverReceiver | None
    reconcile: Callable[[], None]  # queue a reconcile of the desired program
    program: Callable[[], HostProgram | None]  # the program in force now
    sent: dict[str, dict[Key, Entry]] = field(default_factory=dict)  # vm -> what was sent

    # -- the control socket's operations ------------------------------------------------

    def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        op = request.get("op")
        if op == "ping":
            return {"ok": True}
        vm = str(request.get("vm", ""))
        if op == "incoming":
            return self.incoming(vm, str(request["from"]), str(request["key"]))
        if op == "send":
            return self.send(
                vm, str(request["address"]), str(request["key"]), str(request["phase"])
            )
        if op == "done":
            return self.done(vm)
        raise ValueError(f"unknown op {op!r}")

    def incoming(self, vm: str, source: str, key: str) -> dict[str, Any]:
        if self.overlay is None or self.receiver is None:
            raise ValueError(
                "this agent cannot take incoming VMs (it follows a manager, or "
                "has no handover listener)"
            )
        self.receiver.expect(vm, key)
        with self.overlay.lock:
            self.overlay.vms[vm] = source
        self.reconcile()
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            endpoints = self._endpoints(vm)
            if endpoints:
                return {"ok": True, "ready": True, "endpoints": len(endpoints)}
            time.sleep(0.01)
        raise TimeoutError(f"{vm}'s rules were not in the kernel within {READY_TIMEOUT:g} s")

    def send(self, vm: str, address: str, key: str, phase: str) -> dict[str, Any]:
        addresses = self._addresses(vm)
        if not addresses:
            raise ValueError(f"{vm} has no interface on {self.host}")
        with Conntrack() as conntrack:
            now = snapshot(conntrack.dump(addresses))
        if phase == "precopy":
            change = Delta(tuple(now.values()), ())
        elif phase == "switchover":
            change = delta(self.sent.get(vm, {}), now)
        else:
            raise ValueError(f"bad phase {phase!r}: expected precopy or switchover")
        payload = encode_delta(change)
        sent_entries = len(change)
        started = time.monotonic()
        result = send_state(address, vm, key, phase, payload)
        seconds = time.monotonic() - started
        self.sent[vm] = now
        answer: dict[str, Any] = {
            "ok": True,
            "phase": phase,
            "entries": len(now),
            "sent": sent_entries,
            "applied": result.applied,
            "bytes": result.size,
            "seconds": round(seconds, 4),
        }
        if phase == "switchover":
            keep = self._local_addresses(exclude=vm)
            gone = [e for e in now.values() if not touches(e, keep)]
            with Conntrack() as conntrack:
                answer["removed"] = conntrack.delete(gone) if gone else 0
            self.sent.pop(vm, None)
        return answer

    def done(self, vm: str) -> dict[str, Any]:
        if self.receiver is not None:
            self.receiver.forget(vm)
        if self.overlay is not None:
            with self.overlay.lock:
                self.overlay.vms.pop(vm, None)
        self.reconcile()
        return {"ok": True}

    # -- the receiver's work ------------------------------------------------------------

    def apply(self, vm: str, phase: str, payload: bytes) -> int:
        change = decode_delta(payload)
        with Conntrack() as conntrack:
            apply(conntrack, change)
        log.info("migration: %s %s: %d entries applied", vm, phase, len(change))
        return len(change)

    # -- helpers ------------------------------------------------------------------------

    def _endpoints(self, vm: str) -> list[str]:
        program = self.program()
        if program is None:
            return []
        return [k for k, ep in program.endpoints.items() if ep.workload == vm]

    def _addresses(self, vm: str) -> list[Address]:
        program = self.program()
        if program is None:
            return []
        return [
            ip_address(ip)
            for ep in program.endpoints.values()
            if ep.workload == vm
            for ip in ep.ips
        ]

    def _local_addresses(self, exclude: str) -> frozenset[Address]:
        """The addresses of this host's other VMs (their connections stay)."""
        program = self.program()
        if program is None:
            return frozenset()
        return frozenset(
            ip_address(ip)
            for ep in program.endpoints.values()
            if ep.workload != exclude
            for ip in ep.ips
        )


_PART = struct.Struct(">I")


def encode_delta(change: Delta) -> bytes:
    """A delta as bytes: the changed entries, then the removed ones (`conntrack.wire`)."""
    changed = wire.dumps(change.changed)
    return _PART.pack(len(changed)) + changed + wire.dumps(change.removed)


def decode_delta(data: bytes) -> Delta:
    if len(data) < _PART.size:
        raise wire.WireError("too short for a delta")
    (size,) = _PART.unpack_from(data)
    changed = wire.loads(data[_PART.size : _PART.size + size])
    removed = wire.loads(data[_PART.size + size :])
    return Delta(tuple(changed), tuple(removed))
