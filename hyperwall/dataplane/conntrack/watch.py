"""The change list of a migrating VM: the keys of its conntrack entries that were created,
changed or destroyed since a point in time, from the kernel's conntrack events.

Counterpart of `conntrack.raw` (the keys) and `agent.migration` (which starts a watch
before the pre-copy's dump and stops it at the switchover, so that the switchover reads
back only these entries instead of dumping the table again). A socket in the namespace,
bound to the ctnetlink groups NEW, UPDATE and DESTROY, read by a thread; an event whose
original source or destination is one of the VM's addresses adds its key.

The kernel reports an entry's changes only if the entry got the event extension when it
was created: with the default `nf_conntrack_events=2` only while some ctnetlink listener
existed then. An entry from before the watch would change silently. So the agent sets
`nf_conntrack_events=1` in its host's namespace at start (`events_here`, with strict TCP):
every entry created from then on reports. (Entries older than the agent still do not: if
one of them changes during a move, the destination keeps the pre-copy's version of it.)

What the events do not say: a timeout refreshed by traffic (the kernel sends no event for
that). The caller re-reads entries that could expire first (`agent.migration`). If the
kernel drops events (the receive buffer is full: ENOBUFS), the change list is incomplete:
`Changes.overrun` says so and the caller falls back to a whole dump.
"""

from __future__ import annotations

import errno
import select
import socket
import threading
from dataclasses import dataclass
from pathlib import Path

from hyperwall.dataplane.conntrack import messages, raw
from hyperwall.dataplane.conntrack.entry import Address
from hyperwall.dataplane.conntrack.kernel import netlink_socket
from hyperwall.dataplane.netns import inside

NFNLGRP_CONNTRACK_NEW, NFNLGRP_CONNTRACK_UPDATE, NFNLGRP_CONNTRACK_DESTROY = 1, 2, 3
GROUPS = sum(
    1 << (g - 1)
    for g in (NFNLGRP_CONNTRACK_NEW, NFNLGRP_CONNTRACK_UPDATE, NFNLGRP_CONNTRACK_DESTROY)
)
RCVBUF = 32 << 20  # about 150,000 events queued before the kernel drops any


@dataclass(frozen=True)
class Changes:
    keys: frozenset[bytes]  # `raw` keys of the VM's entries created, changed or destroyed
    overrun: bool  # events were lost: the list is incomplete
    events: int  # events read (the VM's and others')


class ChangeWatch:
    """Collects the keys of the entries of `addresses` that change, from now until `stop`.
    `netns`: a namespace by `ip netns` name, or the calling thread's."""

    def __init__(
        self, addresses: list[Address], netns: str | None = None, rcvbuf: int = RCVBUF
    ) -> None:
        if netns is not None:
            with inside(netns):
                self._sock = netlink_socket(rcvbuf, GROUPS)
        else:
            self._sock = netlink_socket(rcvbuf, GROUPS)
        self._addresses = {a.packed for a in addresses}
        self._keys: set[bytes] = set()
        self._overrun = False
        self._events = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="conntrack-watch", daemon=True)
        self._thread.start()

    def stop(self) -> Changes:
        """Stop watching; the changes up to now (every event queued before this call)."""
        self._stop.set()
        self._thread.join()
        try:
            self._drain()
        finally:
            self._sock.close()
        return Changes(frozenset(self._keys), self._overrun, self._events)

    def _run(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self._sock], [], [], 0.05)
            if ready:
                self._drain()

    def _drain(self) -> None:
        while True:
            try:
                data = self._sock.recv(1 << 20, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno != errno.ENOBUFS:
                    raise
                self._overrun = True  # the kernel dropped events: a whole dump instead
                continue
            self._read(data)

    def _read(self, data: bytes) -> None:
        for reply in messages.replies(data):
            if reply.kind == messages.NLMSG_ERROR or reply.done:
                continue
            self._events += 1
            key = raw.key_in(data, reply.start, reply.end)
            if key is not None and raw.key_addresses(key) & self._addresses:
                self._keys.add(key)


_EVENTS = Path("/proc/sys/net/netfilter/nf_conntrack_events")


def events_here() -> None:
    """Every entry created from now on in the calling thread's namespace reports its
    changes (`nf_conntrack_events=1`; the conntrack module is loaded by then)."""
    _EVENTS.write_text("1\n")


def set_events(netns: str) -> None:
    """`events_here` in namespace `netns`."""
    with inside(netns):
        events_here()
