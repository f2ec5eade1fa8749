"""The agent's part of a live migration: destination ready first, state in two phases, the
source left clean.

- **Destination** (`incoming`): the VM is placed on this host in the catalog the agent
  compiles (`IncomingOverlay`; an agent following a manager gets that program from the
  manager once the move began there: `manager.moves`) before the documents say so, so its
  rules are in the kernel before its first packet arrives here; the handover receiver
  accepts its connection state, proven by the one-time key, and injects it into this
  host's conntrack table.
- **Source** (`send`): at `precopy` every conntrack entry of the VM's addresses is sent
  while the VM still runs here, and a change list starts (`conntrack.watch`: the keys of
  the VM's entries created, changed or destroyed, from conntrack events); at `switchover`
  only the entries on that list (and those that could expire first) are read back by key
  and sent, with the keys of those gone: the switchover's work is proportional to what
  changed during the move, not to the VM's connections. The entries travel as the
  kernel's attributes (`conntrack.raw`), never decoded.
- **Source** (`release`): after the switchover, or when the VM moved without its state:
  the VM's entries here go, except those another VM of this host is an end of (they are
  that VM's connections too). The rules go when the documents place the VM elsewhere.
- **Destination** (`done`): the documents place the VM here; the overlay and key go.
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
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from ipaddress import ip_address
from typing import Any

from hyperwall.agent.handover import HandoverReceiver, send_state
from hyperwall.compiler.moving import placed
from hyperwall.compiler.program import HostProgram
from hyperwall.dataplane.conntrack import raw, wire
from hyperwall.dataplane.conntrack.entry import Address
from hyperwall.dataplane.conntrack.kernel import Conntrack, InjectError, OnExists
from hyperwall.dataplane.conntrack.raw import RawEntry
from hyperwall.dataplane.conntrack.watch import ChangeWatch
from hyperwall.policy.model import Catalog

log = logging.getLogger(__name__)
READY_TIMEOUT = 30.0
ABANDON_S = 600.0  # a precopy not followed by a switchover or release within this


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
        here = placed(catalog, dict.fromkeys(moving, self.host))
        mark = hashlib.sha256(",".join(sorted(moving)).encode()).hexdigest()[:8]
        return here, f"{digest}:in-{mark}"


@dataclass(frozen=True)
class Precopy:
    """What the source sent at the pre-copy: the keys, and those that could expire soon."""

    keys: frozenset[bytes]
    expiring: tuple[tuple[int, bytes], ...]  # (timeout then, key) of the short-lived ones
    at: float  # monotonic


@dataclass
class Migrations:
    host: str
    overlay: IncomingOverlay | None
    receiver: HandoverReceiver | None
    reconcile: Callable[[], None]  # queue a reconcile of the desired program
    program: Callable[[], HostProgram | None]  # the program in force now
    sent: dict[str, Precopy] = field(default_factory=dict)  # vm -> its pre-copy
    watches: dict[str, ChangeWatch] = field(default_factory=dict)  # vm -> its change list
    injected: dict[str, set[bytes]] = field(default_factory=dict)  # vm -> keys we injected
    native: dict[str, set[bytes]] = field(default_factory=dict)  # vm -> its own, at precopy
    discovers: bool = False  # --libvirt: VMs (and their rules) arrive with their domains
    known: dict[str, list[Address]] = field(default_factory=dict)  # vm -> its addresses
    abandon_after: float = ABANDON_S  # a precopy without switchover or release this long
    lock: threading.Lock = field(default_factory=threading.Lock)  # watches: requests, timers

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
        if self.receiver is None:
            raise ValueError("this agent cannot take incoming VMs (no --handover-listen)")
        self.receiver.expect(vm, key)
        self.native.pop(vm, None)  # a new move: what this host tracks is read again
        if self.discovers:
            return {"ok": True, "ready": False, "waits": "domain"}  # fail closed till then
        if self.overlay is not None:
            with self.overlay.lock:
                self.overlay.vms[vm] = source
            self.reconcile()
        # else this agent follows a manager, which places the VM here once the move has
        # begun there (`POST /v1/migrations`: `manager.moves`); its program arrives as any
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            endpoints = self._endpoints(vm)
            if endpoints:
                return {"ok": True, "ready": True, "endpoints": len(endpoints)}
            time.sleep(0.01)
        if self.overlay is None:
            raise TimeoutError(
                f"the manager's program for {self.host} did not place {vm} here within"
                f" {READY_TIMEOUT:g} s: begin the move in the manager first"
                " (POST /v1/migrations)"
            )
        raise TimeoutError(f"{vm}'s rules were not in the kernel within {READY_TIMEOUT:g} s")

    def send(self, vm: str, address: str, key: str, phase: str) -> dict[str, Any]:
        addresses = self._addresses(vm) or self.known.get(vm, [])
        if not addresses:
            raise ValueError(f"{vm} has no interface on {self.host}")
        self.known[vm] = addresses
        started = time.monotonic()
        if phase == "precopy":
            return self._precopy(vm, addresses, address, key, started)
        if phase != "switchover":
            raise ValueError(f"bad phase {phase!r}: expected precopy or switchover")
        copies, entries = self._switchover(vm, addresses, started)
        read = time.monotonic() - started
        result = send_state(address, vm, key, phase, encode_copies(copies))
        return {
            "ok": True,
            "phase": phase,
            "entries": entries,
            "sent": len(copies.changed) + len(copies.removed),
            "whole": copies.whole,
            "applied": result.applied,
            "bytes": result.size,
            "read": round(read, 4),
            "seconds": round(time.monotonic() - started, 4),
        }

    def _precopy(
        self, vm: str, addresses: list[Address], address: str, key: str, started: float
    ) -> dict[str, Any]:
        """Every entry of the VM, in chunks that go as they are read (the destination
        injects one while the next is read here). The change list starts before the dump,
        so that nothing that changes during it is missed."""
        old = self.watches.pop(vm, None)
        if old is not None:
            old.stop()
        watch = self.watches[vm] = ChangeWatch(addresses)
        timer = threading.Timer(self.abandon_after, self._abandoned, (vm, watch))
        timer.daemon = True
        timer.start()
        keys: set[bytes] = set()
        expiring: list[tuple[int, bytes]] = []
        reading = [0.0]

        def chunks() -> Iterator[bytes]:
            with Conntrack() as conntrack:
                dump = iter(conntrack.dump_raw_chunks(addresses, PRECOPY_CHUNK))
                while True:
                    began = time.monotonic()
                    chunk = next(dump, None)
                    reading[0] += time.monotonic() - began
                    if chunk is None:
                        return
                    keys.update(e.key for e in chunk)
                    expiring.extend((e.timeout, e.key) for e in chunk if e.timeout < EXPIRING_S)
                    yield encode_copies(Copies(tuple(chunk), (), whole=False))

        result = send_state(address, vm, key, "precopy", chunks())
        self.sent[vm] = Precopy(frozenset(keys), tuple(expiring), started)
        return {
            "ok": True,
            "phase": "precopy",
            "entries": len(keys),
            "sent": len(keys),
            "whole": True,
            "applied": result.applied,
            "bytes": result.size,
            "read": round(reading[0], 4),
            "seconds": round(time.monotonic() - started, 4),
        }

    def _switchover(self, vm: str, addresses: list[Address], now: float) -> tuple[Copies, int]:
        """What changed since the pre-copy: the entries in the change list, and those that
        could expire on the destination before traffic refreshes them there (traffic
        refreshed them here without an event), read back by key. Without a complete
        change list (no pre-copy, lost events, a long wait), every entry again."""
        with self.lock:
            watch, precopy = self.watches.pop(vm, None), self.sent.pop(vm, None)
        changes = watch.stop() if watch is not None else None
        with Conntrack() as conntrack:
            if changes is None or changes.overrun or precopy is None:
                entries = conntrack.dump_raw(addresses)
                return Copies(tuple(entries), (), whole=True), len(entries)
            soon = now - precopy.at + EXPIRING_MARGIN_S
            keys = set(changes.keys)
            keys.update(k for timeout, k in precopy.expiring if timeout <= soon)
            found, gone = conntrack.get_raw(sorted(keys))
        held = (precopy.keys - set(gone)) | {e.key for e in found}
        return Copies(tuple(found), tuple(gone), whole=False), len(held)

    def release(self, vm: str, given: list[str] | None = None) -> dict[str, Any]:
        """After the switchover, or when the VM left without its state (`--no-state`, a
        failed handover): its entries here go, but those another VM of this host is an
        end of (they are that VM's connections too), so nothing of the VM stays behind.
        `given`: its addresses, for a VM this agent no longer knows (its domain left)."""
        addresses = (
            self._addresses(vm) or self.known.get(vm) or [ip_address(a) for a in given or ()]
        )
        with self.lock:
            watch = self.watches.pop(vm, None)
            self.sent.pop(vm, None)
        if watch is not None:
            watch.stop()
        self.known.pop(vm, None)
        keep = {a.packed for a in self._local_addresses(exclude=vm)}
        with Conntrack() as conntrack:
            entries = conntrack.dump_raw(addresses) if addresses else []
            gone = [e.key for e in entries if not keep or not raw.key_addresses(e.key) & keep]
            removed = conntrack.delete_raw(gone) if gone else 0
        return {"ok": True, "removed": removed}

    def _abandoned(self, vm: str, watch: ChangeWatch) -> None:
        """A precopy that no switchover nor release followed within `abandon_after` (the
        orchestrator died, or gave up). If the VM still runs here the move was abandoned
        before its switchover: the change list goes. If it left (the hypervisor's switchover
        happened, then the orchestrator died), nothing of it stays behind: `release`."""
        here = bool(self._endpoints(vm))
        with self.lock:
            if self.watches.get(vm) is not watch:
                return  # switched over, released, or a newer precopy
            if here:
                self.watches.pop(vm, None)
                self.sent.pop(vm, None)
        if here:
            watch.stop()
            log.warning("migration: %s: precopy not followed by a switchover; dropped", vm)
            return
        answer = self.release(vm)
        log.warning(
            "migration: %s left without its switchover; %d entries removed here",
            vm,
            answer["removed"],
        )

    def done(self, vm: str) -> dict[str, Any]:
        self.injected.pop(vm, None)
        self.native.pop(vm, None)
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
        copies = decode_copies(payload)
        ours = self.injected.setdefault(vm, set())
        with Conntrack() as conntrack:
            if phase == "precopy":  # a chunk; what this host tracks itself is read once
                native = self.native.get(vm)
                if native is None:
                    native = {e.key for e in conntrack.dump_raw(self._addresses(vm))}
                    self.native[vm] = native
                new = [e for e in copies.changed if e.key not in native]
                applied = _inject(conntrack, new, "skip")
                ours.update(e.key for e in new)
            else:
                self.native.pop(vm, None)
                removed = set(copies.removed)
                if copies.whole:  # every entry of the VM: what is not among them is gone
                    removed |= ours - {e.key for e in copies.changed}
                gone = sorted(removed & ours)
                if gone:
                    conntrack.delete_raw(gone)
                update = [e for e in copies.changed if e.key in ours]
                new = [e for e in copies.changed if e.key not in ours]
                applied = len(gone)
                applied += _inject(conntrack, update, "update")
                applied += _inject(conntrack, new, "skip")
                ours.update(e.key for e in new)
                ours.difference_update(gone)
        total = len(copies.changed) + len(copies.removed)
        log.info("migration: %s %s: %d of %d entries applied", vm, phase, applied, total)
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


# An entry being created here by a packet right now (unconfirmed) refuses a copy with EBUSY:
# this host sees that connection's packets itself, so its own entry wins, as with EEXIST.
_NATIVE = (errno.EBUSY, errno.EEXIST)
# Entries with less than this left at the pre-copy are read again at the switchover if
# they could expire before traffic reaches the destination (see `_switchover`).
EXPIRING_S = 600
EXPIRING_MARGIN_S = 60
PRECOPY_CHUNK = 5000  # entries per chunk of the precopy's stream


def _inject(conntrack: Conntrack, entries: list[RawEntry], on_exists: OnExists) -> int:
    if not entries:
        return 0
    try:
        return conntrack.inject_raw(entries, on_exists=on_exists)
    except InjectError as exc:
        if all(f.errno in _NATIVE for f in exc.failed):
            return exc.applied
        raise


@dataclass(frozen=True)
class Copies:
    """One phase's state: entries to create or update (copies: `raw.copy`), keys of
    entries to delete; `whole`: `changed` is every entry of the VM."""

    changed: tuple[RawEntry, ...]
    removed: tuple[bytes, ...]
    whole: bool


_HEAD = struct.Struct(">BI")  # whole, length of the changed part


def encode_copies(copies: Copies) -> bytes:
    """A phase's state as bytes: the changed entries, then the removed keys (`wire`)."""
    changed = wire.dumps_raw(e.body for e in copies.changed)
    return _HEAD.pack(copies.whole, len(changed)) + changed + wire.dumps_raw(copies.removed)


def decode_copies(data: bytes) -> Copies:
    if len(data) < _HEAD.size:
        raise wire.WireError("too short for a handover")
    whole, size = _HEAD.unpack_from(data)
    changed_part = data[_HEAD.size : _HEAD.size + size]
    removed_part = data[_HEAD.size + size :]
    try:
        changed = tuple(
            RawEntry(raw.key_of(body), body)
            for body in (changed_part[s:e] for s, e in wire.frames(changed_part))
        )
    except (raw.RawError, struct.error) as exc:
        raise wire.WireError(f"bad entry: {exc}") from None
    removed = tuple(removed_part[s:e] for s, e in wire.frames(removed_part))
    return Copies(changed, removed, bool(whole))
