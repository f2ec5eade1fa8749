"""The agent's libvirt source against libvirt's test driver: events re-read the domain, and
defining, starting, relabelling (a metadata edit), stopping and undefining a domain change
the host's program."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import libvirt
import pytest

from hyperwall.agent.compiling import LocalCompiler
from hyperwall.agent.libvirt_source import DiscoveringFolder, Localized, NotListed
from hyperwall.agent.policydir import PolicyDir
from hyperwall.agent.workqueue import WorkQueue
from hyperwall.compiler.program import HostProgram
from hyperwall.hypervisor.domain_xml import NS, Managed, Unmanaged, domain_xml, metadata_xml
from hyperwall.hypervisor.watcher import RELIST, DomainWatcher
from hyperwall.io.files import read_documents
from hyperwall.policy.documents import WorkloadDoc

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
URI = "test:///default"  # shared by every connection of this process


def example(name: str) -> WorkloadDoc:
    docs, _ = read_documents([EXAMPLES])
    raw = next(r for r, _ in docs if r.get("kind") == "Workload" and r["metadata"]["name"] == name)
    return WorkloadDoc.model_validate(raw)


@pytest.fixture
def conn() -> Iterator[libvirt.virConnect]:
    c = libvirt.open(URI)
    before = {d.name() for d in c.listAllDomains()}
    yield c
    for dom in c.listAllDomains():
        if dom.name() not in before:
            persistent = dom.isPersistent()
            if dom.isActive():
                dom.destroy()  # a transient domain is gone after this
            if persistent:
                dom.undefine()
    c.close()


@pytest.fixture
def watched(tmp_path: Path) -> Iterator[tuple[DomainWatcher, WorkQueue, Localized]]:
    folder = tmp_path / "policy"
    shutil.copytree(EXAMPLES, folder)
    queue = WorkQueue()
    watcher = DomainWatcher(URI, "hv1", lambda name: queue.add(f"domain:{name}"))
    discovering = DiscoveringFolder(PolicyDir(folder), watcher, "hv1")
    loader = Localized(LocalCompiler(discovering.load, "hv1"), watcher, "testnet")
    with pytest.raises(NotListed):
        loader()  # nothing is known before the first listing: keep what the kernel has
    watcher.start()
    assert watcher.wait_listed(10)
    drain(queue, watcher)
    try:
        yield watcher, queue, loader
    finally:
        watcher.stop()
        queue.close()


def drain(queue: WorkQueue, watcher: DomainWatcher, wait: float = 0.0) -> list[str]:
    """Process the queued keys as the agent's worker does: each re-reads its domain."""
    seen = []
    key = queue.get(timeout=wait)
    while key is not None:
        name = key.removeprefix("domain:")
        watcher.refresh(name)
        seen.append(name)
        queue.done(key)
        key = queue.get(timeout=0.3)
    return seen


def endpoints(loader: Localized) -> dict[str, str | None]:
    program, _ = loader()
    return {key: ep.ifname for key, ep in program.endpoints.items()}


def test_lifecycle_and_metadata_change_the_program(conn, watched) -> None:
    watcher, queue, loader = watched
    assert endpoints(loader) == {}  # the examples' hv1 workloads are declared, not running

    dom = conn.defineXML(domain_xml(example("web-1")))
    assert "web-1" in drain(queue, watcher, wait=5)
    assert isinstance(watcher.domains()["web-1"], Managed)
    assert endpoints(loader) == {}  # defined, not running: no tap, nothing to dispatch

    dom.create()
    assert "web-1" in drain(queue, watcher, wait=5)
    tap = watcher.domains()["web-1"].taps[0].dev
    assert tap is not None
    assert endpoints(loader) == {"acme/web-1/eth0": tap}
    before, _ = loader()

    relabelled = example("web-1").model_copy(
        update={
            "metadata": example("web-1").metadata.model_copy(
                update={"labels": {"app": "shop", "role": "app", "env": "prod"}}
            )
        }
    )
    dom.setMetadata(
        libvirt.VIR_DOMAIN_METADATA_ELEMENT,
        metadata_xml(relabelled),
        "hw",
        NS,
        libvirt.VIR_DOMAIN_AFFECT_LIVE | libvirt.VIR_DOMAIN_AFFECT_CONFIG,
    )
    assert "web-1" in drain(queue, watcher, wait=5)
    after, _ = loader()
    web_ip = (10 << 24) | (1 << 16) | 21  # 10.1.0.21

    def holding(program: HostProgram) -> set[str]:
        return {
            n for n, s in program.address_sets.items() if any(a <= web_ip <= b for a, b in s.v4)
        }

    assert holding(after) != holding(before)  # in the app group's sets now, not the web's

    dom.destroy()
    assert "web-1" in drain(queue, watcher, wait=5)
    assert endpoints(loader) == {}

    dom.undefine()
    assert "web-1" in drain(queue, watcher, wait=5)
    assert "web-1" not in watcher.domains()


def test_unmanaged_and_invalid_domains_fail_closed(conn, watched) -> None:
    watcher, queue, loader = watched
    plain = domain_xml(example("app-1")).split("<metadata>")[0] + "<devices>"
    plain += "<interface type='ethernet'><mac address='52:54:00:09:09:09'/></interface>"
    plain += "</devices></domain>"
    conn.createXML(plain.replace("app-1", "plain-1"), 0)
    bad = domain_xml(example("app-1")).replace('tenant="acme"', 'tenant="nosuch"')
    conn.createXML(bad, 0)
    good = conn.createXML(domain_xml(example("web-1")), 0)
    drain(queue, watcher, wait=5)
    assert isinstance(watcher.domains()["plain-1"], Unmanaged)
    assert set(endpoints(loader)) == {"acme/web-1/eth0"}  # app-1 (unknown tenant) is out
    assert good.isActive()


def test_relist_after_a_missed_event(conn, watched) -> None:
    watcher, _queue, loader = watched
    watcher.notify = lambda name: None  # events lost
    conn.createXML(domain_xml(example("web-1")), 0)
    watcher.refresh("web-1")
    assert set(endpoints(loader)) == {"acme/web-1/eth0"}
    conn.lookupByName("web-1").destroy()
    watcher.refresh(RELIST)  # the periodic relist is the safety net
    assert endpoints(loader) == {}
