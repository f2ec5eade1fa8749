"""`nft.trace_kernel` in a real kernel: namespaces made here (a host with two VM links), a
stand-in `inet hyperwall` table; a probe injected at the source VM's link is traced, and
only it (the VM's own traffic of the same addresses is not); nothing stays behind."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator

import pytest

from hyperwall.dataplane.netns import inside
from hyperwall.dataplane.nft.trace_frame import Probe
from hyperwall.dataplane.nft.trace_kernel import (
    PROBE_DEV,
    Injector,
    TraceListener,
    TraceTable,
    link_mac,
)
from hyperwall.dataplane.nft.trace_netlink import TraceEvent
from tests.lab.conftest import needs_root

pytestmark = [needs_root(), pytest.mark.kernel]

TABLE = """
table inet hyperwall {
  chain forward {
    type filter hook forward priority 0; policy accept;
    tcp dport 5432 counter drop
    counter accept
  }
}
"""


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True)


@pytest.fixture(scope="module")
def host() -> Iterator[dict[str, str]]:
    tag = f"hwfk{os.getpid() % 100_000}"
    names = {"h": f"{tag}-h", "v": f"{tag}-v", "d": f"{tag}-d"}
    try:
        for ns in names.values():
            ip("netns", "add", ns)
        h = names["h"]
        for peer, dev, net in (("v", "hwfv0", "10.77.0"), ("d", "hwfd0", "10.77.1")):
            ip(
                "-n",
                h,
                "link",
                "add",
                dev,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                names[peer],
            )
            ip("-n", h, "addr", "add", f"{net}.254/24", "dev", dev)
            ip("-n", h, "link", "set", dev, "up")
            ip("-n", names[peer], "addr", "add", f"{net}.1/24", "dev", "eth0")
            ip("-n", names[peer], "link", "set", "eth0", "up")
            ip("-n", names[peer], "route", "add", "default", "via", f"{net}.254")
        subprocess.run(
            ["ip", "netns", "exec", h, "sysctl", "-qw", "net.ipv4.ip_forward=1"], check=True
        )
        subprocess.run(
            ["ip", "netns", "exec", h, "nft", "-f", "-"], input=TABLE, text=True, check=True
        )
        yield names
    finally:
        for ns in names.values():
            subprocess.run(["ip", "netns", "del", ns], check=False, capture_output=True)


def _vm_mac(ns: str) -> str:
    with inside(ns):
        return link_mac("eth0")


def _events(listener: TraceListener) -> list[TraceEvent]:
    return list(
        listener.events(
            time.monotonic() + 3.0,
            lambda e: e.table == "hyperwall" and e.verdict in ("accept", "drop"),
        )
    )


def test_a_probe_is_traced_and_only_it(host: dict[str, str]) -> None:
    probe = Probe("10.77.0.1", "10.77.1.1", "tcp", 5432, 45678)
    with inside(host["h"]):
        table, listener = TraceTable(), TraceListener()
        try:
            table.arm("t1", probe)
            # the VM's own connection attempt to the same port: another source port
            with inside(host["v"]):
                s = socket.socket()
                s.setblocking(False)
                s.connect_ex(("10.77.1.1", 5432))
            quiet = list(listener.events(time.monotonic() + 1.0, lambda e: False))
            assert [e for e in quiet if e.table == "hyperwall"] == []
            Injector().inject(probe, "hwfv0", _vm_mac(host["v"]), 0x1234)
            events = _events(listener)
            handles = table.chain_handles("hyperwall", "forward")
        finally:
            s.close()
            listener.close()
            table.disarm("t1")
        ours = [e for e in events if e.table == "hyperwall"]
        assert [(e.chain, e.verdict) for e in ours] == [("forward", "drop")]
        assert ours[0].handle == handles[0]
        assert ours[0].mark in (None, 0)  # the injection's mark is cleared (0: not sent)
        assert any(e.table == "hyperwall_trace" for e in events)
        listing = table.kernel.command("list table inet hyperwall_trace")
        assert "lt_t1" not in listing
        table.remove_all()
        assert "hyperwall_trace" not in table.kernel.command("list tables")
        assert "hyperwall" in table.kernel.command("list tables")  # the agent's own stays
        Injector.remove_all()
        with pytest.raises(OSError):
            socket.if_nametoindex(PROBE_DEV)


def test_an_allowed_probe_reaches_the_destination(host: dict[str, str]) -> None:
    probe = Probe("10.77.0.1", "10.77.1.1", "udp", 9999, 40001)
    with inside(host["d"]):
        sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sink.bind(("10.77.1.1", 9999))
        sink.settimeout(5)
    with sink, inside(host["h"]):
        table, listener = TraceTable(), TraceListener()
        try:
            table.arm("t2", probe)
            Injector().inject(probe, "hwfv0", _vm_mac(host["v"]), 0x4321)
            events = _events(listener)
        finally:
            listener.close()
            table.disarm("t2")
            Injector.remove_all()
        data, sender = sink.recvfrom(100)  # a real datagram, checksums and all
        assert sender == ("10.77.0.1", 40001) and data == b"hyperwall-trace"
        assert [(e.chain, e.verdict) for e in events if e.table == "hyperwall"] == [
            ("forward", "accept")
        ]
