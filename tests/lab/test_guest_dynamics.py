"""Real guests under real libvirtds, agents with `--libvirt`: what the hypervisor does is
enforced within seconds: a relabel (a metadata edit), metadata removed (the domain becomes
unmanaged: blocked), a domain stopped and started again; and restarting libvirtd under a
running agent changes nothing in the kernel."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from pathlib import Path

import libvirt
import pytest

from hyperwall.dataplane.netns import inside
from hyperwall.dataplane.nft.backend import NftBackend
from hyperwall.dataplane.nft.kernel import NftKernel
from hyperwall.dataplane.nft.render import Options
from hyperwall.dataplane.nft.table import TableState
from hyperwall.hypervisor.domain_xml import NS, metadata_element, metadata_xml
from hyperwall.lab import Lab
from hyperwall.lab.guest_image import DEFAULT_CACHE, ensure_image
from hyperwall.lab.guests import (
    Guest,
    guest_domain_xml,
    proxy_argv,
    wait_booted,
    wire_taps,
    workload_documents,
)
from hyperwall.lab.libvirtd import console_log, missing, start, uri, wait_ready
from hyperwall.lab.nsexec import spawn, terminate
from hyperwall.lab.probe_messages import ProbeRequest
from hyperwall.lab.responder_client import probe_many
from hyperwall.lab.state import Responder
from hyperwall.lab.topology import LabVm, VmInterface
from hyperwall.policy.documents import PolicyDoc, WorkloadDoc
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


def domain_xml_with_policy(xml: str, doc: WorkloadDoc, policy: PolicyDoc) -> str:
    """`xml` with its hw:workload metadata replaced by one that also carries `policy`."""
    root = ET.fromstring(xml)
    metadata = root.find("metadata")
    assert metadata is not None
    for child in list(metadata):
        metadata.remove(child)
    metadata.append(metadata_element(doc, policy))
    return ET.tostring(root, encoding="unicode")


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


NEW_WEB = {
    "apiVersion": "hyperwall.io/v1",
    "kind": "Workload",
    "metadata": {"name": "web-2", "tenant": "acme", "labels": {"role": "web"}},
    "spec": {
        "host": "hv1",
        "interfaces": [{"name": "eth0", "mac": "52:54:00:0b:00:12", "ips": ["10.9.0.12"]}],
    },
}
# rules carried by the VM (hw:policy): the outside may reach it on tcp/8080
NEW_WEB_POLICY = {
    "apiVersion": "hyperwall.io/v1",
    "kind": "Policy",
    "metadata": {"name": "vm-web-2", "tenant": "acme"},
    "spec": {
        "appliedTo": {"workload": "web-2"},
        "rules": [
            {
                "name": "office-in",
                "action": "allow",
                "direction": "in",
                "from": [{"cidr": "198.51.100.0/24"}],
                "services": ["tcp/8080"],
            }
        ],
    },
}


def unknown_interface_drops(lab: Lab, host: str) -> int:
    """Packets the host's table dropped on VM interfaces it has no dispatch entry for: the
    counter-and-drop rules of the base chains `forward` and `to_vm` (base_chains._UNKNOWN)."""
    total = 0
    for chain in ("forward", "to_vm"):
        argv = ["nft", "-j", "list", "chain", "inet", "hyperwall", chain]
        done = subprocess.run(
            ["ip", "netns", "exec", lab.plan().host(host).ns, *argv],
            capture_output=True,
            text=True,
            check=True,
        )
        for obj in json.loads(done.stdout)["nftables"]:
            exprs = obj.get("rule", {}).get("expr", [])
            if any("drop" in e for e in exprs):
                total += sum(int(e["counter"]["packets"]) for e in exprs if "counter" in e)
    return total


def test_a_starting_vm_passes_nothing_until_it_is_enforced(lab: Lab) -> None:
    """hv1's agent is frozen (SIGSTOP) while a new managed domain starts there: its tap
    (vnetN) is a VM interface without a dispatch entry, so every probe from and to the guest
    is blocked, and the table's unknown-interface drop counter counts them. Once the agent
    runs again (SIGCONT), the same probes are allowed within seconds."""
    plan = lab.plan()
    host = plan.host("hv1")
    doc = WorkloadDoc.model_validate(NEW_WEB)
    policy = PolicyDoc.model_validate(NEW_WEB_POLICY)
    iface = VmInterface("eth0", "52:54:00:0b:00:12", ("10.9.0.12",), "", None)
    vm = LabVm("acme/web-2", "web-2", "acme", "hv1", host.ns, 99, (iface,))
    channel = lab.paths.dir / "guests" / "v99.chan"
    xml = guest_domain_xml(
        doc, vm, ensure_image(DEFAULT_CACHE), channel, console_log(lab.paths, "hv1", "web-2")
    )
    # the rules the VM carries, in its metadata (the lab's helper writes the workload only)
    xml = domain_xml_with_policy(xml, doc, policy)
    guest = Guest(vm.key, "web-2", "hv1", uri(lab.paths, "hv1"), str(channel), "v99.sock")
    probes = {
        "out": (
            lab.paths.sockets / "v99.sock",
            ProbeRequest("tcp", "10.9.0.12", "10.9.0.21", 8080, 2.0),
        ),
        "in": (
            lab.paths.sockets / "x.sock",
            ProbeRequest("tcp", "198.51.100.7", "10.9.0.12", 8080, 2.0),
        ),
    }

    def results() -> list[str]:
        return [o.result for o in probe_many(list(probes.values()))]

    route = ["ip", "netns", "exec", plan.external.ns, "ip", "route"]
    to_guest = ["10.9.0.12/32", "via", host.ipv4, "dev", "uplink"]
    agent = lab.agent_pid("hv1")
    assert agent is not None
    conn = connect(lab, "hv1")
    proxy = None
    dom = None
    os.kill(agent, signal.SIGSTOP)
    try:
        subprocess.run([*route, "replace", *to_guest], check=True)
        before = unknown_interface_drops(lab, "hv1")
        dom = conn.defineXML(xml)
        dom.create()
        tap = wire_taps(plan, vm, dom.XMLDesc(0))["52:54:00:0b:00:12"]  # as `up` does
        assert tap.startswith("vnet")
        proxy = spawn(host.ns, proxy_argv(lab.paths, guest), lab.paths.logs / "v99.log")
        wait_booted(lab.paths, {vm.key: Responder(host.ns, "v99.sock", proxy)})
        assert results() == ["blocked", "blocked"]  # the agent has not seen the domain
        assert unknown_interface_drops(lab, "hv1") > before
        assert (tap, "52:54:00:0b:00:12") not in {
            (e[0], e[1]) for e in table(lab, "hv1").elements.get("from4", set())
        }
        os.kill(agent, signal.SIGCONT)
        assert until(lambda: results() == ["allowed", "allowed"])
    finally:
        os.kill(agent, signal.SIGCONT)
        if dom is not None:
            dom.destroy()
            dom.undefine()
        conn.close()
        if proxy is not None:
            terminate([proxy])
        subprocess.run([*route, "del", to_guest[0]], check=False)
    assert until(lambda: "web-2" not in dict(domains_json(lab, "hv1")["domains"]))  # type: ignore[call-overload]


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
