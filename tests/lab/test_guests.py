"""`lab up --vm libvirt`: real QEMU guests under a libvirtd per host.

Without root: the pure parts (plan without VM namespaces, domain XML, kernel command line,
host-side tap setup). With root, libvirt and QEMU: one guest alone answers a probe from the
outside; then one lab for the module (tests/lab/guests/: 2 hosts, 4 guests, db-1 with two
interfaces) whose probes give `trace`'s verdicts, `exec` runs in the guest, agents learn
their VMs from libvirt, and `down` leaves nothing.
"""

from __future__ import annotations

import itertools
import json
import os
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest

from hyperwall.hypervisor.domain_xml import Managed, parse_domain
from hyperwall.io.files import load_catalog
from hyperwall.lab import Lab, guest_lab, guests, libvirtd
from hyperwall.lab.errors import LabInputError
from hyperwall.lab.guest_image import GuestImage
from hyperwall.lab.topology import LabPlan, build_plan
from hyperwall.policy.model import Catalog

from .conftest import (
    ROOT,
    assert_probes_match_trace,
    lab_name,
    lab_namespaces,
    needs_root,
    run_cli,
)

GUESTS = ROOT / "tests" / "lab" / "guests"
PROBE_TIMEOUT = 2.0  # TCG guests answer in milliseconds, but 4 of them share 2 vCPUs
PARALLEL = 32


def _why_not() -> str | None:
    if os.geteuid() != 0:
        return "guests need root"
    return libvirtd.missing()


needs_guests = pytest.mark.skipif(_why_not() is not None, reason=str(_why_not()))


# -- pure -----------------------------------------------------------------------------------


def _plan() -> tuple[Catalog, LabPlan]:
    catalog = load_catalog([GUESTS])
    return catalog, build_plan("tx", catalog)


def test_the_plan_has_no_vm_namespaces_or_links() -> None:
    _, plan = _plan()
    free = guests.vm_free_plan(plan)
    assert {n.role for n in free.namespaces} == {"underlay", "external", "host"}
    links = {i.host_ifname for v in plan.vms for i in v.interfaces}
    assert not [v for v in free.veths if v.name in links or v.peer_name in links]
    assert not [r for r in free.routes if r.dev in links]
    assert not [s for s in free.sysctls if any(f"/{link}/" in s.key for link in links)]
    # the other hosts and the external namespace still route every VM address via its host
    assert {r.dst for r in free.routes if r.ns == plan.external.ns} >= {
        "10.1.0.10/32",
        "fd00:1::42/128",
    }
    assert free.vms == plan.vms


def test_domain_xml_boots_the_image_and_carries_the_workload() -> None:
    _, plan = _plan()
    docs = guests.workload_documents([GUESTS])
    vm = plan.vm("acme/db-1")
    image = GuestImage(Path("/c/vmlinuz"), Path("/c/initrd.img"), "k", "linux=1")
    xml = guests.guest_domain_xml(
        docs[vm.key], vm, image, Path("/s/v1.chan"), Path("/s/c.log"), "qemu"
    )
    root = ET.fromstring(xml)
    assert root.get("type") == "qemu"
    assert root.findtext("os/kernel") == "/c/vmlinuz"
    assert "hwif=52:54:00:01:01:41,eth1,101,10.1.0.42+fd00:1::42" in root.findtext("os/cmdline", "")
    ifaces = root.findall("devices/interface")
    assert [i.get("type") for i in ifaces] == ["ethernet", "ethernet"]
    assert [i.find("target") for i in ifaces] == [None, None]  # libvirt names the taps
    assert {i.find("model").get("type") for i in ifaces} == {"virtio"}  # type: ignore[union-attr]
    chan = root.find("devices/channel")
    assert chan is not None and chan.find("target").get("name") == guests.CHANNEL  # type: ignore[union-attr]
    parsed = parse_domain(xml, "hv2")
    assert isinstance(parsed, Managed)
    assert parsed.documents()[0]["metadata"]["labels"]["pci"] == "true"


def test_tap_setup_gives_gateway_routes_and_neighbours() -> None:
    _, plan = _plan()
    vm = plan.vm("acme/db-1")
    lines = guests.host_tap_lines(vm, {"52:54:00:01:00:41": "vnet3", "52:54:00:01:01:41": "vnet4"})
    assert "address add 169.254.1.1/32 dev vnet4" in lines
    assert "route replace fd00:1::42/128 dev vnet4" in lines
    assert "neigh replace 10.1.0.41 lladdr 52:54:00:01:00:41 dev vnet3 nud permanent" in lines


def test_domain_type_is_chosen_at_run_time() -> None:
    expected = "qemu" if Path("/sys/module/kvm_pvm").exists() else guests.domain_type()
    assert guests.domain_type() == expected


def test_without_libvirt_up_refuses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(libvirtd, "missing", lambda: "--vm libvirt needs libvirt: not here")
    with pytest.raises(LabInputError, match="not here"):
        guest_lab.check_available()


# -- one guest -------------------------------------------------------------------------------

ONE = """
apiVersion: hyperwall.io/v1
kind: Tenant
metadata: {name: acme}
---
apiVersion: hyperwall.io/v1
kind: Workload
metadata: {name: solo, tenant: acme}
spec:
  host: hv1
  interfaces:
    - {name: eth0, mac: "52:54:00:09:00:01", ips: [10.9.0.1, "fd00:9::1"]}
"""


