"""The agents' handover end to end in two namespaces (`agent.migration`, real kernel, real
transport on loopback): after precopy, changes during the move and the switchover delta,
the destination holds what the source holds; the delta carries only what changed; without
a change list the switchover sends everything and the destination drops what is gone; a
precopy its orchestrator abandoned after the VM left is cleaned up on the source."""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from ipaddress import IPv4Address

import pytest

from hyperwall.agent import migration
from hyperwall.agent.handover import HandoverReceiver
from hyperwall.agent.migration import Migrations
from hyperwall.dataplane.conntrack.entry import Entry, TcpInfo, Tuple
from hyperwall.dataplane.conntrack.kernel import Conntrack
from hyperwall.dataplane.conntrack.watch import set_events
from hyperwall.dataplane.netns import inside
from tests.dataplane.conntrack.netns_lab import namespaces

pytestmark = [
    pytest.mark.kernel,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: creates network namespaces"),
]

VM, PEER = IPv4Address("10.8.0.5"), IPv4Address("10.8.1.1")


def entry(port: int, proto: int = 6, mark: int = 0) -> Entry:
    tcp = TcpInfo(3, 7, 7, 0x03, 0x03) if proto == 6 else None
    return Entry(
        Tuple(PEER, VM, proto, port, 443),
        Tuple(VM, PEER, proto, 443, port),
        timeout=3000,
        mark=mark,
        tcp=tcp,
    )


@dataclass
class Pair:
    ns: dict[str, str]
    source: Migrations
    dest: Migrations
    receiver: HandoverReceiver
    key: str

    def send(self, phase: str) -> dict[str, object]:
        with inside(self.ns["a"]):
            return self.source.send("acme/vm", self.receiver.address, self.key, phase)

    def held(self, role: str) -> dict[object, Entry]:
        with Conntrack(self.ns[role]) as ct:
            return {e.key: e for e in ct.dump([VM])}


@pytest.fixture
def pair() -> Iterator[Pair]:
    with namespaces("a", "b") as ns:
        set_events(ns["a"])  # as the agent does at start
        source = Migrations("hva", None, None, lambda: None, lambda: None)
        dest = Migrations("hvb", None, None, lambda: None, lambda: None)
        source.known["acme/vm"] = [VM]  # the VM's addresses (its program is not needed)

        def apply(vm: str, phase: str, state: bytes) -> int:
            with inside(ns["b"]):  # the destination's kernel
                return dest.apply(vm, phase, state)

        with inside(ns["a"]):  # on a's loopback, where the source's `send` connects
            receiver = HandoverReceiver("127.0.0.1:0", apply)
            receiver.start()
        key = secrets.token_hex(32)
        receiver.expect("acme/vm", key)
        dest.receiver = receiver
        try:
            yield Pair(ns, source, dest, receiver, key)
        finally:
            receiver.stop()
            for watch in list(source.watches.values()):
                watch.stop()


def same(a: dict[object, Entry], b: dict[object, Entry]) -> None:
    """b holds a's entries: the same keys, the same values but the timeout (and a copy's
    liberal TCP flags)."""
    assert a.keys() == b.keys()
    for k, e in a.items():
        got = b[k]
        assert (got.reply, got.mark, got.status) == (e.reply, e.mark, e.status)
        assert got.tcp is None or (got.tcp.state, got.tcp.flags_orig & 0x07) == (
            e.tcp.state if e.tcp else None,
            e.tcp.flags_orig & 0x07 if e.tcp else None,
        )
        assert e.timeout - 30 <= got.timeout <= e.timeout + 30


@pytest.mark.parametrize("chunk", [64, migration.PRECOPY_CHUNK])
def test_the_switchover_sends_what_changed_and_the_destination_matches(
    pair: Pair, chunk: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(migration, "PRECOPY_CHUNK", chunk)  # 64: the precopy in 7 chunks
    before = [entry(p) for p in range(20000, 20300)] + [entry(p, 17) for p in range(100)]
    with Conntrack(pair.ns["a"]) as a:
        a.inject(before)
        pre = pair.send("precopy")
        assert pre["entries"] == 400 and pre["applied"] == 400
        a.delete(before[:10])  # closed during the move
        a.inject([entry(p) for p in range(30000, 30005)])  # opened during the move
        a.inject([replace(e, mark=7) for e in before[50:53]])  # changed during the move
    switched = pair.send("switchover")
    assert switched["whole"] is False
    assert switched["sent"] == 10 + 5 + 3  # only what changed
    assert switched["entries"] == 400 - 10 + 5
    same(pair.held("a"), pair.held("b"))
    with inside(pair.ns["a"]):
        released = pair.source.release("acme/vm")
    assert released["removed"] == 395 and pair.held("a") == {}
    assert pair.source.watches == {}


def test_without_a_change_list_everything_goes_and_what_is_gone_goes_too(pair: Pair) -> None:
    before = [entry(p) for p in range(20000, 20100)]
    with Conntrack(pair.ns["a"]) as a:
        a.inject(before)
        pair.send("precopy")
        pair.source.watches.pop("acme/vm").stop()  # as if the kernel had dropped events
        a.delete(before[:7])
    switched = pair.send("switchover")
    assert switched["whole"] is True and switched["sent"] == 93
    same(pair.held("a"), pair.held("b"))  # the 7 gone entries went on b too


def test_an_abandoned_precopy_of_a_vm_that_left_is_cleaned_up(pair: Pair) -> None:
    pair.source.abandon_after = 0.5  # the orchestrator died after the hypervisor's switchover
    with Conntrack(pair.ns["a"]) as a:
        a.inject([entry(p) for p in range(20000, 20050)])
    pair.send("precopy")  # the timer thread is made in a's namespace, like the watch
    deadline = time.monotonic() + 30
    while pair.held("a") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert pair.held("a") == {}  # nothing of the VM stays on the source
    assert pair.source.watches == {} and pair.source.sent == {}
    assert len(pair.held("b")) == 50  # the destination keeps what it was given
