"""Real guests under real libvirtds, agents with `--libvirt`: what the hypervisor does is
enforced within seconds: a relabel (a metadata edit), metadata removed (the domain becomes
unmanaged: blocked), a domain stopped and started again; and restarting libvirtd under a
running agent changes nothing in the kernel."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import libvirt
import pytest

from hyperwall.dataplane.netns import inside
from hyperwall.dataplane.nft.backend import NftBackend
from hyperwall.dataplane.nft.kernel import NftKernel
from hyperwall.dataplane.nft.render import Options
from hyperwall.dataplane.nft.table import TableState
from hyperwall.hypervisor.domain_xml import NS, metadata_xml
from hyperwall.lab import Lab
from hyperwall.lab.guest_image import DEFAULT_CACHE
from hyperwall.lab.guests import wire_taps, workload_documents
from hyperwall.lab.libvirtd import missing, start, uri, wait_ready
from tests.lab.conftest import lab_marks, lab_name

pytestmark = lab_marks()
FLEET = Path(__file__).resolve().parents[2] / "benchmarks" / "hypervisor_fleet"
WAIT = 20.0  # seconds: "within seconds", generous for a loaded 2-core CI machine


def until(what: Callable[[], bool], timeout: float = WAIT) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if what():
            return True
        time.sleep(0.1)
    return what()


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    why = missing()
    if why is not None:
        pytest.skip(why)
    lab = Lab(lab_name("d"))
    lab.down()
    try:
        lab.up([FLEET], vm="libvirt")
        yield lab
    finally:
        lab.down()


def connect(lab: Lab, host: str) -> libvirt.virConnect:
    libvirt.registerErrorHandler(lambda *_: None, None)
    return libvirt.open(uri(lab.paths, host))


def probe(lab: Lab, src: str, dst: str, service: str = "tcp/8080") -> str:
    return str(lab.probe(src, dst, service))


def set_labels(lab: Lab, host: str, name: str, labels: dict[str, str] | None) -> None:
    """Rewrite a domain's hyperwall metadata (None: remove it) as an operator would."""
    doc = workload_documents([FLEET])[f"acme/{name}"]
    conn = connect(lab, host)
    try:
        dom = conn.lookupByName(name)
        flags = libvirt.VIR_DOMAIN_AFFECT_LIVE | libvirt.VIR_DOMAIN_AFFECT_CONFIG
        if labels is None:
            dom.setMetadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, None, None, NS, flags)
            return
        new = doc.model_copy(
            update={"metadata": doc.metadata.model_copy(update={"labels": labels})}
        )
        dom.setMetadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, metadata_xml(new), "hw", NS, flags)
    finally:
        conn.close()


def domains_json(lab: Lab, host: str) -> dict[str, object]:
    path = lab.paths.agent_dir(host) / "domains.json"
    return dict(json.loads(path.read_text()))


def table(lab: Lab, host: str) -> TableState:
    with inside(lab.plan().host(host).ns):
        backend = NftBackend(NftKernel(), Options(vm_prefix="vnet"))
    return backend.read_actual()[0]


def macs_dispatched(lab: Lab, host: str) -> set[str]:
    return {str(e[1]) for e in table(lab, host).elements.get("from4", set())}


def test_a_relabel_is_enforced_within_seconds(lab: Lab) -> None:
    assert probe(lab, "web-1", "app-2") == "allowed"
    set_labels(lab, "hv1", "web-1", {"role": "app"})  # app may not reach app
    try:
        assert until(lambda: probe(lab, "web-1", "app-2") == "blocked")
    finally:
        set_labels(lab, "hv1", "web-1", {"role": "web"})
    assert until(lambda: probe(lab, "web-1", "app-2") == "allowed")


def test_metadata_removed_makes_the_domain_unmanaged_and_blocked(lab: Lab) -> None:
    assert probe(lab, "web-1", "app-1") == "allowed"
    set_labels(lab, "hv1", "app-1", None)
    try:
        assert until(lambda: probe(lab, "web-1", "app-1") == "blocked")
        report = domains_json(lab, "hv1")
        assert "app-1" in dict(report["unmanaged"])  # type: ignore[call-overload]
        assert "52:54:00:0b:00:21" not in macs_dispatched(lab, "hv1")
    finally:
        set_labels(lab, "hv1", "app-1", {"role": "app"})
    assert until(lambda: probe(lab, "web-1", "app-1") == "allowed")


def test_stop_and_start_are_enforced_within_seconds(lab: Lab) -> None:
    mac = "52:54:00:0b:00:22"
    assert mac in macs_dispatched(lab, "hv2")
    conn = connect(lab, "hv2")
    try:
        dom = conn.lookupByName("app-2")
        dom.destroy()
        assert until(lambda: mac not in macs_dispatched(lab, "hv2"))
        dom.create()
        vm = next(v for v in lab.plan().vms if v.name == "app-2")
        tap = wire_taps(lab.plan(), vm, dom.XMLDesc(0))[mac]  # as the lab's `up` does
        assert until(lambda: mac in macs_dispatched(lab, "hv2"))
        entries = table(lab, "hv2").elements["from4"]
        assert any(e[0] == tap and e[1] == mac for e in entries)
        assert until(lambda: probe(lab, "web-1", "app-2") == "allowed", 60)  # booted again
    finally:
        conn.close()


def _libvirtd_pid(lab: Lab, host: str) -> int:
    ns_inode = os.stat(f"/run/netns/{lab.plan().host(host).ns}").st_ino
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if Path(f"/proc/{entry}/comm").read_text().strip() != "libvirtd":
                continue
            if os.stat(f"/proc/{entry}/ns/net").st_ino == ns_inode:
                return int(entry)
        except OSError:
            continue
    raise AssertionError(f"no libvirtd in {host}'s namespace")


def test_restarting_libvirtd_under_a_running_agent_changes_nothing(lab: Lab) -> None:
    before = table(lab, "hv1")
    agent = lab.agent_pid("hv1")
    os.kill(_libvirtd_pid(lab, "hv1"), signal.SIGTERM)
    assert until(lambda: domains_json(lab, "hv1")["connected"] is False)
    assert table(lab, "hv1") == before  # enforcement goes on unchanged
    assert probe(lab, "web-1", "app-2") == "allowed"
    host = lab.plan().host("hv1")
    wait_ready(lab.paths, {"hv1": start(lab.paths, host, DEFAULT_CACHE)})
    assert until(lambda: domains_json(lab, "hv1")["connected"] is True)
    assert lab.agent_pid("hv1") == agent
    assert table(lab, "hv1") == before
    # and events flow again over the new connection
    set_labels(lab, "hv1", "web-1", {"role": "app"})
    try:
        assert until(lambda: probe(lab, "web-1", "app-2") == "blocked")
    finally:
        set_labels(lab, "hv1", "web-1", {"role": "web"})
    assert until(lambda: probe(lab, "web-1", "app-2") == "allowed")
