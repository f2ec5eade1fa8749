"""`agent.trace_worker`: tasks to probes and packets, the path as text, the route an
external probe enters by (in a namespace made here), and a task handled once although the
manager may send it again. Its whole run against the kernel and the manager is
`tests/e2e/test_live_trace.py`."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator

import pytest

from hyperwall.agent.manager_source import Client
from hyperwall.agent.trace_worker import TraceWorker, describe, packet_of, probe_of, route_device
from hyperwall.dataplane.netns import inside
from hyperwall.dataplane.nft.render import Options
from hyperwall.dataplane.nft.trace_frame import Probe
from hyperwall.dataplane.nft.trace_netlink import TraceEvent
from tests.lab.conftest import needs_root


def test_task_to_probe_and_packet() -> None:
    task = {
        "probe": {
            "src": "10.1.0.21",
            "dst": "10.1.0.41",
            "proto": "tcp",
            "port": 5432,
            "tag": 40123,
        }
    }
    probe = probe_of(task)
    assert probe == Probe("10.1.0.21", "10.1.0.41", "tcp", 5432, 40123)
    packet = packet_of(probe)
    assert (packet.proto, packet.sport, packet.dport) == (6, 40123, 5432)
    icmp = packet_of(Probe("fd00::1", "fd00::2", "icmpv6", 128, 9))
    assert (icmp.proto, icmp.sport, icmp.dport, icmp.family) == (58, 9, 128, 6)


def test_describe() -> None:
    assert describe(TraceEvent(1, "rule", "hyperwall", "p_1", 7, "goto", "l_2")) == (
        "p_1#7 rule goto l_2"
    )
    assert describe(TraceEvent(1, "policy", "hyperwall", "forward", None, "accept")) == (
        "forward policy accept"
    )


def test_a_task_is_handled_once() -> None:
    """A resent task (the manager redelivers what it has not seen acknowledged) is skipped;
    an unknown action does nothing."""
    worker = TraceWorker(Client("http://127.0.0.1:9", "t", "hv1"), lambda: (None, None), Options())
    task = {"id": "abc", "action": "nothing-known", "probe": {}}
    worker.handle(task)
    worker.handle(task)
    assert list(worker.handled) == [("abc", "nothing-known")]


@pytest.fixture
def netns() -> Iterator[str]:
    name = f"hwfw{os.getpid() % 100_000}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        for cmd in (
            ["link", "add", "hwfu0", "type", "veth", "peer", "name", "hwfu1"],
            ["link", "set", "hwfu0", "up"],
            ["addr", "add", "192.0.2.1/24", "dev", "hwfu0"],
            ["route", "add", "198.51.100.0/24", "via", "192.0.2.2", "dev", "hwfu0", "onlink"],
        ):
            subprocess.run(["ip", "-n", name, *cmd], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


@needs_root()
def test_route_device(netns: str) -> None:
    with inside(netns):
        assert route_device("198.51.100.7") == "hwfu0"
        with pytest.raises(OSError):
            route_device("203.0.113.1")  # no route there
