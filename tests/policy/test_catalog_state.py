"""Tests for `hyperwall.policy.catalog_state`: a change set gets `build_catalog`'s answer.

The reference is `build_catalog` over the whole resulting set (puts replacing documents in
place, new ones appended, deletes removed): `CatalogState.change` accepts iff it accepts,
with an equal Catalog, and refuses with the same issues. Random valid fleets come from
`tests/fleetgen.py`; change sets mix Workload edits (labels, addresses, host, adds,
deletes), edits that break the set (an address taken twice, an unknown tenant, deleting a
workload a group or policy names, bad fields) and changes of other kinds. Changes chain,
branching from earlier states, so every state, however it was made, is checked, and states
a change started from must stay as they were.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hyperwall.policy.catalog import build_catalog
from hyperwall.policy.catalog_state import CatalogState, Key, key_of, same
from hyperwall.policy.errors import DocumentsInvalid, Issue, Source
from hyperwall.policy.model import Catalog
from tests.fleetgen import API, HOSTS, V4_POOL, V6_POOL, Doc, doc, fleets, sample

SETTINGS = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

Puts = list[Doc]
Change = tuple[Puts, list[Key]]


def rest(key: Key) -> Source:
    kind, tenant, name = key
    return Source(f"stored {kind} {tenant or '-'} {name}", 0)


def request(puts: Sequence[Any]) -> list[tuple[Any, Source]]:
    return [(raw, Source("request", i + 1)) for i, raw in enumerate(puts)]


def keyed(docs: Sequence[Doc]) -> dict[Key, Doc]:
    out: dict[Key, Doc] = {}
    for raw in docs:
        key = key_of(raw)
        assert key is not None
        out[key] = raw
    return out


def resulting(
    current: dict[Key, Doc], puts: Puts, deletes: list[Key]
) -> list[tuple[Any, Key | None]]:
    """The resulting set in `apply_changes` order, with each document's key (None: none)."""
    by_key = {key_of(raw): raw for raw in puts if key_of(raw) is not None}
    out: list[tuple[Any, Key | None]] = [
        (by_key.pop(key, raw), key) for key, raw in current.items() if key not in deletes
    ]
    out += [(raw, key_of(raw)) for raw in puts if key_of(raw) is None or key_of(raw) in by_key]
    return out


def reference(
    current: dict[Key, Doc], puts: Puts, deletes: list[Key], absent: bool = False
) -> Catalog | list[Issue]:
    """What `build_catalog` says of the resulting set: a Catalog, or the issues."""
    position = {id(raw): i + 1 for i, raw in enumerate(puts)}
    pairs = [
        (raw, Source("request", position[id(raw)]) if id(raw) in position else rest(key))  # type: ignore[arg-type]
        for raw, key in resulting(current, puts, deletes)
    ]
    try:
        return build_catalog(pairs, absent_workloads=absent)
    except DocumentsInvalid as exc:
        return exc.issues


def workloads_only(current: dict[Key, Doc], puts: Puts, deletes: list[Key]) -> bool:
    """Whether the change really puts or deletes only Workloads (the fast path's domain)."""
    real = [key_of(p) for p in puts if not same(p, current.get(key_of(p)))]  # type: ignore[arg-type]
    return all(k is not None and k[0] == "Workload" for k in real) and all(
        k[0] == "Workload" for k in deletes if k in current
    )


def answer(state: CatalogState, puts: Puts, deletes: list[Key]) -> CatalogState | list[Issue]:
    try:
        return state.change(request(puts), deletes, rest)
    except DocumentsInvalid as exc:
        return exc.issues


# -- change sets -----------------------------------------------------------------------


MACS = tuple(f"52:54:00:00:00:{i:02x}" for i in range(1, 12))  # fleetgen's come from here
IPS = V4_POOL[-12:] + V6_POOL[-6:] + ("10.0.0.200", "fd00::c8")
BAD_MACS = ("52:54:00:00:00:0A", "01:00:5e:00:00:01")  # 0A: taken once lower-cased; multicast


