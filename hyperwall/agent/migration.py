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
- **Source** (`release`): a VM that moved without its state: its entries here go anyway.
- **Hypervisor-discovered VMs** (`--libvirt`, `discovers`): the VM's rules follow its
  domain, not the documents: `incoming` only arms the receiver (the domain and its taps
  appear here paused during the hypervisor's migration, and the agent enforces them as for
  any domain: an unknown tap fails closed meanwhile). The source's domain, and with it the
  VM's endpoints, may be gone before `send switchover` or `release` arrives: the addresses
  known at `precopy` (or given by the caller) are used then.

If the destination's agent is down, `incoming` fails and the orchestrator must not move
the VM (refused: the VM never runs unprotected). If a handover fails, the VM still moves
with its policy: new connections work, the failure is in the answer and the log.
Counterparts: `agent.control` (the socket), `agent.handover` (the transport),
`dataplane.conntrack` (the kernel's connection table), `lab.migrate` (the orchestrator).
"""

from __future__ import annotations

import errno
import hashlib
import logging
import struct
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from ipaddress import ip_address
from typing import Any

from hyperwall.agent.handover import HandoverReceiver, send_state
from hyperwall.compiler.program import HostProgram
from hyperwall.dataplane.conntrack import wire
from hyperwall.dataplane.conntrack.entry import Address, Entry, touches
from hyperwall.dataplane.conntrack.kernel import Conntrack, InjectError, OnExists
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
    injected: dict[str, set[Key]] = field(default_factory=dict)  # vm -> what we injected
    discovers: bool = False  # --libvirt: VMs (and their rules) arrive with their domains
    known: dict[str, list[Address]] = field(default_factory=dict)  # vm -> its addresses

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
        if op == "release":
            return self.release(vm, [str(a) for a in request.get("addresses") or ()])
        raise ValueError(f"unknown op {op!r}")

    def incoming(self, vm: str, source: str, key: str) -> dict[str, Any]:
        if self.discovers and self.receiver is not None:
            self.receiver.expect(vm, key)  # the rules come with the domain (fail closed till then)
            return {"ok": True, "ready": False, "waits": "domain"}
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
        addresses = self._addresses(vm) or self.known.get(vm, [])
        if not addresses:
            raise ValueError(f"{vm} has no interface on {self.host}")
        self.known[vm] = addresses
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
            answer["removed"] = self._forget(vm, now.values())
        return answer

    def release(self, vm: str, given: list[str] | None = None) -> dict[str, Any]:
        """The VM left without its state (`--no-state`, or a failed handover): its entries
        here go all the same, so nothing of it stays behind. `given`: its addresses, for a
        VM this agent no longer knows (its domain left)."""
        addresses = (
            self._addresses(vm) or self.known.get(vm) or [ip_address(a) for a in given or ()]
        )
        with Conntrack() as conntrack:
            entries = conntrack.dump(addresses) if addresses else []
        return {"ok": True, "removed": self._forget(vm, entries)}

    def _forget(self, vm: str, entries: Iterable[Entry]) -> int:
        """Delete the VM's entries here, but those another VM of this host is an end of."""
        keep = self._local_addresses(exclude=vm)
        gone = [e for e in entries if not touches(e, keep)]
        self.sent.pop(vm, None)
        self.known.pop(vm, None)
        with Conntrack() as conntrack:
            return conntrack.delete(gone) if gone else 0

    def done(self, vm: str) -> dict[str, Any]:
        self.injected.pop(vm, None)
        if self.receiver is not None:
            self.receiver.forget(vm)
        if self.overlay is not None:
            with self.overlay.lock:
                self.overlay.vms.pop(vm, None)
        self.reconcile()
        return {"ok": True}

    # -- the receiver's work ------------------------------------------------------------

    def apply(self, vm: str, phase: str, payload: bytes) -> int:
        """Take the VM's entries. An entry this host tracks itself (the other end is one of
        its VMs, or its packets already pass here after the switchover) has seen every
        packet here: it wins over the copy. Only what precopy injected is updated or
        removed at the switchover."""
        change = decode_delta(payload)
        change = Delta(tuple(map(liberal, change.changed)), change.removed)
        ours = self.injected.setdefault(vm, set())
        with Conntrack() as conntrack:
            if phase == "precopy":
                native = {e.key for e in conntrack.dump(self._addresses(vm))}
                new = [e for e in change.changed if e.key not in native]
                applied = _inject(conntrack, new, "skip")
                ours.update(e.key for e in new)
            else:
                gone = [e for e in change.removed if e.key in ours]
                if gone:
                    conntrack.delete(gone)
                update = [e for e in change.changed if e.key in ours]
                new = [e for e in change.changed if e.key not in ours]
                applied = len(gone)
                applied += _inject(conntrack, update, "update")
                applied += _inject(conntrack, new, "skip")
                ours.update(e.key for e in new)
                ours.difference_update(e.key for e in gone)
        log.info("migration: %s %s: %d of %d entries applied", vm, phase, applied, len(change))
        return applied

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
# An entry being created here by a packet right now (unconfirmed) refuses a copy with EBUSY:
# this host sees that connection's packets itself, so its own entry wins, as with EEXIST.
_NATIVE = (errno.EBUSY, errno.EEXIST)


def _inject(conntrack: Conntrack, entries: list[Entry], on_exists: OnExists) -> int:
    if not entries:
        return 0
    try:
        return conntrack.inject(entries, on_exists=on_exists)
    except InjectError as exc:
        if all(f.errno in _NATIVE for f in exc.failed):
            return exc.applied
        raise


TCP_BE_LIBERAL = 0x08  # IP_CT_TCP_FLAG_BE_LIBERAL


def liberal(entry: Entry) -> Entry:
    """A copied TCP entry with window tracking relaxed: the kernel has no attribute for the
    windows it tracked on the source, and with none, the first segments seen here can fall
    outside what it learns and the connection is lost (measured: a connection opened during
    the switchover was reset). conntrackd syncs entries the same way."""
    if entry.tcp is None:
        return entry
    tcp = replace(
        entry.tcp,
        flags_orig=entry.tcp.flags_orig | TCP_BE_LIBERAL,
        flags_reply=entry.tcp.flags_reply | TCP_BE_LIBERAL,
    )
    return replace(entry, tcp=tcp)


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
