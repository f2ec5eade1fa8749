"""Turns (actual table, desired table) into one ordered nftables transaction. Pure.

Order inside the transaction, so that every reference exists when it is made and nothing
is deleted while referenced: add table; add new sets; add new chains (empty); delete
elements; replace changed chains' rules and fill new chains; add elements (verdict maps now
find their chains); flush and delete chains no longer wanted; delete sets no longer wanted.
The kernel applies the batch atomically: all of it or none.

Every rule carries its chain's digest as comment, so a chain read back from the kernel is
known to be current without comparing expressions that nft normalises.

Set elements and rule expressions go into the commands as `json_text.Raw` JSON text (see
`json_text`). On the steady path the caller may say how a set's elements change
(`elements`): the plan then costs what the change touches, not the size of the sets it
touches.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from typing import Any

from hyperwall.dataplane.nft.json_text import Raw, elements_raw
from hyperwall.dataplane.nft.table import (
    FAMILY,
    TABLE,
    ChainSpec,
    Element,
    SetSpec,
    TableState,
)

Command = dict[str, Any]
ElementChange = tuple[set[Element], set[Element]]  # (to delete, to add), both exact
BRIDGE = "br:"  # objects named with this prefix live in `bridge hyperwall` (bridge mode)


def where(name: str) -> tuple[dict[str, str], str]:
    """The table an object lives in, and its name there."""
    if name.startswith(BRIDGE):
        return {"family": "bridge", "table": TABLE}, name[len(BRIDGE) :]
    return {"family": FAMILY, "table": TABLE}, name


def families(state: TableState) -> set[str]:
    return {where(n)[0]["family"] for n in (*state.sets, *state.chains)}


def _holds_family(state: TableState, family: str) -> bool:
    return any(where(n)[0]["family"] == family for n in itertools.chain(state.sets, state.chains))


def _obj(name: str) -> dict[str, str]:
    table, real = where(name)
    return {**table, "name": real}


_KIND_ORDER = {"l": 0, "p": 1, "t": 2, "d": 3}  # chains are created/filled callees first


def _chain_order(name: str) -> tuple[int, str]:
    return (_KIND_ORDER.get(name[0], 4) if name[1:2] == "_" else 4, name)


def table_command(verb: str, family: str) -> Command:
    return {verb: {"table": {"family": family, "name": TABLE}}}


def set_command(spec: SetSpec, elements: Iterable[Element] = ()) -> Command:
    body: dict[str, Any] = _obj(spec.name)
    body["type"] = spec.type[0] if len(spec.type) == 1 else list(spec.type)
    if spec.interval:
        body["flags"] = ["interval"]
    if spec.counter:  # the kernel gives every element, however added, a counter of its own
        body["stmt"] = [{"counter": None}]
    elems = elements_raw(spec, elements)
    if elems is not None:
        body["elem"] = elems
    if spec.verdict_map:
        body["map"] = "verdict"
        return {"add": {"map": body}}
    return {"add": {"set": body}}


def element_command(verb: str, spec: SetSpec, elements: Iterable[Element]) -> Command | None:
    elems = elements_raw(spec, elements)
    if elems is None:
        return None
    return {verb: {"element": {**_obj(spec.name), "elem": elems}}}


def chain_command(spec: ChainSpec) -> Command:
    body: dict[str, Any] = _obj(spec.name)
    if spec.hook is not None:
        body.update(type="filter", hook=spec.hook[0], prio=spec.hook[1], policy="accept")
    return {"add": {"chain": body}}


def rule_commands(spec: ChainSpec) -> list[Command]:
    table, name = where(spec.name)
    return [
        {"add": {"rule": {**table, "chain": name, "expr": Raw(r), "comment": spec.digest}}}
        for r in spec.rules
    ]


def same_chain(actual: ChainSpec | None, desired: ChainSpec) -> bool:
    """Whether the chain needs no change. A chain read back carries its digest in its rules'
    comments, so an empty one has none: empty and empty is the same (a policy chain is
    empty when clipping leaves its blocks nothing to hold on this host)."""
    if actual is None or actual.hook != desired.hook:
        return False
    if len(actual.rules) != len(desired.rules):
        return False
    return not desired.rules or actual.digest == desired.digest


def plan(
    actual: TableState,
    desired: TableState,
    existing: set[str] | None = None,
    only: set[str] | None = None,
    elements: Mapping[str, ElementChange] | None = None,
) -> list[Command]:
    """Commands that turn `actual` into `desired`, looking only at names in `only` if given.

    `elements` gives, for sets present in both, the exact element change (what to delete is
    in `actual`, what to add is not); `desired.elements` of those sets is then not read."""
    changes = elements or {}

    def wanted(a: Mapping[str, object], b: Mapping[str, object]) -> list[str]:
        if only is None:
            return sorted(a.keys() | b.keys())
        return sorted(n for n in only if n in a or n in b)

    cmds: list[Command] = []
    if only is None:
        needed = families(desired)
    else:  # the steady path: only the touched names may need a table
        needed = {where(n)[0]["family"] for n in only if n in desired.sets or n in desired.chains}
    if existing is not None:
        needed -= existing
    else:
        needed = {f for f in needed if not _holds_family(actual, f)}
    for family in sorted(needed):
        cmds.append(table_command("add", family))
    set_names = wanted(desired.sets, actual.sets)
    chain_names = sorted(wanted(desired.chains, actual.chains), key=_chain_order)
    new_sets = [n for n in set_names if n in desired.sets and n not in actual.sets]
    retyped = [
        n
        for n in set_names
        if n in desired.sets and n in actual.sets and desired.sets[n] != actual.sets[n]
    ]
    for name in new_sets:
        spec = desired.sets[name]
        cmds.append(set_command(spec, () if spec.verdict_map else desired.elements[name]))
    new_chains = [n for n in chain_names if n in desired.chains and n not in actual.chains]
    cmds.extend(chain_command(desired.chains[n]) for n in new_chains)
    adds: list[Command] = []
    for name in set_names:
        if name not in desired.sets or name in retyped:
            continue
        spec = desired.sets[name]
        want = desired.elements[name]
        have = actual.elements.get(name, set()) if name in actual.sets else set()
        if name in new_sets and not spec.verdict_map:
            continue
        if name in changes:
            removed = element_command("delete", spec, changes[name][0])
            added = element_command("add", spec, changes[name][1])
            if removed:
                cmds.append(removed)
            if added:
                adds.append(added)
            continue
        removed = element_command("delete", spec, have - want)
        if removed:
            cmds.append(removed)
        added = element_command("add", spec, want - have)
        if added:
            adds.append(added)
    for name in chain_names:
        if name not in desired.chains:
            continue
        chain = desired.chains[name]
        if name in new_chains:
            cmds.extend(rule_commands(chain))
        elif not same_chain(actual.chains.get(name), chain):
            cmds.append({"flush": {"chain": _obj(name)}})
            cmds.extend(rule_commands(chain))
    cmds.extend(adds)
    doomed = [n for n in chain_names if n in actual.chains and n not in desired.chains]
    cmds.extend({"flush": {"chain": _obj(n)}} for n in doomed)
    cmds.extend({"delete": {"chain": _obj(n)}} for n in reversed(doomed))
    for name in set_names:
        if name in actual.sets and (name not in desired.sets or name in retyped):
            kind = "map" if actual.sets[name].verdict_map else "set"
            cmds.append({"delete": {kind: _obj(name)}})
    for name in retyped:
        cmds.append(set_command(desired.sets[name], desired.elements[name]))
    return cmds


def rebuild(desired: TableState, present: set[str]) -> list[Command]:
    """One transaction that replaces our tables (nft 1.0.6 has no 'destroy'): add each (a
    no-op if it exists), delete it, then add everything."""
    cmds: list[Command] = []
    for family in sorted(families(desired) | present):
        cmds.append(table_command("add", family))
        cmds.append(table_command("delete", family))
    return cmds + plan(TableState(), desired, existing=set())
