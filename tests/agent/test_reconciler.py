"""The agent's reconcile step: it converges to the documents (on the in-memory data plane),
keeps the last valid policy when they turn invalid, and closes every VM interface on a fresh
host before any policy is known (both against the real kernel in a throwaway namespace)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from hyperwall.agent.compiling import LocalCompiler
from hyperwall.agent.policydir import PolicyDir
from hyperwall.agent.reconciler import Reconciler
from hyperwall.agent.status import read_status
from hyperwall.compiler.fleet import FleetCompiler
from hyperwall.compiler.serialize import program_hash
from hyperwall.dataplane.memory import MemoryDataplane
from hyperwall.dataplane.nft.backend import NftBackend
from hyperwall.dataplane.nft.kernel import NftKernel
from hyperwall.dataplane.protocol import Dataplane
from hyperwall.io.files import load_catalog

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def expected_hash(folder: Path, host: str) -> str:
    catalog = load_catalog([folder])
    compiler = FleetCompiler(catalog.config, catalog.workloads.values())
    return program_hash(compiler.host_program(host))


def make(dataplane: Dataplane, folder: Path, state: Path) -> Reconciler:
    load = LocalCompiler(PolicyDir(folder).load, "hv1")
    return Reconciler("hv1", load, dataplane, state / "status.json")


def test_converges_and_follows_changes(tmp_path: Path) -> None:
    folder = tmp_path / "policy"
    shutil.copytree(EXAMPLES, folder)
    rec = make(MemoryDataplane(), folder, tmp_path)
    assert rec.reconcile("policy")
    status = read_status(tmp_path / "status.json")
    assert status is not None and status.converged and status.mode == "sync"
    assert status.program_hash == expected_hash(folder, "hv1")
    hv1 = folder / "workloads-hv1.yaml"
    hv1.write_text(hv1.read_text().replace("role: web", "role: app"))
    assert rec.reconcile("policy")
    status = read_status(tmp_path / "status.json")
    assert status is not None and status.mode == "incremental"
    assert status.program_hash == expected_hash(folder, "hv1")
    assert rec.reconcile("resync")  # drift check: nothing to do
    status = read_status(tmp_path / "status.json")
    assert status is not None and status.mode == "noop"


def test_invalid_documents_keep_the_last_valid_policy(nft: NftKernel, tmp_path: Path) -> None:
    folder = tmp_path / "policy"
    shutil.copytree(EXAMPLES, folder)
    rec = make(NftBackend(nft), folder, tmp_path)
    rec.reconcile("policy")
    good = read_status(tmp_path / "status.json")
    before = nft.list_table()
    (folder / "broken.yaml").write_text("apiVersion: hyperwall.io/v1\nkind: Nonsense\n")
    rec.reconcile("policy")
    status = read_status(tmp_path / "status.json")
    assert status is not None and good is not None
    assert not status.converged and status.error and "Nonsense" in status.error
    assert status.program_hash == good.program_hash

    def strip(listing: dict[str, object] | None) -> str:
        return json.dumps(listing, sort_keys=True)

    assert strip(nft.list_table()) == strip(before)


def test_fresh_host_without_policy_is_closed(nft: NftKernel, tmp_path: Path) -> None:
    rec = make(NftBackend(nft), tmp_path / "missing", tmp_path)
    assert not rec.reconcile("policy")
    listing = nft.list_table()
    assert listing is not None  # the skeleton: every VM interface falls through to drop
    maps = [e["map"] for e in listing["nftables"] if "map" in e]
    assert maps and all(not m.get("elem") for m in maps)
