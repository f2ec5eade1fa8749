"""Enter a named network namespace for the duration of a block (the calling thread only).

Netlink sockets, like a libnftables context, stay bound to the namespace they were created
in: create them inside `inside(name)` and use them after it.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Iterator
from contextlib import contextmanager

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


@contextmanager
def inside(name: str) -> Iterator[None]:
    """Run the block in network namespace `name` (as made by `ip netns add`)."""
    target = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        with enter(target):
            yield
    finally:
        os.close(target)


@contextmanager
def enter(fd: int) -> Iterator[None]:
    """Run the block in the network namespace open as `fd` (the calling thread only), and
    check that the thread is really there before it does anything."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        _setns(fd)
        try:
            if os.stat("/proc/thread-self/ns/net").st_ino != os.fstat(fd).st_ino:
                raise OSError("setns did not move the thread into the namespace")
            yield
        finally:
            _setns(own)
    finally:
        os.close(own)
