"""The JSON text libnftables reads (`nft.json_text`), against readable references. Pure.

Each set's element encoder must write exactly what `element_json` (the readable reference)
returns; `encode` must equal `json.dumps` of the same commands with the `Raw` parts parsed
back; `blocks.split_element`, which shapes the elements encoded here, must equal its first,
plainer version. The kernel side (what these texts load as, read back) is in
test_backend.py.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hyperwall.compiler.intervals import V4_MAX, V6_MAX
from hyperwall.dataplane.nft import plan as planner
from hyperwall.dataplane.nft.blocks import EXPAND, block_set_specs, split_block, split_element
from hyperwall.dataplane.nft.json_text import Raw, element_encoder, element_json, encode
from hyperwall.dataplane.nft.table import Element, SetSpec, TableState, block_set_shape

FULL = {4: V4_MAX, 6: V6_MAX}
PROTOS = st.sampled_from([6, 17, 132])


def addresses(family: int) -> st.SearchStrategy[tuple[int, int]]:
    """An address range: any, a single address, a few, or a wide range."""
    full = FULL[family]
    single = st.integers(0, full)
    return st.one_of(
        st.just((0, full)),
        single.map(lambda a: (a, a)),
        st.tuples(st.integers(0, full - 100), st.integers(0, 80)).map(
            lambda t: (t[0], t[0] + t[1])
        ),
        st.tuples(single, single).map(lambda t: (min(t), max(t))),
    )


@st.composite
def block_elements(draw: st.DrawFn) -> tuple[Any, ...]:
    family = draw(st.sampled_from([4, 6]))
    sl, sh = draw(addresses(family))
    dl, dh = draw(addresses(family))
    proto = draw(st.sampled_from([0, 1, 58, 6, 17, 132]))
    low = draw(st.integers(0, 65535))
    high = draw(
        st.one_of(st.just(low), st.integers(low, min(low + 70, 65535)), st.integers(low, 65535))
    )
    return (family, sl, sh, dl, dh, proto, low, high, "t/p/r")


def _reference_shapes(element: tuple[Any, ...]) -> list[tuple[str, Element]]:
    """`split_element` as first written (lists of the addresses of each side), with one exact
    set per port protocol, and short port ranges expanded port by port."""

    def singles(low: int, high: int, full: int) -> list[int] | None:
        if (low, high) == (0, full):
            return []
        return list(range(low, high + 1)) if high - low < EXPAND else None

    family, sl, sh, dl, dh, proto, low, high, _ = element
    ports = list(range(low, high + 1))
    if proto in (6, 17, 132) and len(ports) <= EXPAND:
        full = FULL[family]
        srcs, dsts = singles(sl, sh, full), singles(dl, dh, full)
        if (
            srcs is not None
            and dsts is not None
            and max(len(srcs), 1) * max(len(dsts), 1) * len(ports) <= EXPAND
        ):
            e, s, d = (f"{family}{kind}{proto}" for kind in "esd")
            if srcs and dsts:
                return [(e, (a, a, b, b, proto, p, p)) for a in srcs for b in dsts for p in ports]
            if srcs:
                return [(s, (a, a, 0, full, proto, p, p)) for a in srcs for p in ports]
            if dsts:
                return [(d, (0, full, b, b, proto, p, p)) for b in dsts for p in ports]
    if proto == 0:
        return [(f"{family}a", (sl, sh, dl, dh))]
    if proto in (1, 58):
        return [(f"{family}i", (sl, sh, dl, dh, low, high))]
    return [(f"{family}p", (sl, sh, dl, dh, proto, low, high))]


@given(block_elements())
def test_split_element_equals_the_plain_version(element: tuple[Any, ...]) -> None:
    assert sorted(split_element(element)) == sorted(_reference_shapes(element))


@given(st.lists(block_elements(), max_size=20))
def test_split_block_groups_the_shapes_of_each_element(elements: list[tuple[Any, ...]]) -> None:
    expected: dict[str, set[Element]] = {}
    for element in elements:
        for shape, value in _reference_shapes(element):
            expected.setdefault(shape, set()).add(value)
    assert split_block(elements) == expected


@given(block_elements())
def test_block_elements_encode_as_the_reference(element: tuple[Any, ...]) -> None:
    specs = {block_set_shape(spec.name): spec for spec in block_set_specs("b:t")}
    for shape, value in split_element(element):
        spec = specs[shape]
        assert json.loads(element_encoder(spec)(value)) == element_json(spec, value)


@pytest.mark.parametrize("family", [4, 6])
@given(data=st.data())
def test_address_elements_encode_as_the_reference(family: int, data: st.DataObject) -> None:
    spec = SetSpec(f"a_x_{family}", (f"ipv{family}_addr",), True)
    value = data.draw(addresses(family))
    assert json.loads(element_encoder(spec)(value)) == element_json(spec, value)


def test_endpoint_sets_and_maps_encode_as_the_reference() -> None:
    cases: list[tuple[SetSpec, Element]] = [
        (
            SetSpec("spoof4", ("ifname", "ether_addr", "ipv4_addr")),
            ("hwt1", "52:54:00:00:00:01", "10.0.0.1"),
        ),
        (
            SetSpec("spoof6", ("ifname", "ether_addr", "ipv6_addr")),
            ('we"ird', "52:54:00:00:00:01", "fd00::1"),
        ),
        (SetSpec("egress_map", ("ifname",), verdict_map=True), ("hwt1", "d_abc")),
        (SetSpec("ingress_map6", ("ipv6_addr",), verdict_map=True), ("fd00::1", "d_abc")),
    ]
    for spec, value in cases:
        assert json.loads(element_encoder(spec)(value)) == element_json(spec, value)


def test_encode_splices_raw_parts_into_plain_json() -> None:
    state = TableState()
    state.put_set(SetSpec("a_x_4", ("ipv4_addr",), True), {(1, 1), (10, 20)})
    exact, *rest = block_set_specs("b:t")
    state.put_set(exact, {(1, 1, 2, 2, 6, 80, 80)})
    for spec in rest:
        state.put_set(spec, set())
    commands = planner.plan(TableState(), state, existing=set())

    def plain(value: Any) -> Any:
        if isinstance(value, Raw):
            return json.loads(value.text)
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, list):
            return [plain(v) for v in value]
        return value

    assert json.loads(encode(commands)) == {"nftables": plain(commands)}
    with pytest.raises(TypeError):
        json.dumps(commands)  # a Raw part is never silently written as a string
