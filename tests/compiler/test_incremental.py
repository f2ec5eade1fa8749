"""Incremental compilation and program deltas (`compiler.fleet`, `compiler.delta`).

- `delta.apply(a, delta.diff(a, b)) == b` for the host programs of random related fleets,
  and of unrelated ones; `diff(p, p)` is empty.
- A `FleetCompiler` kept current through `set_workload` / `remove_workload` / `set_config`
  hands out, after every change, exactly the program a fresh `compile_host` computes (also
  with in-place block patches forced wherever `fold.refold` can make them).
- The size of a delta follows the size of the change, not the size of the fleet.

Random fleets and their edits come from `tests/fleetgen.py`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hyperwall.compiler.delta import apply, diff
from hyperwall.compiler.fleet import FleetCompiler, compile_host
from hyperwall.compiler.program import HostProgram
from hyperwall.policy.model import PolicyConfig, Workload
from tests.compiler.test_fold import patch_share
from tests.fleetgen import HOSTS, Doc, doc, fleets, load, policy_edits, workload_edits

ALL_HOSTS = (*HOSTS, "hv3")  # hv3: only reached by migration

SETTINGS = settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@dataclass(frozen=True)
class SetWorkload:
    """An inventory change: add or update `workload`, or remove `key` if it is None."""

    key: str
    workload: Workload | None


@dataclass(frozen=True)
class SetConfig:
    config: PolicyConfig


Step = SetWorkload | SetConfig


def check_roundtrip(old: HostProgram, new: HostProgram) -> None:
    delta = diff(old, new)
    assert apply(old, delta) == new
    assert diff(new, new).is_empty()
    assert delta.is_empty() == (old == new)


@st.composite
def inventory_steps(
    draw: st.DrawFn, workloads: dict[str, Workload], declared: list[str], most: int
) -> list[Step]:
    """Up to `most` inventory changes; `workloads` is updated to the result."""
    steps: list[Step] = []
    for _ in range(draw(st.integers(0, most))):
        key, new = draw(workload_edits(workloads, declared))
        if new is None:
            del workloads[key]
        else:
            workloads[key] = new
        steps.append(SetWorkload(key, new))
    return steps


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[list[Doc], list[Step]]:
    """A fleet and a sequence of changes, interleaved in any order: inventory changes
    (relabel, readdress, migrate, add, remove) and config changes (group, tenant and policy
    edits)."""
    docs = draw(fleets())
    workloads = dict(load(docs).workloads)
    declared = sorted(workloads)
    steps: list[Step] = []
    current = docs
    for _ in range(draw(st.integers(0, 6))):
        if draw(st.booleans()):
            steps += draw(inventory_steps(workloads, declared, 1))
        else:
            current = draw(policy_edits(current))
            steps.append(SetConfig(load(current).config))
    return docs, steps


def programs(config: PolicyConfig, workloads: Mapping[str, Workload]) -> dict[str, HostProgram]:
    return {h: compile_host(config, workloads, h) for h in ALL_HOSTS}


def replay(docs: list[Doc], steps: list[Step]) -> None:
    """Feed `steps` to a warm `FleetCompiler`; after each, every host's program must equal a
    fresh compile, and the delta from the previous program must lead to it."""
    catalog = load(docs)
    config, workloads = catalog.config, dict(catalog.workloads)
    compiler = FleetCompiler(config, workloads.values())
    before = {h: compiler.host_program(h) for h in ALL_HOSTS}  # warm every cache
    assert before == programs(config, workloads)
    for step in steps:
        if isinstance(step, SetConfig):
            config = step.config
            compiler.set_config(config)
        elif step.workload is None:
            del workloads[step.key]
            compiler.remove_workload(step.key)
        else:
            workloads[step.key] = step.workload
            compiler.set_workload(step.workload)
        after = {h: compiler.host_program(h) for h in ALL_HOSTS}
        assert after == programs(config, workloads), step
        # chain states (kept to update chains) do not outlive their policies
        assert {n.partition(":")[2] for n in compiler._chain_states} <= set(config.policies)
        for h in ALL_HOSTS:
            check_roundtrip(before[h], after[h])
        before = after


@SETTINGS
@given(scenarios())
def test_incremental_compiler_equals_fresh_compile(scenario: tuple[list[Doc], list[Step]]) -> None:
    replay(*scenario)


@settings(SETTINGS, max_examples=50)
@given(scenarios())
def test_incremental_compiler_patching_every_run_equals_fresh_compile(
    scenario: tuple[list[Doc], list[Step]],
) -> None:
    """The same, with `fold.refold` patching a run in place whenever it can (the generated
    policies are too short for its default share)."""
    with patch_share(1):
        replay(*scenario)


@settings(SETTINGS, max_examples=60)
@given(fleets(), fleets())
def test_delta_between_unrelated_fleets(a: list[Doc], b: list[Doc]) -> None:
    ca, cb = load(a), load(b)
    for h in HOSTS:
        pa = compile_host(ca.config, ca.workloads, h)
        pb = compile_host(cb.config, cb.workloads, h)
        check_roundtrip(pa, pb)
        check_roundtrip(pb, pa)


@settings(SETTINGS, max_examples=60)
@given(st.data(), fleets())
def test_delta_after_a_policy_edit(data: st.DataObject, docs: list[Doc]) -> None:
    a = load(docs)
    b = load(data.draw(policy_edits(docs), label="edited"))
    for h in HOSTS:
        check_roundtrip(
            compile_host(a.config, a.workloads, h), compile_host(b.config, b.workloads, h)
        )


def test_unchanged_fleet_gives_empty_delta_and_same_objects() -> None:
    a = load(_big_fleet())
    compiler = FleetCompiler(a.config, a.workloads.values())
    first = compiler.host_program("hv1")
    again = compiler.host_program("hv1")
    assert diff(first, again).is_empty()
    assert all(again.chains[n] is c for n, c in first.chains.items())
    assert compile_host(a.config, a.workloads, "hv1") == first


# -- regression: a selector's set while no policy names it -----------------------------


def _vm(name: str, tenant: str | None, last: int, role: str) -> Doc:
    mac, ip = f"52:54:00:00:00:{last:02x}", f"10.0.0.{last}"
    spec = {"host": "hv1", "interfaces": [{"name": "eth0", "mac": mac, "ips": [ip]}]}
    return doc("Workload", name, tenant, labels={"role": role}, spec=spec)


def test_selector_set_stays_current_while_unreferenced() -> None:
    base = [doc("Tenant", "acme"), _vm("a", "acme", 1, "web"), _vm("b", "acme", 2, "db")]
    rule = {"name": "r", "action": "allow", "from": [{"selector": 'role == "web"'}]}
    with_policy = load([*base, doc("Policy", "p", "acme", spec={"rules": [rule]})])
    without_policy = load(base)
    compiler = FleetCompiler(with_policy.config, with_policy.workloads.values())
    compiler.host_program("hv1")
    compiler.set_config(without_policy.config)  # the selector is named by nobody now
    b = replace(with_policy.workloads["acme/b"], labels={"role": "web"})
    compiler.set_workload(b)  # ... and b starts to match it
    compiler.set_config(with_policy.config)  # named again
    workloads = {**with_policy.workloads, "acme/b": b}
    assert compiler.host_program("hv1") == compile_host(with_policy.config, workloads, "hv1")


def test_workload_change_after_a_selector_is_dropped() -> None:
    vm = _vm("a", None, 1, "db")
    web = doc("Group", "web", None, spec={"selector": 'role == "web"'})
    rule = {
        "name": "r",
        "action": "allow",
        "from": [{"group": "web"}, {"selector": 'pci == "true"'}],
    }
    with_policy = load([vm, web, doc("Policy", "p", None, spec={"rules": [rule]})])
    without_policy = load([vm, web])
    compiler = FleetCompiler(with_policy.config, with_policy.workloads.values())
    compiler.host_program("hv1")
    compiler.set_config(without_policy.config)  # no rule names the selector any more
    moved = replace(with_policy.workloads["a"], labels={"role": "web"})
    compiler.set_workload(moved)  # the group changes: its union set with the selector too
    assert compiler.host_program("hv1") == compile_host(without_policy.config, [moved], "hv1")


# -- size follows the change -----------------------------------------------------------

ROLES = 30  # per tenant: one group per role but the last, and one policy per role
BIG_HOSTS = ("hv1", "hv2", "hv3")


def _rule(name: str, action: str, direction: str, services: list[str] | None, **peers: Any) -> Doc:
    rule: Doc = {"name": name, "action": action, "direction": direction, **peers}
    if services is not None:
        rule["services"] = services
    return rule


def _big_fleet() -> list[Doc]:
    """Two tenants: t1 with 200 VMs on hv1 and hv2, t2 with 100 VMs on hv3; per tenant 30
    groups (29 by role, and `canary`) and 30 policies of 5 rules, 60 of each in all."""
    docs = [doc("Tenant", "t1"), doc("Tenant", "t2")]
    for i in range(300):
        tenant, host = ("t1", f"hv{1 + i // 100}") if i < 200 else ("t2", "hv3")
        # odd last octets: no two VMs' addresses merge into one interval
        ips = [f"10.{1 + i // 100}.{(i % 100) // 50}.{2 * (i % 50) + 1}", f"fd00::{2 * i + 1:x}"]
        mac = f"52:54:00:00:{i // 256:02x}:{i % 256:02x}"
        spec = {"host": host, "interfaces": [{"name": "eth0", "mac": mac, "ips": ips}]}
        labels = {"role": f"r{i % ROLES}", "env": "prod"}
        docs.append(doc("Workload", f"vm{i}", tenant, labels=labels, spec=spec))
    for tenant in ("t1", "t2"):
        for k in range(ROLES - 1):
            docs.append(doc("Group", f"g{k}", tenant, spec={"selector": f'role == "r{k}"'}))
        docs.append(doc("Group", "canary", tenant, spec={"selector": 'env == "canary"'}))
        for k in range(ROLES):
            g = [{"group": f"g{(k + d) % (ROLES - 1)}"} for d in range(4)]
            office = [g[0], {"cidr": "192.0.2.0/24"}]
            rules = [
                _rule("web", "allow", "in", ["tcp/80", "tcp/8080"], **{"from": [g[1]]}),
                _rule("office", "allow", "in", ["tcp/22", "udp/53"], **{"from": office}),
                _rule("tls", "allow", "out", ["tcp/443"], to=[g[2]]),
                _rule("db", "reject", "both", ["tcp/5432"], to=[g[3]], log=True),
                _rule("canary", "drop", "in", None, **{"from": [{"group": "canary"}]}),
            ]
            policy: Doc = {"appliedTo": g[0], "priority": k, "rules": rules}
            docs.append(doc("Policy", f"p{k}", tenant, spec=policy))
    return docs


def _elements(program: HostProgram) -> int:
    size = program.size()
    return size["address_elements"] + size["block_elements"] + size["chain_items"]


@pytest.mark.parametrize(
    ("label", "value", "most"),
    [
        ("env", "canary", 10),  # joins one group, named by one MatchRule's set
        ("role", "r8", 30),  # leaves g7 for g8 (each folded into 4 rules' blocks),
        # and its endpoint now runs p8 instead of p7
    ],
)
def test_delta_size_follows_the_change_not_the_fleet(label: str, value: str, most: int) -> None:
    catalog = load(_big_fleet())
    compiler = FleetCompiler(catalog.config, catalog.workloads.values())
    before = {h: compiler.host_program(h) for h in BIG_HOSTS}
    sizes = {h: _elements(p) for h, p in before.items()}
    assert sizes["hv1"] > 2000 and sizes["hv2"] > 2000 and sizes["hv3"] > 1000, sizes

    vm = catalog.workloads["t1/vm7"]  # on hv1
    changed = replace(vm, labels={**vm.labels, label: value})
    compiler.set_workload(changed)
    after = {h: compiler.host_program(h) for h in BIG_HOSTS}
    for h in ("hv1", "hv2"):
        delta = diff(before[h], after[h])
        assert 0 < delta.size() <= most, delta.summary()
        assert apply(before[h], delta) == after[h]
    # t2's host: no set, chain or endpoint of it depends on t1's VMs: same objects
    assert diff(before["hv3"], after["hv3"]).is_empty()
    for part in ("address_sets", "block_sets", "chains", "endpoints"):
        old, new = getattr(before["hv3"], part), getattr(after["hv3"], part)
        assert old.keys() == new.keys() and all(new[k] is old[k] for k in old), part

    workloads = {**catalog.workloads, changed.key: changed}
    assert after == {h: compile_host(catalog.config, workloads, h) for h in BIG_HOSTS}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fleets())
def test_a_workload_program_is_its_slice_of_the_host_program(fleet: list[Doc]) -> None:
    """`workload_program` (what `trace` evaluates over) holds exactly the workload's
    endpoints and, as in its host's program, every chain, block and set they read."""
    catalog = load(fleet)
    compiler = FleetCompiler(catalog.config, catalog.workloads.values())
    for wk, w in catalog.workloads.items():
        mine, host = compiler.workload_program(wk), compiler.host_program(w.host)
        assert set(mine.endpoints) == {ep.key for ep in compiler.endpoints(wk)}
        assert all(host.endpoints[key] == ep for key, ep in mine.endpoints.items())
        read = {
            name for ep in mine.endpoints.values() for t in (*ep.ingress, *ep.egress) for name in t
        }
        assert set(mine.chains) == read
        assert all(host.chains[name] == chain for name, chain in mine.chains.items())
        assert all(host.block_sets[name] == b for name, b in mine.block_sets.items())
        assert all(host.address_sets[name] == s for name, s in mine.address_sets.items())
