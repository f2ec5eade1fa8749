"""The nfnetlink element path (`nft.netlink`, `NftKernel.add_elements`) against the kernel:
what nft lists back is exactly what was sent, for every exact shape and family; a batch the
kernel refuses changes nothing."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hyperwall.dataplane.nft import netlink
from hyperwall.dataplane.nft import plan as planner
from hyperwall.dataplane.nft.backend import NftBackend
from hyperwall.dataplane.nft.blocks import block_set_specs
from hyperwall.dataplane.nft.kernel import NftKernel
from hyperwall.dataplane.nft.kernel_api import NftError
from hyperwall.dataplane.nft.readback import TornListing, parse_table
from hyperwall.dataplane.nft.table import (
    EXACT_PROTOS,
    FAMILY,
    Element,
    SetSpec,
    TableState,
    block_set_shape,
)

FULL = {4: (1 << 32) - 1, 6: (1 << 128) - 1}
EXACT = [s for s in block_set_specs("b:in:t/p:r1") if not s.interval]


def _element(spec: SetSpec, src: int, dst: int, port: int) -> Element:
    shape = block_set_shape(spec.name)
    family, kind, proto = int(shape[0]), shape[1], int(shape[2:])
    if kind == "s":
        return (src, src, 0, FULL[family], proto, port, port)
    if kind == "d":
        return (0, FULL[family], dst, dst, proto, port, port)
    return (src, src, dst, dst, proto, port, port)


def _read(nft: NftKernel) -> TableState:
    """What the kernel holds (a listing torn by a resize right after a big load is taken
    again: `readback.TornListing`)."""
    return NftBackend(nft).read_actual()[0]


def _fresh_sets(nft: NftKernel, specs: list[SetSpec]) -> None:
    nft.run([planner.table_command("add", FAMILY), *(planner.set_command(s) for s in specs)])


def test_every_exact_shape_reads_back_as_sent(nft: NftKernel) -> None:
    """Edge values too: address 0 and all ones, ports 0 and 65535."""
    _fresh_sets(nft, EXACT)
    sent: dict[str, set[Element]] = {}
    for spec in EXACT:
        family = int(block_set_shape(spec.name)[0])
        sent[spec.name] = {
            _element(spec, src, dst, port)
            for src, dst, port in [
                (1, 2, 80),
                (0, FULL[family], 0),
                (FULL[family], 0, 65535),
                (0x0A000001 << (96 if family == 6 else 0), 7, 5201),
            ]
        }
    nft.add_elements([(s.name, netlink.exact_keys(s, sent[s.name])) for s in EXACT])
    state = _read(nft)
    assert {s.name: state.elements[s.name] for s in EXACT} == sent


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.sampled_from(EXACT),
    st.lists(
        st.tuples(st.integers(0, (1 << 128) - 1), st.integers(0, (1 << 128) - 1)),
        min_size=1,
        max_size=40,
    ),
    st.integers(0, 65535),
)
def test_any_elements_read_back_as_sent(
    nft: NftKernel, spec: SetSpec, pairs: list[tuple[int, int]], port: int
) -> None:
    family = int(block_set_shape(spec.name)[0])
    elements = {_element(spec, s & FULL[family], d & FULL[family], port) for s, d in pairs}
    nft.run([planner.table_command("add", FAMILY), planner.table_command("delete", FAMILY)])
    _fresh_sets(nft, [spec])
    nft.add_elements([(spec.name, netlink.exact_keys(spec, elements))])
    assert _read(nft).elements[spec.name] == elements


def test_a_big_batch_goes_in_many_messages_and_one_transaction(nft: NftKernel) -> None:
    """12,000 IPv6 elements of 36 bytes: far more than one attribute (64 KiB) holds."""
    spec = next(s for s in EXACT if block_set_shape(s.name) == "6e6")
    elements = {_element(spec, (0xFD << 120) + i, (0xFD << 120) + 1, 80) for i in range(12_000)}
    keys = netlink.exact_keys(spec, elements)
    batch = netlink.element_batch("hyperwall", [(spec.name, keys)], 1)
    assert netlink.expected_acks(batch) > 5
    _fresh_sets(nft, [spec])
    nft.add_elements([(spec.name, keys)])
    assert _read(nft).elements[spec.name] == elements


def test_a_refused_batch_changes_nothing(nft: NftKernel) -> None:
    """The second set does not exist: the kernel refuses the batch, the first set stays
    empty (one transaction), and the error says so."""
    spec = next(s for s in EXACT if block_set_shape(s.name) == "4e6")
    _fresh_sets(nft, [spec])
    keys = netlink.exact_keys(spec, {_element(spec, 1, 2, 80)})
    with pytest.raises(NftError, match="No such file or directory"):
        nft.add_elements([(spec.name, keys), ("k_missing_4e6", keys)])
    assert _read(nft).elements[spec.name] == set()


def test_only_exact_block_sets_have_kernel_keys() -> None:
    interval = next(s for s in block_set_specs("b:in:t/p:r1") if s.interval)
    with pytest.raises(ValueError, match="not an exact block set"):
        netlink.exact_keys(interval, [])
    assert len(EXACT) == 2 * 3 * len(EXACT_PROTOS)


def test_a_listing_with_repeated_elements_is_torn() -> None:
    """A dump that repeats an element skipped another (`TornListing`): never taken as the
    kernel's state."""
    spec = next(s for s in EXACT if block_set_shape(s.name) == "4e6")
    element = {"concat": ["10.0.0.1", "10.0.0.2", 80]}
    listing = {
        "nftables": [
            {
                "set": {
                    "family": "inet",
                    "table": "hyperwall",
                    "name": spec.name,
                    "type": list(spec.type),
                    "elem": [element, element],
                }
            }
        ]
    }
    with pytest.raises(TornListing, match="1 repeats"):
        parse_table(listing)
    listing["nftables"][0]["set"]["elem"] = [element]
    assert parse_table(listing).elements[spec.name] == {_element(spec, 0x0A000001, 0x0A000002, 80)}
