"""The `Dataplane` contract: every test runs on the in-memory model (`MemoryDataplane`) and
on the kernel's nftables (`NftBackend`, in a throwaway network namespace).

Outcomes asserted through the protocol alone: what `read_actual` holds after each call
(compared with the rendered program by the planner: nothing left to do), the mode of each
call, and that drift and a lost table are repaired.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from hyperwall.compiler.fleet import FleetCompiler
from hyperwall.compiler.program import HostProgram
from hyperwall.dataplane.memory import MemoryDataplane
from hyperwall.dataplane.nft import plan as planner
from hyperwall.dataplane.nft.backend import NftBackend
from hyperwall.dataplane.nft.kernel import NftKernel
from hyperwall.dataplane.nft.render import Options, render_program
from hyperwall.dataplane.nft.table import ChainSpec, TableState
from hyperwall.dataplane.protocol import Dataplane
from hyperwall.io.files import load_catalog
from hyperwall.policy.model import Catalog

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@dataclass
class Harness:
    dataplane: Dataplane
    drift: Callable[[], object]  # change the kernel's table behind the data plane's back
    lose_table: Callable[[], object]  # the kernel loses our table (someone deleted it)


def _memory() -> Harness:
    dp = MemoryDataplane()

    def drift() -> None:
        dp.table.chains["host_in"] = ChainSpec("host_in", (), ("input", 0))

    def lose_table() -> None:
        dp.table, dp.present = TableState(), set()

    return Harness(dp, drift, lose_table)


def _kernel(nft: NftKernel) -> Harness:
    return Harness(
        NftBackend(nft),
        lambda: nft.command("flush chain inet hyperwall host_in"),
        lambda: nft.command("delete table inet hyperwall"),
    )


@pytest.fixture(params=["memory", pytest.param("nft", marks=pytest.mark.kernel)])
def harness(request: pytest.FixtureRequest) -> Harness:
    if request.param == "memory":
        return _memory()
    return _kernel(request.getfixturevalue("nft"))


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_catalog([EXAMPLES])


def program(catalog: Catalog, role: str | None = None) -> HostProgram:
    compiler = FleetCompiler(catalog.config, catalog.workloads.values())
    if role is not None:
        w = catalog.workloads["acme/web-1"]
        compiler.set_workload(dataclasses.replace(w, labels={**w.labels, "role": role}))
    return compiler.host_program("hv1")


def in_sync(dp: Dataplane, prog: HostProgram) -> bool:
    actual, present = dp.read_actual()
    return planner.plan(actual, render_program(prog, Options()), existing=present) == []


def test_a_fresh_host_has_nothing(harness: Harness) -> None:
    dp = harness.dataplane
    assert dp.program is None
    assert dp.read_actual()[1] == set()


def test_sync_installs_the_program_and_then_has_nothing_to_do(
    harness: Harness, catalog: Catalog
) -> None:
    dp, prog = harness.dataplane, program(catalog)
    result = dp.sync(prog)
    assert result.mode == "sync" and result.commands > 0
    assert dp.program is prog and in_sync(dp, prog)
    assert dp.read_actual()[1] == {"inet"}
    assert (dp.sync(prog).mode, dp.sync(prog).commands) == ("noop", 0)
    assert dp.apply(prog).mode == "noop"


def test_apply_follows_changes(harness: Harness, catalog: Catalog) -> None:
    dp = harness.dataplane
    assert dp.apply(program(catalog)).mode == "sync"  # the first apply reads the table first
    after = program(catalog, role="app")
    result = dp.apply(after)
    assert result.mode == "incremental" and result.commands > 0
    assert dp.program is after and in_sync(dp, after)


def test_sync_repairs_drift(harness: Harness, catalog: Catalog) -> None:
    dp, prog = harness.dataplane, program(catalog)
    dp.sync(prog)
    harness.drift()
    assert not in_sync(dp, prog)
    assert dp.sync(prog).mode == "sync"
    assert in_sync(dp, prog)


def test_apply_recovers_a_lost_table(harness: Harness, catalog: Catalog) -> None:
    dp = harness.dataplane
    dp.apply(program(catalog))
    harness.lose_table()
    after = program(catalog, role="app")
    assert dp.apply(after).mode in ("sync", "rebuild")
    assert in_sync(dp, after)


def test_rebuild_replaces_the_table(harness: Harness, catalog: Catalog) -> None:
    dp, prog = harness.dataplane, program(catalog)
    dp.sync(prog)
    harness.drift()
    result = dp.rebuild(prog)
    assert result.mode == "rebuild" and result.commands > 0
    assert dp.program is prog and in_sync(dp, prog)
    assert dp.sync(prog).mode == "noop"


def test_an_empty_program_closes_every_interface(harness: Harness) -> None:
    """The skeleton a fresh host gets before any policy: the tables, no endpoint in them."""
    dp = harness.dataplane
    dp.rebuild(HostProgram("hv1", {}, {}, {}, {}))
    actual, present = dp.read_actual()
    assert present == {"inet"}
    assert {"forward", "host_in"} <= set(actual.chains)
    maps = [n for n, spec in actual.sets.items() if spec.verdict_map]
    assert maps and not any(actual.elements[n] for n in maps)
