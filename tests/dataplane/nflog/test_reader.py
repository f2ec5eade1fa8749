"""`nflog.reader` against the kernel: a packet an nft `log group` rule logged arrives with
its prefix, interfaces, headers; a second listener of the group is refused by name; a
flood that overfills the receive buffer is counted, not fatal. In a throwaway namespace
`hwc-<pid>-nflog`."""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Iterator

import pytest

from hyperwall.dataplane.netns import inside
from hyperwall.dataplane.nflog.messages import LogMessage
from hyperwall.dataplane.nflog.packet import parse_headers
from hyperwall.dataplane.nflog.reader import NflogError, NflogReader

pytestmark = [
    pytest.mark.kernel,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces)"),
]
GROUP = 77
PREFIX = "hw 1 drop out anti-spoofing"


@pytest.fixture(scope="module")
def ns() -> Iterator[str]:
    name = f"hwc-{os.getpid() % 100000}-nflog"
    subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        script = (
            "add table inet hwc; add chain inet hwc o { type filter hook output priority 0; }; "
            f'add rule inet hwc o udp dport 5555 log group {GROUP} prefix "{PREFIX}"; '
            f'add rule inet hwc o udp dport 5556 log group {GROUP + 1} prefix "flood"'
        )
        subprocess.run(["ip", "netns", "exec", name, "nft", script], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def _send(ns: str, family: int, address: str, port: int, count: int = 1) -> None:
    with inside(ns):
        sock = socket.socket(family, socket.SOCK_DGRAM)
    with sock:
        sock.bind((address, 40001) if family == socket.AF_INET else (address, 40001, 0, 0))
        for _ in range(count):
            sock.sendto(b"x" * 10, (address, port))


def _wait(reader: NflogReader, want: int, rounds: int = 60) -> list[LogMessage]:
    got: list[LogMessage] = []
    for _ in range(rounds):
        got.extend(reader.read(1.0))
        if len(got) >= want:
            break
    return got


def test_logged_packets_arrive_with_prefix_and_headers(ns: str) -> None:
    with NflogReader(GROUP, ns) as reader:
        _send(ns, socket.AF_INET, "127.0.0.1", 5555)
        _send(ns, socket.AF_INET6, "::1", 5555)
        got = _wait(reader, 2)
    assert [m.prefix for m in got] == [PREFIX, PREFIX]
    assert all(m.group == GROUP for m in got)
    with inside(ns):
        lo = socket.if_nametoindex("lo")
    assert [m.outdev for m in got] == [lo, lo]
    heads = [parse_headers(m.payload) for m in got]
    assert [(h.src, h.dst, h.proto, h.sport, h.dport) for h in heads if h] == [
        ("127.0.0.1", "127.0.0.1", 17, 40001, 5555),
        ("::1", "::1", 17, 40001, 5555),
    ]
    assert [m.family for m in got] == [2, 10]


def test_a_second_listener_is_refused_by_group(ns: str) -> None:
    with NflogReader(GROUP, ns), pytest.raises(NflogError, match=f"group {GROUP}"):
        NflogReader(GROUP, ns)
    with NflogReader(GROUP, ns):  # the first one's close unbound the group
        pass


def test_an_overfull_buffer_is_counted(ns: str) -> None:
    with NflogReader(GROUP + 1, ns, rcvbuf=4096) as reader:
        _send(ns, socket.AF_INET, "127.0.0.1", 5556, count=3000)
        got = _wait(reader, 3000, rounds=3)
        assert reader.overruns >= 1
        assert 0 < len(got) < 3000
        _send(ns, socket.AF_INET, "127.0.0.1", 5556, count=1)  # and it goes on reading
        assert _wait(reader, 1)
