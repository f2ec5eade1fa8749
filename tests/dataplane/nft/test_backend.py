"""The nftables backend against the real kernel, in a throwaway network namespace.

Outcomes asserted: what the kernel's table holds after apply (read back and compared with the
rendered program), that re-applying is a no-op, that incremental applies end where a full
sync would, that drift is repaired, and that other tables are never touched.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest

from hyperwall.compiler.fleet import FleetCompiler
from hyperwall.compiler.program import AddressSet, BlockSet, HostProgram
from hyperwall.dataplane.nft import plan as planner
from hyperwall.dataplane.nft.backend import NftBackend
from hyperwall.dataplane.nft.kernel import NftKernel
from hyperwall.dataplane.nft.render import Options, render_program
from hyperwall.io.files import load_catalog
from hyperwall.policy.model import Catalog, PolicyConfig
from hyperwall.policy.ports import parse_port_spec

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_catalog([EXAMPLES])


def program(catalog: Catalog, host: str = "hv1") -> HostProgram:
    return FleetCompiler(catalog.config, catalog.workloads.values()).host_program(host)


def in_sync(
    nft: NftKernel, prog: HostProgram, options: Options | None = None
) -> list[dict[str, object]]:
    """Commands still needed to make the kernel's tables equal `prog` (empty when in sync)."""
    actual, present = NftBackend(nft, options).read_actual()
    return planner.plan(actual, render_program(prog, options or Options()), existing=present)


def relabel(catalog: Catalog, key: str, **labels: str) -> FleetCompiler:
    compiler = FleetCompiler(catalog.config, catalog.workloads.values())
    w = catalog.workloads[key]
    compiler.set_workload(dataclasses.replace(w, labels={**w.labels, **labels}))
    return compiler


def edit_rule(config: PolicyConfig, policy: str, rule: str, **changes: object) -> PolicyConfig:
    p = config.policies[policy]
    rules = tuple(
        dataclasses.replace(r, **changes) if r.name == rule else r  # type: ignore[arg-type]
        for r in p.rules
    )
    policies = {**config.policies, policy: dataclasses.replace(p, rules=rules)}
    return dataclasses.replace(config, policies=policies)


def test_apply_programs_exactly_what_was_compiled(nft: NftKernel, catalog: Catalog) -> None:
    prog = program(catalog)
    result = NftBackend(nft).apply(prog)
    assert result.mode == "sync" and result.commands > 0
    assert in_sync(nft, prog) == []
    forward = json.loads(nft.command("list chain inet hyperwall forward"))["nftables"]
    rules = [e["rule"]["expr"] for e in forward if "rule" in e]
    ct_first = next(i for i, r in enumerate(rules) if "ct" in json.dumps(r))
    dispatch = next(i for i, r in enumerate(rules) if "vmap" in json.dumps(r))
    assert ct_first < dispatch  # the conntrack fast path comes before any policy
    # not from a VM: on to the receiving end; from one: one dispatch lookup per family
    # (interface . MAC . IP); a miss from a known VM interface is spoofed, from an unknown
    # one dropped (fail closed)
    assert rules[dispatch - 1][-1] == {"goto": {"target": "to_vm"}}
    assert "vmap" in json.dumps(rules[dispatch + 1])
    assert rules[dispatch + 2][-1] == {"goto": {"target": "spoofed"}}
    assert rules[dispatch + 4][-1] == {"drop": None}
    assert len(rules) == dispatch + 5
    bases = [
        e["chain"]
        for e in json.loads(nft.command("list table inet hyperwall"))["nftables"]
        if "chain" in e and "hook" in e["chain"]
    ]
    assert sorted(c["name"] for c in bases) == ["forward", "host_in"]  # one pass per packet
    receiving = json.loads(nft.command("list chain inet hyperwall to_vm"))["nftables"]
    assert [e["rule"]["expr"] for e in receiving if "rule" in e][-1][-1] == {"drop": None}


