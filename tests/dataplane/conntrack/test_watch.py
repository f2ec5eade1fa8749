"""The change list from conntrack events (`conntrack.watch`), in a real namespace: the keys
of the watched addresses' entries created, updated and destroyed, nothing else; lost
events are reported."""

from __future__ import annotations

import os
from dataclasses import replace
from ipaddress import IPv4Address

import pytest

from hyperwall.dataplane.conntrack import raw
from hyperwall.dataplane.conntrack.entry import Entry, Tuple
from hyperwall.dataplane.conntrack.kernel import Conntrack
from hyperwall.dataplane.conntrack.watch import ChangeWatch, set_events
from tests.dataplane.conntrack.netns_lab import namespaces

pytestmark = [
    pytest.mark.kernel,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: creates network namespaces"),
]

VM, OTHER = IPv4Address("10.9.0.5"), IPv4Address("10.9.0.6")


def udp(a: IPv4Address, b: IPv4Address, port: int) -> Entry:
    return Entry(Tuple(a, b, 17, port, 53), Tuple(b, a, 17, 53, port), timeout=300)


def test_the_watched_addresses_changes_and_nothing_else() -> None:
    before = [udp(VM, OTHER, 1000), udp(OTHER, VM, 1001), udp(VM, OTHER, 1002)]
    with namespaces("x") as ns, Conntrack(ns["x"]) as x:
        set_events(ns["x"])  # as the agent does: entries from before the watch report too
        x.inject(before)
        watch = ChangeWatch([VM], ns["x"])
        try:
            x.inject([replace(before[0], mark=7)])  # updated
            x.delete([before[1]])  # destroyed
            x.inject([udp(VM, OTHER, 2000)])  # created
            x.inject([udp(IPv4Address("10.9.9.9"), OTHER, 3000)])  # another address's
        finally:
            changes = watch.stop()
        assert not changes.overrun
        ports = sorted(raw.key_entry(k).orig.sport for k in changes.keys)
        assert ports == [1000, 1001, 2000]
        assert changes.events >= 4


def test_lost_events_are_reported() -> None:
    with namespaces("x") as ns, Conntrack(ns["x"]) as x:
        watch = ChangeWatch([VM], ns["x"], rcvbuf=4096)
        try:
            x.inject([udp(VM, OTHER, p) for p in range(1024, 6024)])
        finally:
            changes = watch.stop()
        assert changes.overrun
