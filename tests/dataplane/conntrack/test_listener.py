"""`conntrack.listener` against the kernel: a real connection's NEW and DESTROY events, with
the mark an nft rule set, counters both ways and timestamps; an overflowing receive buffer
is counted, not fatal. In a throwaway namespace `hwe-<pid>-ct`."""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Iterator

import pytest

from hyperwall.dataplane.conntrack import accounting
from hyperwall.dataplane.conntrack.entry import Entry
from hyperwall.dataplane.conntrack.events import Event
from hyperwall.dataplane.conntrack.kernel import Conntrack
from hyperwall.dataplane.conntrack.listener import EventListener
from hyperwall.dataplane.netns import inside

pytestmark = [
    pytest.mark.kernel,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces)"),
]
MARK = 0x40000007


@pytest.fixture(scope="module")
def ns() -> Iterator[str]:
    name = f"hwe-{os.getpid() % 100000}-ct"
    subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        accounting.enable(name)
        rule = f"ct state new ct mark set {MARK:#x}"
        script = (
            "add table inet hwe; add chain inet hwe o { type filter hook output priority 0; }; "
            f"add rule inet hwe o udp dport 5555 {rule}"
        )
        subprocess.run(["ip", "netns", "exec", name, "nft", script], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def _events(listener: EventListener, want: int, port: int, rounds: int = 60) -> list[Event]:
    """The events of connections from `port`, once `want` of them came (or after `rounds`
    seconds without)."""
    got: list[Event] = []
    for _ in range(rounds):
        got.extend(e for e in listener.read(1.0) if e.orig.sport == port)
        if len(got) >= want:
            break
    return got


def test_a_connection_gives_new_then_destroy_with_counters(ns: str) -> None:
    assert accounting.enabled(ns) == {"nf_conntrack_acct": True, "nf_conntrack_timestamp": True}
    with EventListener(ns) as listener, Conntrack(ns) as ct:
        with inside(ns):
            server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with server, client:
            server.bind(("127.0.0.1", 5555))
            client.sendto(b"x" * 100, ("127.0.0.1", 5555))
            client.sendto(b"x" * 100, ("127.0.0.1", 5555))
            _, peer = server.recvfrom(1000)
            server.sendto(b"y" * 50, peer)
            sport = client.getsockname()[1]
        new = _events(listener, 1, sport)
        assert [(e.kind, e.orig.sport, e.orig.dport, e.mark) for e in new] == [
            ("new", sport, 5555, MARK)
        ]
        # end it now rather than after the UDP timeout and the kernel's garbage collection
        entries: list[Entry] = [e for e in ct.dump() if e.orig.sport == sport]
        assert ct.delete(entries) == 1
        destroy = _events(listener, 1, sport)
    assert len(destroy) == 1
    gone = destroy[0]
    assert (gone.kind, gone.id, gone.orig, gone.mark) == ("destroy", new[0].id, new[0].orig, MARK)
    # two datagrams of 100 bytes (+ 28 of headers) out, one of 50 (+ 28) back
    assert gone.orig_counters is not None and gone.reply_counters is not None
    assert (gone.orig_counters.packets, gone.orig_counters.bytes) == (2, 256)
    assert (gone.reply_counters.packets, gone.reply_counters.bytes) == (1, 78)
    assert gone.start is not None and gone.stop is not None and gone.start <= gone.stop


def test_an_overflowing_buffer_is_counted_and_reading_goes_on(ns: str) -> None:
    with EventListener(ns, rcvbuf=4096) as listener:
        with inside(ns):
            server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            clients = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(300)]
        with server:
            server.bind(("127.0.0.1", 5556))
            for client in clients:
                client.sendto(b"x", ("127.0.0.1", 5556))
                client.close()
            listener.read(1.0)
            assert listener.overruns >= 1
            # and it still reads what comes next
            with inside(ns):
                late = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            with late:
                late.sendto(b"x", ("127.0.0.1", 5556))
                port = late.getsockname()[1]
                seen = _events(listener, 1, port)
    assert [e.kind for e in seen] == ["new"]