@needs_root()
@needs_guests
@pytest.mark.lab
@pytest.mark.slow
def test_one_guest_answers_from_the_outside(tmp_path: Path) -> None:
    (tmp_path / "one.yaml").write_text(ONE)
    lab = Lab(lab_name("s"))
    lab.down()
    try:
        lab.up([tmp_path], agents_enabled=False, vm="libvirt")
        times = guest_lab.boot_times(lab.paths)
        print(f"one guest: {times}")
        for service in ("tcp/443", "udp/5353", "icmp", "tcp/7"):
            assert lab.probe("198.51.100.7", "solo", service, timeout=PROBE_TIMEOUT) == "allowed"
        assert lab.probe("fd00:9::1", "2001:db8::1", "tcp/80", timeout=PROBE_TIMEOUT) == "allowed"
        done = lab.exec("solo", ["sh", "-c", "hostname; cat /proc/cmdline; echo oops >&2; exit 3"])
        assert done.returncode == 3
        assert done.stdout.startswith("solo\n") and "hwname=solo" in done.stdout
        assert done.stderr == "oops\n"
    finally:
        lab.down()
    assert lab_namespaces(lab) == []
    assert not lab.paths.dir.exists()
    assert guest_lab.lab_processes(lab.paths) == []


# -- one lab with agents for the rest of the module -------------------------------------------


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    if _why_not() is not None:
        pytest.skip(str(_why_not()))
    lab = Lab(lab_name("g"))
    lab.down()
    try:
        lab.up([GUESTS], vm="libvirt")
        print(f"guest boot times: {guest_lab.boot_times(lab.paths)}")
        yield lab
    finally:
        lab.down()
        assert lab_namespaces(lab) == []


@pytest.mark.lab
@pytest.mark.slow
def test_every_guest_runs_and_answers(lab: Lab) -> None:
    status = lab.status()
    assert status.healthy, status.to_json()
    for vm in status.vms:
        assert vm.guest is not None and vm.guest["running"] is True
        taps = vm.guest["taps"]
        assert isinstance(taps, dict) and all(t.startswith("vnet") for t in taps.values())
    assert len(lab.state().vms) == 4


@pytest.mark.lab
@pytest.mark.slow
def test_agents_learn_their_vms_from_libvirt(lab: Lab) -> None:
    for host in ("hv1", "hv2"):
        pid = lab.agent_pid(host)
        assert pid is not None
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        assert b"--libvirt" in argv and b"vnet" in argv
        domains = json.loads((lab.paths.agent_dir(host) / "domains.json").read_text())
        assert domains  # the agent's view of its libvirt domains


def _matrix(catalog: Catalog) -> list[tuple[str, str, str]]:
    workloads = sorted(catalog.workloads.values(), key=lambda w: w.key)
    v6 = {w.key: next(ip for ip in w.ips() if ":" in ip) for w in workloads}
    probes = []
    for a, b in itertools.permutations(workloads, 2):
        probes += [
            (a.key, b.key, "tcp/5432"),
            (a.key, b.key, "tcp/80"),
            (a.key, b.key, "icmp/echo-request"),
            (v6[a.key], v6[b.key], "tcp/22"),
        ]
    for w in workloads:
        probes += [
            ("198.51.100.7", w.key, "tcp/443"),
            ("203.0.113.9", w.key, "tcp/443"),
            (w.key, "192.0.2.10", "tcp/873"),
            (w.key, "192.0.2.53", "udp/53"),
        ]
    probes += [("lb-1", "10.1.0.42", "http"), ("app-2", "10.1.0.42", "postgres")]
    probes += [("10.1.0.42", "app-2", "tcp/22"), ("web-1", "db-1", "postgres")]
    return probes


@pytest.mark.lab
@pytest.mark.slow
def test_real_traffic_matches_trace(lab: Lab) -> None:
    probes = _matrix(lab.catalog())
    assert_probes_match_trace(lab, probes, timeout=PROBE_TIMEOUT, parallel=PARALLEL)


@pytest.mark.lab
@pytest.mark.slow
def test_exec_and_probe_through_the_cli(lab: Lab) -> None:
    done = run_cli("lab", "exec", "db-1", "--name", lab.name, "--", "ip", "-o", "addr")
    assert done.returncode == 0, done.stderr
    assert "eth1" in done.stdout and "10.1.0.42/32" in done.stdout
    probe = run_cli("lab", "probe", "app-2", "db-1", "postgres", "--name", lab.name, "--json")
    assert probe.returncode == 0, probe.stderr
    assert json.loads(probe.stdout)["result"] == "allowed"
    status = run_cli("lab", "status", "--name", lab.name, "--json")
    assert json.loads(status.stdout)["vms"]["acme/db-1"]["guest"]["host"] == "hv2"


@pytest.mark.lab
@pytest.mark.slow
def test_down_after_a_crash_leaves_nothing(lab: Lab) -> None:
    """Last in the module: the state file is lost, then `lab down` (CLI) finds everything."""
    lab.paths.state_file.unlink()
    done = run_cli("lab", "down", "--name", lab.name)
    assert done.returncode == 0, done.stderr
    assert lab_namespaces(lab) == []
    assert not lab.paths.dir.exists()
    assert guest_lab.lab_processes(lab.paths) == []
