"""The conntrack table of real namespaces: round trips, delete, flush, errors, labels."""

from __future__ import annotations

import os
from dataclasses import replace
from ipaddress import IPv4Address, IPv6Address, ip_address

import pytest

from hyperwall.dataplane.conntrack.entry import (
    IPS_ASSURED,
    IPS_CONFIRMED,
    IPS_SEEN_REPLY,
    ZONE_DIR_ORIG,
    Entry,
    TcpInfo,
    Tuple,
)
from hyperwall.dataplane.conntrack.kernel import Conntrack, InjectError, apply
from hyperwall.dataplane.conntrack.transfer import delta, snapshot
from tests.dataplane.conntrack.netns_lab import namespaces, nft

pytestmark = [
    pytest.mark.kernel,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: creates network namespaces"),
]

STATUS = IPS_CONFIRMED | IPS_SEEN_REPLY | IPS_ASSURED
# A rule that sets a label (and matches nothing) makes the kernel give entries labels.
LABELS_ON = """table inet hwct {
  chain c { type filter hook prerouting priority 0; meta mark 0x5eed ct label set 127; }
}"""


def synthetic(n: int, offset: int = 0) -> list[Entry]:
    """n distinct entries of every kind we carry: IPv4/IPv6, TCP/UDP/ICMP/protocol 253,
    marks, labels, zones (also directional)."""
    out = []
    for i in range(offset, offset + n):
        kind = i % 6
        v6 = kind in (1, 4)
        a = IPv6Address(0xFD00 << 112 | i) if v6 else IPv4Address(0x0A000000 + i)
        b = ip_address("fd00::ffff") if v6 else IPv4Address("10.255.0.1")
        port = 1024 + i % 60000
        if kind in (0, 1):
            o, r = Tuple(a, b, 6, port, 443), Tuple(b, a, 6, 443, port)
            tcp = TcpInfo(3, 7, 9, 0x23, 0x33)
        elif kind in (2, 4):
            o, r, tcp = Tuple(a, b, 17, port, 53), Tuple(b, a, 17, 53, port), None
        elif kind == 3:
            o, r, tcp = (
                Tuple(a, b, 1, i & 0xFFFF, 0, 8, 0),
                Tuple(b, a, 1, i & 0xFFFF, 0, 0, 0),
                None,
            )
        else:
            o, r, tcp = Tuple(a, b, 253), Tuple(b, a, 253), None
        out.append(
            Entry(
                o,
                r,
                status=STATUS,
                timeout=600 + i % 1000,
                mark=i * 7 % 2**32,
                labels=(1 << (i % 128)) | (1 << 127) if i % 2 else 0,
                zone=i % 3 * 5,
                zone_dir=ZONE_DIR_ORIG if i % 30 == 5 else 3,
                tcp=tcp,
            )
        )
    return out


def close(a: list[Entry], b: list[Entry], slack: int = 5) -> None:
    by_key = {e.key: e for e in b}
    assert len(a) == len(b) == len(by_key)
    for e in a:
        got = by_key[e.key]
        assert replace(got, timeout=0) == replace(e, timeout=0)
        assert e.timeout - slack <= got.timeout <= e.timeout


def test_1000_entries_round_trip_exactly() -> None:
    with namespaces("x", "y") as ns:
        nft(ns["x"], LABELS_ON)
        nft(ns["y"], LABELS_ON)
        sent = synthetic(1000)
        with Conntrack(ns["x"]) as x, Conntrack(ns["y"]) as y:
            assert x.inject(sent) == 1000
            dumped = x.dump()
            close(sent, dumped)
            assert y.inject(dumped) == 1000
            close(dumped, y.dump())


def test_dump_by_address_and_flush() -> None:
    with namespaces("x") as ns, Conntrack(ns["x"]) as x:
        sent = synthetic(60)
        x.inject(sent)
        vm = {sent[0].orig.src, sent[1].orig.src}
        assert {e.key for e in x.dump(vm)} == {sent[0].key, sent[1].key}
        shared = {IPv4Address("10.255.0.1")}  # the destination of all IPv4 entries
        assert len(x.dump(shared)) == sum(e.family == 4 for e in sent)
        x.flush(vm)
        assert x.dump(vm) == [] and x.count() == 58
        x.flush(shared)
        v6 = [e for e in sent if e.family == 6]
        assert x.count() == len(v6) - 1
        one = v6[3].orig.src
        assert [e.key for e in x.dump({one})] == [v6[3].key]
        x.flush({one})
        assert x.count() == len(v6) - 2


def test_labels_need_the_label_extension() -> None:
    """Without a rule that sets labels the kernel drops them silently on create."""
    labelled = [e for e in synthetic(10) if e.labels][:1]
    with namespaces("x") as ns, Conntrack(ns["x"]) as x:
        x.inject(labelled)
        assert x.dump()[0].labels == 0


def test_exists_update_skip_fail() -> None:
    with namespaces("x") as ns, Conntrack(ns["x"]) as x:
        [e] = synthetic(1)
        x.inject([e])
        assert x.inject([replace(e, mark=99)], on_exists="skip") == 0
        assert x.dump()[0].mark == e.mark
        with pytest.raises(InjectError) as err:
            x.inject([replace(e, mark=99), *synthetic(1, offset=1)], on_exists="fail")
        assert err.value.applied == 1 and "EEXIST" in str(err.value)
        assert x.inject([replace(e, mark=99)]) == 1
        assert {d.mark for d in x.dump() if d.key == e.key} == {99}


def test_refused_entries_are_reported_and_the_rest_go_in() -> None:
    with namespaces("x") as ns, Conntrack(ns["x"]) as x:
        good = synthetic(5)
        bad = replace(good[0], reply=replace(good[0].reply, proto=17), tcp=None)
        with pytest.raises(InjectError) as err:
            x.inject([bad, *good[1:]])
        assert err.value.applied == 4 and err.value.failed[0].entry == bad
        assert "EINVAL" in str(err.value)
        assert x.count() == 4


def test_delta_applied_on_the_destination() -> None:
    with namespaces("src", "dst") as ns, Conntrack(ns["src"]) as s, Conntrack(ns["dst"]) as d:
        first = synthetic(40)
        s.inject(first)
        before = snapshot(s.dump())
        d.inject(list(before.values()))
        s.delete(first[:10])
        s.inject(synthetic(5, offset=100))
        s.inject([replace(first[20], mark=1234)])
        after = snapshot(s.dump())
        change = delta(before, after)
        assert len(change.removed) == 10 and len(change.changed) == 6
        apply(d, change)
        close(list(after.values()), d.dump())


def test_inject_many_measured() -> None:
    """Timing, printed (not asserted): inject, dump, delete of 1k/10k/100k entries."""
    import time

    for n in (1_000, 10_000, 100_000):
        with namespaces("x") as ns, Conntrack(ns["x"]) as x:
            entries = synthetic(n)
            t0 = time.perf_counter()
            x.inject(entries)
            t1 = time.perf_counter()
            got = x.dump()
            t2 = time.perf_counter()
            x.delete(entries)
            t3 = time.perf_counter()
            assert len(got) == n and x.count() == 0
            print(
                f"\nconntrack {n:>7}: inject {t1 - t0:.3f} s, dump {t2 - t1:.3f} s, "
                f"delete {t3 - t2:.3f} s"
            )