class Addresses:
    """Addresses a change may give: `clean` changes take only free ones (free in the set,
    or freed by this change), so they mostly pass; dirty ones take any, and bad ones."""

    def __init__(self, current: dict[Key, Doc], clean: bool) -> None:
        self.clean = clean
        self.used = {
            a
            for k, raw in current.items()
            if k[0] == "Workload"
            for i in raw["spec"]["interfaces"]
            for a in (i["mac"].lower(), *i["ips"])
        }

    def mac(self, draw: st.DrawFn) -> str:
        if not self.clean:  # taken, taken once lower-cased, multicast, or free
            return draw(sample([*MACS, *BAD_MACS, "52:54:00:00:02:01"]))
        fresh = [*MACS, *(f"52:54:00:00:02:{i:02x}" for i in range(1, 9))]
        return self.claim(draw(sample([m for m in fresh if m not in self.used])))

    def ips(self, draw: st.DrawFn) -> list[str]:
        if not self.clean:
            free = [ip for ip in IPS if ip not in self.used] or ["10.0.0.201"]
            return draw(  # an IP given twice, or any (maybe taken)
                sample(free).map(lambda ip: [ip, ip]) | st.lists(sample(IPS), max_size=2)
            )
        free = [ip for ip in IPS if ip not in self.used]
        return [self.claim(ip) for ip in draw(st.lists(sample(free), max_size=2, unique=True))]

    def claim(self, address: str) -> str:
        self.used.add(address)
        return address

    def release(self, raw: Doc) -> None:
        """`raw` leaves the set: its addresses are free for the rest of the change."""
        if self.clean:
            for i in raw["spec"]["interfaces"]:
                self.used -= {i["mac"].lower(), *i["ips"]}


@st.composite
def interfaces(draw: st.DrawFn, addresses: Addresses) -> list[Doc]:
    return [
        {"name": f"eth{i}", "mac": addresses.mac(draw), "ips": addresses.ips(draw)}
        for i in range(draw(st.integers(1, 2)))
    ]


@st.composite
def workload_change(
    draw: st.DrawFn, current: dict[Key, Doc], taken: set[Key], addresses: Addresses
) -> Doc | Key | None:
    """A put (Doc) or a delete (Key) of a Workload, on a key not in `taken`."""
    workloads = [k for k in current if k[0] == "Workload" and k not in taken]
    clean = addresses.clean
    edits = ["add", "add"]
    if workloads:
        edits += ["labels", "labels", "host", "ips", "mac", "interfaces", "delete"]
        edits += [] if clean else ["bad"]
    edit = draw(sample(edits))
    if edit == "add":  # dirty: one fault, an unknown tenant or addresses that may be taken
        fault = None if clean else draw(sample(["tenant", "addresses"]))
        tenants = [k[2] for k in current if k[0] == "Tenant"]
        tenant = "initech" if fault == "tenant" else draw(sample([None, *tenants]))
        name = draw(sample(["a", "b", "x", "y", "z"]))
        key: Key = ("Workload", tenant, name)
        if key in taken:
            return None
        if key in current:
            addresses.release(current[key])
        addresses.clean = fault != "addresses"
        spec = {"host": draw(sample(HOSTS)), "interfaces": draw(interfaces(addresses))}
        addresses.clean = clean
        return doc("Workload", name, tenant, labels={"role": "web"}, spec=spec)
    key = draw(sample(workloads))
    if edit == "delete":
        addresses.release(current[key])
        return key
    new = copy.deepcopy(current[key])
    meta, spec = new["metadata"], new["spec"]
    if edit == "labels":
        labels = meta.setdefault("labels", {})
        bad = [] if clean else ["hyperwall.io/name"]
        labels[draw(sample(["role", "env", "tier", *bad]))] = draw(
            sample(["web", "db", *([] if clean else ["x" * 300])])
        )
    elif edit == "host":
        spec["host"] = draw(sample([*HOSTS, "hv3", *([] if clean else ["HV-bad"])]))
    elif edit == "ips":
        addresses.release({"spec": {"interfaces": [{**spec["interfaces"][0], "mac": ""}]}})
        spec["interfaces"][0]["ips"] = addresses.ips(draw)
    elif edit == "mac":
        addresses.release({"spec": {"interfaces": [{**spec["interfaces"][-1], "ips": []}]}})
        spec["interfaces"][-1]["mac"] = addresses.mac(draw)
    elif edit == "interfaces":
        addresses.release(current[key])
        spec["interfaces"] = draw(interfaces(addresses))
    else:
        where = draw(sample(["spec", "iface", "empty", "type"]))
        if where == "spec":
            spec["colour"] = "blue"
        elif where == "iface":
            spec["interfaces"][0]["vlan"] = 3
        elif where == "empty":
            spec["interfaces"] = []
        else:
            spec["host"] = 7
    return new


