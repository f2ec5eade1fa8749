"""`FleetPrograms`: the manager's per-host programs, kept by one incremental compiler.

After every revision of a random fleet's history (workload edits, migrations, additions,
removals, policy/group/tenant edits), for every host: the program equals a fresh
`compile_host`, the digest equals `program_digest` of it, the delta stored with a new
version leads from the previous program to it, `since` answers a delta from every kept
version, and the hosts reported changed are exactly those whose program changed.
`what_if` names the same hosts as actually changing, and leaves nothing changed; `trial`
lends a compiler over the next catalog (or one never committed), and what follows it
(`what_if`, `advance`) is the same as without it.
"""

from __future__ import annotations

from hypothesis import given, settings

from hyperwall.compiler.delta import apply
from hyperwall.compiler.digest import program_digest
from hyperwall.compiler.fleet import compile_host
from hyperwall.compiler.fleet_programs import FleetPrograms
from hyperwall.policy.model import Catalog
from tests.compiler.test_incremental import ALL_HOSTS, SETTINGS, SetConfig, Step, scenarios
from tests.fleetgen import Doc, load


def catalogs(docs: list[Doc], steps: list[Step]) -> list[Catalog]:
    first = load(docs)
    out = [first]
    config, workloads = first.config, dict(first.workloads)
    for step in steps:
        if isinstance(step, SetConfig):
            config = step.config
        elif step.workload is None:
            workloads.pop(step.key, None)
        else:
            workloads[step.key] = step.workload
        out.append(Catalog(config, dict(workloads)))
    return out


def check(programs: FleetPrograms, catalog: Catalog) -> None:
    for h in ALL_HOSTS:
        version = programs.host(h)
        assert version.program == compile_host(catalog.config, catalog.workloads, h)
        assert version.digest == program_digest(version.program)


@settings(SETTINGS, max_examples=50)
@given(scenarios())
def test_programs_follow_revisions(scenario: tuple[list[Doc], list[Step]]) -> None:
    history = catalogs(*scenario)
    programs = FleetPrograms(keep=3)
    programs.load(1, history[0])
    check(programs, history[0])
    held = {h: programs.host(h) for h in ALL_HOSTS}  # what an agent of each host holds
    for revision, catalog in enumerate(history[1:], start=2):
        before = {h: programs.host(h).program for h in ALL_HOSTS}
        expected_changed = sorted(
            h for h in ALL_HOSTS if compile_host(catalog.config, catalog.workloads, h) != before[h]
        )
        decoy = history[0] if revision % 2 else history[-1]  # a change never committed
        with programs.trial(decoy) as compiler:
            for h in ALL_HOSTS:
                assert compiler.host_program(h) == compile_host(decoy.config, decoy.workloads, h)
        assert programs.what_if(catalog) == expected_changed
        check(programs, history[revision - 2])  # what_if put everything back
        with programs.trial(catalog) as compiler:  # the assertion gate's borrowed compiler
            for h in ALL_HOSTS:
                assert compiler.host_program(h) == compile_host(
                    catalog.config, catalog.workloads, h
                )
        changed = programs.advance(revision, catalog)
        assert changed == expected_changed
        check(programs, catalog)
        for h in ALL_HOSTS:
            version = programs.host(h)
            if h in changed:
                assert version.revision == revision and version.delta is not None
                assert apply(before[h], version.delta) == version.program
            current, delta = programs.since(h, held[h].digest)
            if delta is not None:
                assert apply(held[h].program, delta) == current.program
                held[h] = current
            else:  # too far behind: the whole program
                held[h] = current
