"""An NFLOG socket bound to one log group in one network namespace: the only I/O of the
flow log's input.

Counterpart of `nflog.messages` (the messages it sends and decodes). The socket is opened
inside the target namespace (log groups are per namespace) and stays bound to it. A group
has at most one listener per namespace: a second bind fails (EBUSY), reported with the
group's number. The kernel batches messages (`qthresh` packets or `timeout_cs`
hundredths of a second, whichever comes first) into buffers of `bufsize` bytes, and queues
them in the socket's receive buffer, which is bounded (`rcvbuf`); when a flood fills it the
kernel drops messages and the next `recv` fails with ENOBUFS: that is counted
(`overruns`) and reading goes on. Memory here is the receive buffer and one read buffer,
whatever the rate.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import socket
from typing import Self

from hyperwall.dataplane.netns import inside
from hyperwall.dataplane.nflog.messages import (
    NETLINK_NETFILTER,
    LogMessage,
    NflogDecodeError,
    config_messages,
    parse_messages,
    unbind_message,
)

_SO_RCVBUFFORCE = 33
RCVBUF = 4 << 20  # bytes of queued messages: about 10,000 logged packets
COPY_RANGE = 128  # bytes of each packet: IPv6 with a few extension headers and ports
BUFSIZE = 128 * 1024  # the kernel's batch buffer (its maximum)
TIMEOUT_CS = 5  # a batch is sent after 50 ms at the latest
QTHRESH = 256  # or once it holds this many packets (about half the buffer): few wake-ups
READ_SIZE = 256 * 1024


class NflogError(OSError):
    """The group could not be bound (taken by another listener, or no permission)."""


class NflogReader:
    """Logged packets of `group` in namespace `netns` (an `ip netns` name; None: the
    calling thread's). `overruns`: how often the kernel dropped messages for lack of room;
    `undecodable`: buffers that did not parse."""

    def __init__(self, group: int, netns: str | None = None, rcvbuf: int = RCVBUF) -> None:
        self.group = group
        with inside(netns) if netns is not None else contextlib.nullcontext():
            self._sock = _open(rcvbuf)
        self.overruns = 0
        self.undecodable = 0
        self._buffer = bytearray(READ_SIZE)
        try:
            self._configure()
        except BaseException:
            self._sock.close()
            raise

    def _configure(self) -> None:
        for request in config_messages(self.group, COPY_RANGE, BUFSIZE, TIMEOUT_CS, QTHRESH):
            self._sock.send(request)
            code = self._ack()
            if code != 0:
                raise NflogError(
                    -code,
                    f"NFLOG group {self.group}: {os.strerror(-code)} (is it taken?)",
                )

    def _ack(self) -> int:
        deadline_reads = 16  # packets of the group may arrive before the answer
        for _ in range(deadline_reads):
            ready, _, _ = select.select([self._sock], [], [], 5.0)
            if not ready:
                break
            size = self._sock.recv_into(self._buffer)
            for item in parse_messages(memoryview(self._buffer)[:size]):
                if isinstance(item, int):
                    return item
        raise NflogError(errno.ETIMEDOUT, f"NFLOG group {self.group}: no answer from the kernel")

    def fileno(self) -> int:
        return self._sock.fileno()

    def close(self) -> None:
        if self._sock.fileno() >= 0:
            with contextlib.suppress(OSError):  # closing the socket unbinds as well
                self._sock.send(unbind_message(self.group))
            self._sock.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def read(self, timeout: float, limit: int = 4096) -> list[LogMessage]:
        """The logged packets that arrive within `timeout` seconds (after the first buffer,
        only what is already queued, at most about `limit`); [] if none came."""
        ready, _, _ = select.select([self._sock], [], [], timeout)
        if not ready:
            return []
        out: list[LogMessage] = []
        while len(out) < limit:
            try:
                size = self._sock.recv_into(self._buffer, READ_SIZE, socket.MSG_DONTWAIT)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:
                    self.overruns += 1
                    continue
                raise
            try:
                out.extend(
                    m
                    for m in parse_messages(memoryview(self._buffer)[:size])
                    if isinstance(m, LogMessage)
                )
            except NflogDecodeError:
                self.undecodable += 1
        return out


def _open(rcvbuf: int) -> socket.socket:
    sock = socket.socket(
        socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_NETFILTER
    )
    try:
        sock.setsockopt(socket.SOL_SOCKET, _SO_RCVBUFFORCE, rcvbuf)
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.bind((0, 0))
    return sock
