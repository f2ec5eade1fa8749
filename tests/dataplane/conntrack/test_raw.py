"""Entries as the kernel's attributes (`conntrack.raw`): a copy decodes to the liberal,
confirmed entry; keys agree whichever way an entry was read; the fast and slow paths agree.
Pure property tests, then the real kernel's dumps."""

from __future__ import annotations

import os
from dataclasses import replace
from ipaddress import ip_address

import pytest
from hypothesis import given, settings

from hyperwall.dataplane.conntrack import attrs, raw, wire
from hyperwall.dataplane.conntrack.entry import IPS_CONFIRMED, Entry
from hyperwall.dataplane.conntrack.kernel import Conntrack
from tests.dataplane.conntrack.netns_lab import namespaces, nft
from tests.dataplane.conntrack.strategies import entries
from tests.dataplane.conntrack.test_kernel import LABELS_ON, synthetic

root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: creates network namespaces")


def liberal(entry: Entry) -> Entry:
    """The model of a copy: confirmed, and a TCP entry's flags liberal both ways."""
    tcp = entry.tcp
    if tcp is not None:
        tcp = replace(
            tcp,
            flags_orig=tcp.flags_orig | raw.TCP_BE_LIBERAL,
            flags_reply=tcp.flags_reply | raw.TCP_BE_LIBERAL,
        )
    return replace(entry, status=entry.status | IPS_CONFIRMED, tcp=tcp)


@settings(max_examples=300)
@given(entries())
def test_a_copy_decodes_to_the_liberal_entry(entry: Entry) -> None:
    body = attrs.encode(entry, for_kernel=False)
    copied = raw.copy(body)
    assert attrs.decode(copied.body) == liberal(entry)
    assert copied.timeout == entry.timeout
    assert raw.key_of(copied.body) == copied.key == raw.key_in(body, 0, len(body))
    assert raw.key_entry(copied.key).orig == entry.orig
    again = raw.copy(body)  # the second time through the learned layout: the same
    assert again == copied
    assert raw._copy_slowly(body, 0, len(body)) == copied
    assert raw.family_of(copied.key) == (raw.AF_INET if entry.family == 4 else raw.AF_INET6)
    assert raw.key_addresses(copied.key) == {entry.orig.src.packed, entry.orig.dst.packed}


@given(entries(), entries())
def test_a_layout_learned_from_one_entry_is_not_applied_to_another_shape(
    a: Entry, b: Entry
) -> None:
    for entry in (a, b, a):
        body = attrs.encode(entry, for_kernel=False)
        assert attrs.decode(raw.copy(body).body) == liberal(entry)


def test_bad_attributes_are_refused() -> None:
    with pytest.raises(raw.RawError):
        raw.copy(b"\x02\x00\x01\x00")  # a length below the header's
    only_reply = attrs.encode(synthetic(1)[0])[52:]
    with pytest.raises(raw.RawError):
        raw.copy(only_reply)


@root
@pytest.mark.kernel
def test_dumped_copied_and_injected_elsewhere_the_entries_are_the_same() -> None:
    with namespaces("x", "y") as ns:
        nft(ns["x"], LABELS_ON)
        nft(ns["y"], LABELS_ON)
        sent = synthetic(600)
        # the one peer every entry has (one filtered walk per address: 600 would take long)
        addresses = {e.orig.dst for e in sent}
        assert len(addresses) == 2
        with Conntrack(ns["x"]) as x, Conntrack(ns["y"]) as y:
            x.inject(sent)
            copies = x.dump_raw(addresses)
            assert len(copies) == 600
            carried = wire.dumps_raw(c.body for c in copies)
            arrived = [
                raw.RawEntry(raw.key_of(carried[s:e]), carried[s:e])
                for s, e in wire.frames(carried)
            ]
            assert y.inject_raw(arrived) == 600
            expected = {e.key: liberal(e) for e in x.dump(addresses)}
            got = {e.key: e for e in y.dump(addresses)}
            assert got.keys() == expected.keys()
            for key, entry in expected.items():
                assert replace(got[key], timeout=0) == replace(entry, timeout=0)
            # one entry, one key: from a dump, a get, and the copy's own bytes
            keys = [c.key for c in copies]
            assert {c.key for c in y.dump_raw(addresses)} == set(keys)
            found, gone = y.get_raw(keys[:50])
            assert [f.key for f in found] == keys[:50] and gone == []
            assert y.delete_raw(keys[:10]) == 10
            found, gone = y.get_raw(keys[:20])
            assert gone == keys[:10] and [f.key for f in found] == keys[10:20]
            assert y.count() == 590


@root
@pytest.mark.kernel
def test_ipv6_dump_raw_keeps_only_the_addresses_entries() -> None:
    with namespaces("x") as ns, Conntrack(ns["x"]) as x:
        sent = synthetic(60)
        x.inject(sent)
        one = next(e for e in sent if e.family == 6)
        assert [raw.key_entry(c.key).orig for c in x.dump_raw([one.orig.src])] == [one.orig]
        assert x.dump_raw([ip_address("10.254.0.1")]) == []
