"""A ctnetlink socket subscribed to conntrack NEW and DESTROY events in one network namespace.
The only I/O of the event path.

Counterpart of `conntrack.events` (which decodes what this reads). The socket is opened
inside the target namespace and stays bound to it. Its receive buffer is bounded
(`rcvbuf`); when the kernel has more events than fit, it drops them and the next `recv`
fails with ENOBUFS: that is counted (`overruns`) and reading goes on, never fatal. The
events lost are the price of bounded memory under a connection flood; their connections
get no record (or, for a lost NEW, a record from the DESTROY alone: see
`agent.connrecords`).
"""

from __future__ import annotations

import errno
import select
import socket
from typing import Self

from hyperwall.dataplane.conntrack.events import GROUPS, Event, decode_events
from hyperwall.dataplane.conntrack.kernel import netlink_socket
from hyperwall.dataplane.netns import inside

RCVBUF = 4 << 20  # bytes: about 20,000 events of ~200 bytes


class EventListener:
    """Conntrack NEW/DESTROY events of one namespace (`netns` by `ip netns` name, or the
    calling thread's). `overruns`: how often the kernel dropped events for lack of room;
    `undecodable`: messages that were not events we can read."""

    def __init__(self, netns: str | None = None, rcvbuf: int = RCVBUF) -> None:
        if netns is not None:
            with inside(netns):
                self._sock = _open(rcvbuf)
        else:
            self._sock = _open(rcvbuf)
        self.overruns = 0
        self.undecodable = 0

    def fileno(self) -> int:
        return self._sock.fileno()

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def read(self, timeout: float) -> list[Event]:
        """The events that arrive within `timeout` seconds (after the first buffer, only what
        is already queued); [] if none came."""
        ready, _, _ = select.select([self._sock], [], [], timeout)
        if not ready:
            return []
        out: list[Event] = []
        while True:
            try:
                data = self._sock.recv(1 << 16, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return out
            except OSError as exc:
                if exc.errno != errno.ENOBUFS:
                    raise
                self.overruns += 1  # the kernel dropped events: count, carry on
                continue
            events, bad = decode_events(data)
            self.undecodable += bad
            out.extend(events)


def _open(rcvbuf: int) -> socket.socket:
    return netlink_socket(rcvbuf, GROUPS)
