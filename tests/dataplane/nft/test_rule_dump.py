"""`nft.rule_dump`: the request, garbage refused with `DumpError` only, and the kernel's own
answer (the comparison with libnftables' listing is in `test_hits.py`)."""

from __future__ import annotations

import struct
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hyperwall.dataplane.nft import rule_dump
from hyperwall.dataplane.nft.kernel import NftKernel

from .hwe_netns import nft_in_namespace


@pytest.fixture
def nft() -> Iterator[NftKernel]:
    with nft_in_namespace() as kernel:
        yield kernel


def test_the_request_names_the_table() -> None:
    request = rule_dump.dump_request("hyperwall", 7)
    length, kind, flags, seq, _ = struct.unpack_from("=IHHII", request)
    assert (length, kind, flags, seq) == (len(request), (10 << 8) | 7, 0x301, 7)
    assert request[20:].startswith(struct.pack("=HH", 14, 1) + b"hyperwall\0")


@given(st.binary(max_size=300))
def test_garbage_is_a_dump_error_or_nothing(data: bytes) -> None:
    try:
        rules, _ = rule_dump.parse(data)
    except rule_dump.DumpError:
        return
    assert all("chain" in r["rule"] for r in rules)


def test_a_refusal_carries_its_errno() -> None:
    error = struct.pack("=IHHII", 36, 2, 0, 1, 0) + struct.pack("=i", -2) + b"\0" * 16
    with pytest.raises(rule_dump.DumpError) as caught:
        rule_dump.parse(error)
    assert caught.value.errno == 2


@pytest.mark.kernel
def test_no_table_lists_no_rules(nft: NftKernel) -> None:
    assert nft.list_rules() == {"nftables": []}
    nft.command("add table inet hyperwall")
    nft.command("add chain inet hyperwall c")
    nft.command("add rule inet hyperwall c counter accept")
    nft.command("add rule inet hyperwall c accept")
    assert nft.list_rules() == {
        "nftables": [
            {"rule": {"chain": "c", "expr": [{"counter": {"packets": 0, "bytes": 0}}]}},
            {"rule": {"chain": "c", "expr": []}},
        ]
    }