def test_reapply_and_restart_are_no_ops(nft: NftKernel, catalog: Catalog) -> None:
    prog = program(catalog)
    backend = NftBackend(nft)
    backend.apply(prog)
    assert backend.apply(prog).mode == "noop"
    restarted = NftBackend(nft)  # a new agent process: reads the table back first
    result = restarted.sync(prog)
    assert (result.mode, result.commands) == ("noop", 0)


def test_incremental_label_change_is_small_and_exact(nft: NftKernel, catalog: Catalog) -> None:
    before = program(catalog)
    backend = NftBackend(nft)
    full = backend.apply(before).commands
    after = relabel(catalog, "acme/web-1", role="app").host_program("hv1")
    result = backend.apply(after)
    assert result.mode == "incremental"
    assert 0 < result.commands < full / 4
    assert in_sync(nft, after) == []


@pytest.mark.parametrize(
    "change",
    ["port", "action-pass", "log", "remove-policy", "remove-workload", "migrate-away"],
)
def test_incremental_ends_where_full_sync_would(
    nft: NftKernel, catalog: Catalog, change: str
) -> None:
    compiler = FleetCompiler(catalog.config, catalog.workloads.values())
    backend = NftBackend(nft)
    backend.apply(compiler.host_program("hv1"))
    config = catalog.config
    if change == "port":
        compiler.set_config(
            edit_rule(config, "acme/shop", "web-in", services=(parse_port_spec("tcp/8080"),))
        )
    elif change == "action-pass":
        compiler.set_config(edit_rule(config, "acme/shop", "web-in", action="pass"))
    elif change == "log":
        compiler.set_config(edit_rule(config, "acme/shop", "lb-out", log=True))
    elif change == "remove-policy":
        policies = {k: v for k, v in config.policies.items() if k != "acme/shop"}
        compiler.set_config(dataclasses.replace(config, policies=policies))
    elif change == "remove-workload":
        compiler.remove_workload("acme/web-1")
    else:
        w = catalog.workloads["acme/lb-1"]
        compiler.set_workload(dataclasses.replace(w, host="hv2"))
    after = compiler.host_program("hv1")
    assert backend.apply(after).mode == "incremental"
    assert in_sync(nft, after) == []


def test_drift_is_repaired_by_sync(nft: NftKernel, catalog: Catalog) -> None:
    prog = program(catalog)
    NftBackend(nft).apply(prog)
    some_set = next(n for n in render_program(prog, Options()).sets if n.startswith("a_"))
    nft.command(f"flush set inet hyperwall {some_set}")
    nft.command("add rule inet hyperwall forward accept")
    assert in_sync(nft, prog) != []
    result = NftBackend(nft).sync(prog)
    assert result.mode == "sync"
    assert in_sync(nft, prog) == []


def test_failed_incremental_falls_back_to_sync(nft: NftKernel, catalog: Catalog) -> None:
    before = program(catalog)
    backend = NftBackend(nft)
    backend.apply(before)
    nft.command("delete table inet hyperwall")  # the kernel lost what the agent believes
    after = relabel(catalog, "acme/web-1", role="app").host_program("hv1")
    result = backend.apply(after)
    assert result.mode in ("sync", "rebuild")
    assert in_sync(nft, after) == []


def test_rebuild_replaces_the_table_in_one_transaction(nft: NftKernel, catalog: Catalog) -> None:
    prog = program(catalog)
    backend = NftBackend(nft)
    backend.apply(prog)
    nft.command("add set inet hyperwall stray { type ipv4_addr; }")
    backend.rebuild(prog)
    listing = nft.list_table()
    assert listing is not None
    assert not any(e.get("set", {}).get("name") == "stray" for e in listing["nftables"])
    assert in_sync(nft, prog) == []