@st.composite
def other_change(draw: st.DrawFn, current: dict[Key, Doc], taken: set[Key]) -> Doc | Key | None:
    """A put or delete of another kind, an identical put, or a put with no key."""
    others = [k for k in current if k not in taken]
    edit = draw(sample(["delete", "same", "tenant", "group", "nokey", "absent"]))
    if edit == "nokey":
        keyless: list[Doc] = [{"kind": "Workload"}, {"apiVersion": API, "kind": "Group"}]
        return keyless[draw(st.integers(0, 1))]
    if edit == "absent":
        return ("Group", None, "nothere")  # deleting a key not in the set: nothing
    if edit == "group":
        workloads = [k for k in current if k[0] == "Workload" and k[1] is None]
        members = [k[2] for k in workloads][:2]
        key: Key = ("Group", None, "gnew")
        if key in taken:
            return None
        return doc("Group", "gnew", None, spec={"members": members} if members else {})
    if not others:
        return None
    key = draw(sample(others))
    if edit == "delete":
        return key
    new = copy.deepcopy(current[key])
    if edit == "tenant" and key[0] == "Tenant":
        action = new.get("spec", {}).get("defaultAction", "drop")
        new["spec"] = {"defaultAction": "allow" if action == "drop" else "drop"}
    return new


@st.composite
def changes(draw: st.DrawFn, current: dict[Key, Doc]) -> Change:
    puts: Puts = []
    deletes: list[Key] = []
    taken: set[Key] = set()
    mode = draw(sample(["clean", "clean", "one dirty", "one dirty", "dirty"]))
    addresses = Addresses(current, mode != "dirty")
    count = draw(st.integers(1, 4))
    dirty = draw(st.integers(0, count - 1)) if mode == "one dirty" else -1
    for i in range(count):
        if mode == "one dirty":  # one edit that may break the set, the others clean
            addresses.clean = i != dirty
        other = draw(st.integers(0, 6 if addresses.clean else 3)) == 0
        item = draw(
            other_change(current, taken) if other else workload_change(current, taken, addresses)
        )
        if isinstance(item, tuple):
            if item not in taken:
                taken.add(item)
                deletes.append(item)
        elif item is not None:
            key = key_of(item)
            if key is None or key not in taken:
                if key is not None:
                    taken.add(key)
                puts.append(item)
    return puts, deletes


# -- properties ------------------------------------------------------------------------


@pytest.mark.parametrize("absent", [False, True], ids=["strict", "absent_workloads"])
@SETTINGS
@given(data=st.data())
def test_change_answers_like_build_catalog(absent: bool, data: st.DataObject) -> None:
    """With `absent_workloads` too: then deleting a workload that a group names is a
    valid change, taken on the fast path."""
    docs = data.draw(fleets())
    current = keyed(docs)
    first = CatalogState.build(request(docs), absent_workloads=absent)
    history: list[tuple[CatalogState, dict[Key, Doc]]] = [(first, current)]
    for _ in range(data.draw(st.integers(1, 6))):
        back = data.draw(st.integers(0, 3))  # mostly from the latest state
        state, current = history[max(0, len(history) - 1 - back)]
        puts, deletes = data.draw(changes(current))
        expected = reference(current, puts, deletes, absent)
        got = answer(state, puts, deletes)
        if isinstance(expected, list):
            assert got == expected
        else:
            assert isinstance(got, CatalogState)
            assert got.catalog == expected
            if workloads_only(current, puts, deletes):  # taken fast, the config is shared
                assert got.catalog.config is state.catalog.config
            after = [raw for raw, _ in resulting(current, puts, deletes)]
            assert all(map(same, got.documents(), after))
            history.append((got, keyed(after)))
    for state, current in history:  # every state is still what it was built as
        assert state.catalog == build_catalog(request(list(current.values())), absent)
        assert all(map(same, state.documents(), current.values()))


