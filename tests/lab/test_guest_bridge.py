"""`lab up --vm libvirt --mode bridge`: real guests on a Linux bridge.

Without root: the domain of a bridged guest (`<interface type='bridge'>` on `hwbr0`, on-link
routes) and the plan (the host bridge keeps only its VXLAN port; libvirt adds the taps). With
root, libvirt and QEMU: one lab for the module (tests/lab/guests/: 2 hosts, 4 guests):
libvirt's taps (`vnetN`) are ports of `hwbr0`, the agents run `--mode bridge --libvirt`, probes
give `trace`'s verdicts, and a guest sending from a foreign address gets nothing through (the
bridge family's anti-spoofing, by the tap's name from libvirt).
"""

from __future__ import annotations

import json
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest

from hyperwall.io.files import load_catalog
from hyperwall.lab import Lab, guest_lab, guests
from hyperwall.lab.guest_image import GuestImage
from hyperwall.lab.topology import HOST_BRIDGE, VXLAN, build_plan

from .conftest import assert_probes_match_trace, lab_name, lab_namespaces
from .test_guests import GUESTS, PARALLEL, PROBE_TIMEOUT, _matrix, _why_not

# -- pure -----------------------------------------------------------------------------------


def test_a_bridged_guest_is_a_bridge_interface_on_the_host_bridge() -> None:
    plan = guest_lab.plan_for(build_plan("tx", load_catalog([GUESTS]), "bridge"))
    vm = plan.vm("acme/db-1")
    doc = guests.workload_documents([GUESTS])[vm.key]
    image = GuestImage(Path("/c/vmlinuz"), Path("/c/initrd.img"), "k", "linux=1")
    xml = guests.guest_domain_xml(
        doc, vm, image, Path("/s/v1.chan"), Path("/s/c.log"), "qemu", "bridge"
    )
    root = ET.fromstring(xml)
    ifaces = root.findall("devices/interface")
    assert [i.get("type") for i in ifaces] == ["bridge", "bridge"]
    assert {i.find("source").get("bridge") for i in ifaces} == {HOST_BRIDGE}  # type: ignore[union-attr]
    assert [i.find("target") for i in ifaces] == [None, None]  # libvirt names the taps
    cmdline = root.findtext("os/cmdline", "")
    assert "hwgw=onlink" in cmdline and "169.254.1.1" not in cmdline
    # the host bridges keep their VXLAN port and address; the VM ports are libvirt's
    assert {b.ports for b in plan.bridges if b.name == HOST_BRIDGE} == {(VXLAN,)}
    assert not [n for n in plan.namespaces if n.role == "vm"]
    hv2 = plan.host("hv2").ns
    assert {r.dst for r in plan.routes if r.ns == hv2 and r.dev == HOST_BRIDGE} >= {
        "10.1.0.42/32",
        "fd00:1::10/128",
    }


# -- one lab for the rest of the module -------------------------------------------------------


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    if _why_not() is not None:
        pytest.skip(str(_why_not()))
    lab = Lab(lab_name("b"))
    lab.down()
    try:
        lab.up([GUESTS], vm="libvirt", mode="bridge")
        print(f"bridge guest boot times: {guest_lab.boot_times(lab.paths)}")
        yield lab
    finally:
        lab.down()
        assert lab_namespaces(lab) == []


def in_host(lab: Lab, host: str, *argv: str) -> str:
    ns = lab.plan().host(host).ns
    return subprocess.run(
        ["ip", "netns", "exec", ns, *argv], capture_output=True, text=True, check=True
    ).stdout


def spoof_drops(lab: Lab, host: str) -> int:
    """Packets counted by the anti-spoofing drop of the host's `bridge hyperwall` table."""
    out = json.loads(in_host(lab, host, "nft", "-j", "list", "table", "bridge", "hyperwall"))
    total = 0
    for obj in out["nftables"]:
        exprs = obj.get("rule", {}).get("expr", [])
        if any("log" in e and "anti-spoofing" in str(e["log"]) for e in exprs):
            total += sum(int(e["counter"]["packets"]) for e in exprs if "counter" in e)
    return total


@pytest.mark.lab
@pytest.mark.slow
def test_libvirt_taps_are_ports_of_the_host_bridge(lab: Lab) -> None:
    status = lab.status()
    assert status.healthy, status.to_json()
    for host in ("hv1", "hv2"):
        ports = json.loads(in_host(lab, host, "ip", "-j", "link", "show", "master", HOST_BRIDGE))
        names = {p["ifname"] for p in ports}
        taps = {
            t
            for v in status.vms
            if v.guest and v.guest["host"] == host
            for t in v.guest["taps"].values()  # type: ignore[attr-defined]
        }
        assert taps and all(t.startswith("vnet") for t in taps)
        assert names == taps | {VXLAN}
        pid = lab.agent_pid(host)
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        assert b"--libvirt" in argv and argv[argv.index(b"--mode") + 1] == b"bridge"


@pytest.mark.lab
@pytest.mark.slow
def test_bridged_traffic_matches_trace(lab: Lab) -> None:
    probes = _matrix(lab.catalog())  # outside addresses: IPv4 only (bridge mode, lab.md)
    assert_probes_match_trace(lab, probes, timeout=PROBE_TIMEOUT, parallel=PARALLEL)


@pytest.mark.lab
@pytest.mark.slow
def test_a_guest_sending_from_a_foreign_address_gets_nothing_through(lab: Lab) -> None:
    """web-1 (hv1) reaches app-2 (hv2) on app-api; from nobody's address or lb-1's, nothing."""
    probes = [("web-1", "app-2", "app-api")]
    v6 = [("fd00:1::21", "fd00:1::32", "app-api")]
    for allowed, foreigners, length in (
        (probes, ("10.1.0.99", "10.1.0.10"), 32),
        (v6, ("fd00:1::99",), 128),
    ):
        assert lab.probe_many(allowed, timeout=PROBE_TIMEOUT) == ["allowed"]
        for foreign in foreigners:
            before = spoof_drops(lab, "hv1")
            address = ["address", "add", f"{foreign}/{length}", "dev", "eth0"]
            lab.exec("web-1", ["ip", *address], check=True)
            try:
                report = lab.probe_reports(allowed, PROBE_TIMEOUT, source=foreign)[0]
            finally:
                address[1] = "del"
                lab.exec("web-1", ["ip", *address], check=True)
            assert report.result == "blocked", (foreign, report.outcome.detail)
            assert spoof_drops(lab, "hv1") > before, foreign
        assert lab.probe_many(allowed, timeout=PROBE_TIMEOUT) == ["allowed"]