def test_other_tables_are_never_touched(nft: NftKernel, catalog: Catalog) -> None:
    nft.command("add table inet other")
    nft.command("add chain inet other c { type filter hook forward priority 5; policy accept; }")
    nft.command("add rule inet other c counter accept")
    before = nft.command("list table inet other")
    backend = NftBackend(nft)
    backend.apply(program(catalog))
    backend.apply(relabel(catalog, "acme/web-1", role="app").host_program("hv1"))
    backend.rebuild(program(catalog))
    assert nft.command("list table inet other") == before


def test_bridge_mode_tables(nft: NftKernel, catalog: Catalog) -> None:
    """Bridge attachment: a bridge-family table for anti-spoofing and reject, MAC dispatch."""
    options = Options(mode="bridge")
    compiler = FleetCompiler(catalog.config, catalog.workloads.values())
    backend = NftBackend(nft, options)
    before = compiler.host_program("hv1")
    assert backend.apply(before).mode == "sync"
    assert in_sync(nft, before, options) == []
    assert nft.list_table("bridge") is not None
    w = catalog.workloads["acme/web-1"]
    compiler.set_workload(dataclasses.replace(w, labels={**w.labels, "role": "app"}))
    compiler.remove_workload("acme/lb-1")
    after = compiler.host_program("hv1")
    assert backend.apply(after).mode == "incremental"
    assert in_sync(nft, after, options) == []
    assert NftBackend(nft, options).sync(after).mode == "noop"
    backend.rebuild(after)
    assert in_sync(nft, after, options) == []


V4, V6 = 0x0A000000, 0xFD00 << 112  # 10.0.0.0, fd00::


def every_set_kind(prog: HostProgram) -> HostProgram:
    """`prog` plus an address set and a block with elements of every nft shape (exact hash
    sets single and expanded, any-source and any-destination; pipapo with ranges, ICMP types
    and any protocol), in both families."""
    v4max, v6max = 2**32 - 1, 2**128 - 1
    elements = {
        (4, V4 + 1, V4 + 1, V4 + 2, V4 + 2, 6, 80, 80),  # 4e
        (4, V4 + 16, V4 + 18, V4 + 32, V4 + 33, 17, 53, 53),  # 4e, expanded to 6
        (4, V4 + 1, V4 + 1, 0, v4max, 132, 22, 22),  # 4s
        (4, 0, v4max, V4 + 2, V4 + 2, 6, 443, 443),  # 4d
        (4, 0, v4max, 0, v4max, 6, 8080, 8080),  # 4p: any to any, one port
        (4, V4, V4 + 255, V4 + 2, V4 + 2, 6, 1000, 2000),  # 4p
        (4, V4 + 1, V4 + 1, V4 + 2, V4 + 2, 1, 8, 8),  # 4i
        (4, V4 + 3, V4 + 3, V4 + 4, V4 + 4, 1, 3, 4),  # 4i, a range of types
        (4, V4 + 5, V4 + 6, V4 + 512, V4 + 767, 0, 0, 65535),  # 4a
        (6, V6 + 1, V6 + 1, V6 + 2, V6 + 2, 6, 80, 80),  # 6e
        (6, V6 + 1, V6 + 1, 0, v6max, 17, 53, 53),  # 6s
        (6, 0, v6max, V6 + 2, V6 + 2, 6, 443, 443),  # 6d
        (6, V6, V6 + 2**64 - 1, V6 + 2, V6 + 2, 6, 1, 1023),  # 6p
        (6, V6 + 1, V6 + 1, V6 + 2, V6 + 2, 58, 128, 128),  # 6i
        (6, V6 + 5, V6 + 5, V6 + 9, V6 + 9, 0, 0, 65535),  # 6a
    }
    block = BlockSet("b:test", frozenset((*e, "t/p/r") for e in elements))
    addresses = AddressSet(
        "test", ((V4 + 1, V4 + 1), (V4 + 8, V4 + 15), (V4 + 100, V4 + 130)), ((V6, V6 + 255),)
    )
    return dataclasses.replace(
        prog,
        block_sets={**prog.block_sets, block.name: block},
        address_sets={**prog.address_sets, addresses.name: addresses},
    )