@SETTINGS
@given(st.data())
def test_build_answers_like_build_catalog(data: st.DataObject) -> None:
    docs = data.draw(fleets())
    puts, deletes = data.draw(changes(keyed(docs)))
    edited = [raw for raw, _ in resulting(keyed(docs), puts, deletes)]
    try:
        expected: Catalog | list[Issue] = build_catalog(request(edited))
    except DocumentsInvalid as exc:
        expected = exc.issues
    try:
        got: Catalog | list[Issue] = CatalogState.build(request(edited)).catalog
    except DocumentsInvalid as exc:
        got = exc.issues
    assert got == expected


# -- examples --------------------------------------------------------------------------


def workload(name: str, mac: str, ips: list[str], **labels: str) -> Doc:
    spec = {"host": "hv1", "interfaces": [{"name": "eth0", "mac": mac, "ips": ips}]}
    return doc("Workload", name, "acme", labels=labels, spec=spec)


BASE = [
    doc("Tenant", "acme"),
    workload("a", "52:54:00:00:00:01", ["10.0.0.1"], role="web"),
    workload("b", "52:54:00:00:00:02", ["10.0.0.2"], role="db"),
    doc("Group", "g", "acme", spec={"members": ["a"]}),
]


def test_a_label_change_shares_the_config_and_leaves_the_old_state() -> None:
    state = CatalogState.build(request(BASE))
    before = state.catalog
    new = state.change(request([workload("b", "52:54:00:00:00:02", ["10.0.0.2"])]), [], rest)
    assert new.catalog.config is state.catalog.config  # the Workload-only path
    assert new.catalog.workloads["acme/b"].labels == {}
    assert state.catalog == before and state.catalog.workloads["acme/b"].labels == {"role": "db"}


def test_swapping_addresses_between_two_workloads_is_accepted() -> None:
    state = CatalogState.build(request(BASE))
    swapped = [
        workload("a", "52:54:00:00:00:02", ["10.0.0.2"]),
        workload("b", "52:54:00:00:00:01", ["10.0.0.1"]),
    ]
    new = state.change(request(swapped), [], rest)
    assert new.catalog == build_catalog(request([BASE[0], *swapped, BASE[3]]))


def test_deleting_a_workload_a_group_names_is_refused_naming_the_group() -> None:
    state = CatalogState.build(request(BASE))
    with pytest.raises(DocumentsInvalid) as caught:
        state.change([], [("Workload", "acme", "a")], rest)
    assert caught.value.issues == [
        Issue(
            rest(("Group", "acme", "g")),
            "spec.members[0]",
            "unknown Workload 'a'",
            "a Workload defined in tenant 'acme'",
        )
    ]


def test_an_address_taken_is_refused_naming_its_owner() -> None:
    state = CatalogState.build(request(BASE))
    with pytest.raises(DocumentsInvalid) as caught:
        state.change(request([workload("c", "52:54:00:00:00:03", ["10.0.0.1"])]), [], rest)
    [issue] = caught.value.issues
    assert issue.message.startswith("IP 10.0.0.1 already belongs to workload 'acme/a'")


def test_a_key_named_twice_is_an_error() -> None:
    state = CatalogState.build(request(BASE))
    with pytest.raises(ValueError, match="named twice"):
        state.change(request([BASE[1]]), [("Workload", "acme", "a")], rest)
    with pytest.raises(ValueError, match="put twice"):
        state.change(request([BASE[1], BASE[1]]), [], rest)


def test_same_tells_types_apart() -> None:
    assert same({"a": [1, "x"]}, {"a": [1, "x"]})
    assert not same({"log": True}, {"log": 1})
    assert not same([1.0], [1])


def test_with_absent_workloads_a_named_workload_may_go_and_come_back() -> None:
    state = CatalogState.build(request(BASE), absent_workloads=True)
    gone = state.change([], [("Workload", "acme", "a")], rest)
    assert gone.catalog.config is state.catalog.config  # the Workload-only path
    assert gone.absent_references() == {"acme/a"} and state.absent_references() == set()
    back = gone.change(request([BASE[1]]), [], rest)
    assert back.absent_references() == set()
    assert back.catalog == build_catalog(request(BASE))
