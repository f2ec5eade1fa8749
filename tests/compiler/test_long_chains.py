"""Long chains kept current (`compiler.fleet` with `compiler.fold`), checked against fresh
compiles.

The shape of the data-plane benchmark, small: one tenant, source workloads whose `zone`
label puts them into groups `g0`..`g3` (by selector), policies of many rules `from group gN
(or a CIDR, or anyone) to group servers on tcp/PORT`, few distinct ports so that rules often
overlap and runs break. Random steps relabel or readdress a source, or edit, insert, delete
or reorder rules of a policy; after each, every host's program from the warm compiler must
equal a fresh `compile_host`.
"""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hyperwall.compiler.fleet import FleetCompiler, common_ends, compile_host
from hyperwall.policy.model import RuleDef
from tests.compiler.test_fold import patch_share
from tests.fleetgen import Doc, doc, load

SETTINGS = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
T = "t"
ZONES = ("z0", "z1", "z2", "z3", "zx")
HOSTS = ("hv1", "hv2")


def workload(name: str, host: str, index: int, ip: str, zone: str) -> Doc:
    mac = f"52:54:00:00:00:{index:02x}"
    iface = {"name": "eth0", "mac": mac, "ips": [ip]}
    spec = {"host": host, "interfaces": [iface]}
    return doc("Workload", name, T, labels={"zone": zone}, spec=spec)


@st.composite
def rule_docs(draw: st.DrawFn, name: str) -> Doc:
    source = draw(st.sampled_from(["g0", "g1", "g2", "g3", "cidr", "any"]))
    rule: Doc = {"name": name, "action": draw(st.sampled_from(["allow"] * 4 + ["drop"]))}
    rule["direction"] = draw(st.sampled_from(["in", "in", "in", "both"]))
    if source == "cidr":
        rule["from"] = [{"cidr": "10.1.0.0/30"}]
    elif source != "any":
        rule["from"] = [{"group": source}]
    rule["to"] = [{"group": "servers"}]
    low = draw(st.sampled_from([80, 81, 82, 443]))
    wide = draw(st.integers(0, 5)) == 0
    rule["services"] = [f"tcp/{low}-{low + 100}" if wide else f"tcp/{low}"]
    if draw(st.integers(0, 20)) == 0:
        rule["log"] = True
    return rule


@st.composite
def fleets(draw: st.DrawFn) -> list[Doc]:
    docs: list[Doc] = [doc("Tenant", T, spec={"defaultAction": "drop"})]
    docs.append(workload("server-a", "hv1", 1, "10.0.0.2", "srv"))
    docs.append(workload("server-b", "hv2", 2, "10.0.0.3", "srv"))
    for i in range(6):
        zone = draw(st.sampled_from(ZONES))
        docs.append(workload(f"src-{i}", "hv2", 10 + i, f"10.1.0.{i + 1}", zone))
    docs.append(doc("Group", "servers", T, spec={"selector": 'zone == "srv"'}))
    for g in range(4):
        docs.append(doc("Group", f"g{g}", T, spec={"selector": f'zone == "z{g}"'}))
    for p in range(draw(st.integers(1, 2))):
        count = draw(st.integers(1, 40))
        rules = [draw(rule_docs(f"r{i:03d}")) for i in range(count)]
        spec = {"priority": 100 + p, "appliedTo": {"group": "servers"}, "rules": rules}
        docs.append(doc("Policy", f"p{p}", T, spec=spec))
    return docs


@st.composite
def steps(draw: st.DrawFn, docs: list[Doc]) -> list[Doc]:
    """`docs` after one change."""
    original, docs = docs, copy.deepcopy(docs)
    sources = [d for d in docs if d["metadata"]["name"].startswith("src-")]
    policies = [d for d in docs if d["kind"] == "Policy"]
    kind = draw(st.sampled_from(["relabel"] * 3 + ["readdress", "edit", "insert", "delete"]))
    if kind == "relabel":
        draw(st.sampled_from(sources))["metadata"]["labels"] = {
            "zone": draw(st.sampled_from(ZONES))
        }
        return docs
    if kind == "readdress":
        w = draw(st.sampled_from(sources))
        w["spec"]["interfaces"][0]["ips"] = [f"10.1.0.{draw(st.integers(1, 12))}"]
        ips = [d["spec"]["interfaces"][0]["ips"][0] for d in docs if d["kind"] == "Workload"]
        if len(set(ips)) < len(ips):
            return original  # an address claimed twice: no change this step
        return docs
    rules: list[Any] = draw(st.sampled_from(policies))["spec"]["rules"]
    taken = {r["name"] for r in rules}
    if kind == "insert" or not rules:
        name = next(f"n{i:03d}" for i in range(100) if f"n{i:03d}" not in taken)
        rules.insert(draw(st.integers(0, len(rules))), draw(rule_docs(name)))
    elif kind == "delete" and len(rules) > 1:
        del rules[draw(st.integers(0, len(rules) - 1))]
    else:
        at = draw(st.integers(0, len(rules) - 1))
        rules[at] = draw(rule_docs(rules[at]["name"]))
    return docs


def replay(data: st.DataObject, docs: list[Doc]) -> None:
    catalog = load(docs)
    compiler = FleetCompiler(catalog.config, catalog.workloads.values())
    for h in HOSTS:
        assert compiler.host_program(h) == compile_host(catalog.config, catalog.workloads, h)
    for _ in range(data.draw(st.integers(1, 8))):
        docs = data.draw(steps(docs))
        catalog = load(docs)
        compiler.set_config(catalog.config)
        for w in catalog.workloads.values():
            compiler.set_workload(w)
        for h in HOSTS:
            fresh = compile_host(catalog.config, catalog.workloads, h)
            assert compiler.host_program(h) == fresh


@SETTINGS
@given(st.data(), fleets())
def test_long_chains_stay_equal_to_fresh_compiles(data: st.DataObject, docs: list[Doc]) -> None:
    replay(data, docs)


@SETTINGS
@given(st.data(), fleets())
def test_long_chains_patched_in_place_stay_equal(data: st.DataObject, docs: list[Doc]) -> None:
    with patch_share(1):
        replay(data, docs)


def _rule(n: int) -> RuleDef:
    return RuleDef(f"p/r{n}", f"r{n}", "allow", "in", (), (), None, False)


@SETTINGS
@given(st.lists(st.integers(0, 3), max_size=12), st.lists(st.integers(0, 3), max_size=12))
def test_common_ends_match_a_plain_scan(a: list[int], b: list[int]) -> None:
    """Rules equal but not identical count as common, like identical ones."""
    shared = {n: _rule(n) for n in range(4)}
    old = tuple(shared[n] for n in a)
    new = tuple(shared[n] if i % 2 else _rule(n) for i, n in enumerate(b))
    prefix, suffix = common_ends(old, new)
    limit = min(len(a), len(b))
    want_prefix = next((k for k in range(limit) if a[k] != b[k]), limit)
    if a == b:
        assert (prefix, suffix) == (len(a), 0)
        return
    want_suffix = next(
        (k for k in range(limit - want_prefix) if a[-1 - k] != b[-1 - k]), limit - want_prefix
    )
    assert (prefix, suffix) == (want_prefix, want_suffix)