def test_every_set_kind_reads_back_as_rendered(nft: NftKernel, catalog: Catalog) -> None:
    """The element texts `json_text` writes load into the kernel as exactly what `render`
    holds, on a full load and through incremental element changes."""
    prog = every_set_kind(program(catalog))
    backend = NftBackend(nft)
    assert backend.apply(prog).mode == "sync"
    assert in_sync(nft, prog) == []
    block = prog.block_sets["b:test"]
    gone = {e for e in block.elements if e[0] == 4 and e[5] == 6}
    new = {(4, V4 + 7, V4 + 7, V4 + 2, V4 + 2, 6, 9999, 9999, "t/p/r2")}
    addresses = prog.address_sets["test"]
    after = dataclasses.replace(
        prog,
        block_sets={**prog.block_sets, "b:test": BlockSet("b:test", (block.elements - gone) | new)},
        address_sets={
            **prog.address_sets,
            "test": dataclasses.replace(addresses, v4=((V4 + 1, V4 + 1), (V4 + 200, V4 + 201))),
        },
    )
    result = backend.apply(after)
    assert result.mode == "incremental" and result.commands > 0
    assert in_sync(nft, after) == []
    assert backend.apply(prog).mode == "incremental"
    assert in_sync(nft, prog) == []
    blocks = {k: v for k, v in prog.block_sets.items() if k != "b:test"}
    gone_block = dataclasses.replace(prog, block_sets=blocks)
    assert backend.apply(gone_block).mode == "incremental"
    assert in_sync(nft, gone_block) == []


def test_sync_replaces_an_earlier_versions_block_sets(nft: NftKernel, catalog: Catalog) -> None:
    """Before one exact set per protocol, exact block sets had the protocol as a key field
    (`k_<hash>_4e`); an upgraded agent's first sync removes them and what refers to them."""
    prog = program(catalog)
    NftBackend(nft).apply(prog)
    old = "k_000000000000_4e"
    nft.command(
        f"add set inet hyperwall {old} {{ type ipv4_addr . ipv4_addr . inet_proto . "
        "inet_service; elements = { 10.0.0.1 . 10.0.0.2 . tcp . 80 } }"
    )
    nft.command("add chain inet hyperwall p_000000000000")
    nft.command(
        "add rule inet hyperwall p_000000000000 "
        f"ip saddr . ip daddr . meta l4proto . th dport @{old} accept"
    )
    assert in_sync(nft, prog) != []
    assert NftBackend(nft).sync(prog).mode == "sync"
    assert in_sync(nft, prog) == []


def test_sync_replaces_the_earlier_routed_dispatch(nft: NftKernel, catalog: Catalog) -> None:
    """Before the one-lookup dispatch, the routed table had `spoof4/6` (interface . MAC .
    IP), `egress_map` and `ingress_map` (by interface name), used from `forward` and
    `to_vm`; an upgraded agent's first sync replaces them in one transaction."""
    prog = program(catalog)
    NftBackend(nft).apply(prog)
    nft.run(
        [
            {"flush": {"chain": {"family": "inet", "table": "hyperwall", "name": "forward"}}},
            {"flush": {"chain": {"family": "inet", "table": "hyperwall", "name": "to_vm"}}},
        ]
    )
    nft.command(
        "add set inet hyperwall spoof4 { type ifname . ether_addr . ipv4_addr; "
        'elements = { "hwt1" . 52:54:00:00:00:01 . 10.0.0.1 } }'
    )
    nft.command("add map inet hyperwall egress_map { type ifname : verdict; }")
    nft.command("add map inet hyperwall ingress_map { type ifname : verdict; }")
    nft.command(
        'add rule inet hyperwall forward iifname "hwt*" '
        "iifname . ether saddr . ip saddr != @spoof4 jump spoofed"
    )
    nft.command("add rule inet hyperwall forward iifname vmap @egress_map")
    nft.command("add rule inet hyperwall to_vm oifname vmap @ingress_map")
    assert in_sync(nft, prog) != []
    assert NftBackend(nft).sync(prog).mode == "sync"
    assert in_sync(nft, prog) == []
    listing = nft.list_table()
    assert listing is not None
    names = {e[k]["name"] for e in listing["nftables"] for k in ("set", "map") if k in e}
    assert not names & {"spoof4", "egress_map", "ingress_map"}


class CountingKernel(NftKernel):
    """The real kernel, counting its bulk element loads."""

    bulk = 0

    def add_elements(self, sets: Sequence[tuple[str, Sequence[bytes]]]) -> None:
        self.bulk += 1
        super().add_elements(sets)


def test_a_fresh_big_table_loads_its_big_sets_in_bulk(netns: str, catalog: Catalog) -> None:
    """Past `BULK_ELEMENTS` exact block elements, a fresh table's big sets get their elements
    as one nfnetlink batch, through a socket in the kernel object's namespace (not the caller's):
    the table ends exactly as rendered, and the calling namespace is untouched."""
    from hyperwall.dataplane.netns import inside
    from hyperwall.dataplane.nft.backend import BULK_ELEMENTS

    here = subprocess.run(["nft", "-j", "list", "tables"], capture_output=True, text=True)
    with inside(netns):
        nft = CountingKernel()
    n = BULK_ELEMENTS // 2 + 1000
    blocks = {
        name: BlockSet(
            name,
            frozenset(
                (4, V4 + 1 + i, V4 + 1 + i, V4 + k, V4 + k, 6, 80, 80, f"t/p/{name}")
                for i in range(n)
            ),
        )
        for k, name in ((2, "b:big1"), (3, "b:big2"))
    }
    prog = program(catalog)
    prog = dataclasses.replace(prog, block_sets={**prog.block_sets, **blocks})
    backend = NftBackend(nft)
    assert backend.apply(prog).mode == "sync"
    assert nft.bulk == 1
    assert in_sync(nft, prog) == []
    assert NftBackend(nft).sync(prog).mode == "noop"  # a restart finds nothing to do
    after = subprocess.run(["nft", "-j", "list", "tables"], capture_output=True, text=True)
    assert after.stdout == here.stdout  # the calling namespace's tables are as they were


def test_an_agent_dying_after_the_bulk_sets_completes_the_table_on_restart(
    nft: NftKernel, catalog: Catalog
) -> None:
    """The fresh load stops after its big sets (sets and elements in the kernel, no chain):
    nothing filters yet; the next agent's sync reads them back and adds only the rest."""
    n = 12_000
    blocks = {
        "b:big": BlockSet(
            "b:big",
            frozenset(
                (4, V4 + 1 + i, V4 + 1 + i, V4 + 2, V4 + 2, 6, 80, 80, "t/p/r") for i in range(n)
            ),
        ),
        "b:big2": BlockSet(
            "b:big2",
            frozenset(
                (4, V4 + 1 + i, V4 + 1 + i, V4 + 3, V4 + 3, 6, 80, 80, "t/p/r") for i in range(n)
            ),
        ),
    }
    prog = program(catalog)
    prog = dataclasses.replace(prog, block_sets={**prog.block_sets, **blocks})
    first = NftBackend(nft)
    loaded = first._load_big_sets(render_program(prog, first.options))  # then the agent dies
    assert loaded is not None and len(loaded.sets) == 2
    listing = nft.list_table()
    assert listing is not None and not any("chain" in e for e in listing["nftables"])
    result = NftBackend(nft).sync(prog)
    assert result.mode == "sync"
    assert in_sync(nft, prog) == []
    assert NftBackend(nft).sync(prog).mode == "noop"
