"""`lab migrate` in a `--vm libvirt` lab: a real live migration between two libvirtds.

One lab for the module (tests/lab/guests/: 2 hosts, 4 guests; strict TCP on every host, the
agents with `--libvirt` and their handover listeners). lb-1 (hv1) moves to hv2 once, while an
established TCP connection from the outside (acme's office, 198.51.100.7) streams into it
through the firewall: the connection keeps flowing, probes give `trace`'s verdicts after the
move, the `hw:workload` metadata arrived with the domain, and hv1 keeps nothing of the VM.
A move under TCG takes ~3-8 s; the lab ~30 s.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator

import pytest

from hyperwall.analysis.trace import trace
from hyperwall.hypervisor.domain_xml import Managed, parse_domain
from hyperwall.lab import Lab, libvirtd
from hyperwall.lab.guest_migrate import GuestMigrationReport

from .conftest import VERDICT_TO_RESULT, lab_marks, running_lab
from .test_guests import GUESTS, needs_guests

pytestmark = [*lab_marks(), needs_guests]

VM, KEY, HOME, AWAY = "lb-1", "acme/lb-1", "hv1", "hv2"
OFFICE = "198.51.100.7"
PROBES = [
    (OFFICE, KEY, "tcp/443"),
    (OFFICE, KEY, "tcp/22"),
    (KEY, "acme/web-1", "tcp/80"),
    ("acme/web-1", KEY, "tcp/80"),
    ("acme/app-2", KEY, "tcp/80"),
    (KEY, "acme/db-1", "tcp/5432"),
    (KEY, "acme/db-1", "icmp/echo-request"),
]


class Held:
    """An established TCP echo stream from the outside into the guest (`lab.gapmeter`)."""

    def __init__(self, lab: Lab, dst: str, port: int) -> None:
        argv = [sys.executable, "-m", "hyperwall.lab.gapmeter", "--proto", "tcp"]
        argv += ["--src", OFFICE, "--dst", dst, "--port", str(port), "--interval", "0.005"]
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", lab.plan().external.ns, *argv],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        assert self.proc.stdout.readline().strip() == "ready"

    def result(self) -> dict[str, object]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.close()
        out = self.proc.stdout.read()
        self.proc.wait(timeout=30)
        return dict(json.loads(out.strip().splitlines()[-1]))


Moved = tuple[Lab, GuestMigrationReport, dict[str, object], list[str]]


@pytest.fixture(scope="module")
def moved() -> Iterator[Moved]:
    with running_lab("gm", [GUESTS], vm="libvirt") as lab:
        before = [str(r.result) for r in lab.probe_reports(PROBES, timeout=2.0)]
        held = Held(lab, "10.1.0.10", 443)
        try:
            report = lab.migrate(VM, AWAY)
        finally:
            stream = held.result()
        assert isinstance(report, GuestMigrationReport)
        yield lab, report, stream, before


def _in(lab: Lab, host: str, *argv: str) -> str:
    ns = lab.plan().host(host).ns
    return subprocess.run(
        ["ip", "netns", "exec", ns, *argv], capture_output=True, text=True, check=True
    ).stdout


def test_an_established_connection_keeps_flowing(moved: Moved) -> None:
    _, report, stream, _ = moved
    assert report.errors == ()
    assert (report.source, report.dest, report.state) == (HOME, AWAY, True)
    assert stream["broken"] is False and stream["resumed"] is True, stream
    assert report.connections >= 1  # at least the held stream was handed over
    assert report.broken is False and report.gap_ms is not None
    assert report.downtime_ms is not None and report.downtime_ms > 0
    # the destination's agent had the taps in its dispatch maps before the guest ran there
    assert report.enforced_before_resume is True, report.events_ms
    assert report.to_json()["from"] == HOME and "downtimeMs" in report.to_json()


def test_probes_give_the_verdicts_of_trace_after_the_move(moved: Moved) -> None:
    lab, _, _, before = moved
    catalog = lab.catalog()
    assert catalog.workloads[KEY].host == AWAY  # the documents follow the VM
    expected = [VERDICT_TO_RESULT[trace(catalog, *p).verdict] for p in PROBES]
    after = [r.result for r in lab.probe_reports(PROBES, timeout=2.0)]
    assert after == expected
    assert before == expected  # the policy is bound to the VM, not to its host
    assert lab.exec(VM, ["cat", "/proc/uptime"], check=True).stdout  # exec follows it too


def test_the_metadata_arrived_with_the_domain(moved: Moved) -> None:
    import libvirt

    lab, _, _, _ = moved
    for host, present in ((AWAY, True), (HOME, False)):
        conn = libvirt.open(libvirtd.uri(lab.paths, host))
        try:
            names = {d.name(): d for d in conn.listAllDomains()}
            assert (VM in names) is present
            if present:
                dom = names[VM]
                assert dom.isActive() and dom.isPersistent()
                parsed = parse_domain(dom.XMLDesc(0), host)
                assert isinstance(parsed, Managed)
                assert parsed.documents()[0]["metadata"]["name"] == VM
        finally:
            conn.close()
    agent = json.loads((lab.paths.agent_dir(AWAY) / "domains.json").read_text())
    assert agent["domains"][VM]["managed"] is True


def test_the_source_keeps_nothing_of_the_vm(moved: Moved) -> None:
    lab, _, _, _ = moved
    vm = lab.plan().vm(KEY)
    dest = lab.plan().host(AWAY)
    # no dispatch entry (tap . address) of the VM; its addresses stay in the other VMs'
    # rules (web-1 here allows http from the lb group, lb-1 included)
    for table in ("from4", "to4", "from6", "to6"):
        nft = _in(lab, HOME, "nft", "-j", "list", "map", "inet", "hyperwall", table)
        assert not [ip for ip in vm.addresses if f'"{ip}"' in nft], table
    # no connection entry of the VM, but those of hv1's own VMs with it (web-1's: theirs)
    local = {ip for v in lab.plan().vms if v.host == HOME for ip in v.addresses}
    tracked = _in(lab, HOME, "conntrack", "-L").splitlines()
    left = [
        line
        for line in tracked
        if any(f"={ip} " in line for ip in vm.addresses)
        and not any(f"={ip} " in line for ip in local)
    ]
    assert left == []
    for family, gateway in (("-4", dest.ipv4), ("-6", dest.ipv6)):
        routes = json.loads(_in(lab, HOME, "ip", "-j", family, "route", "show", "table", "all"))
        to_vm = [r for r in routes if r["dst"].split("/")[0] in vm.addresses]
        assert to_vm and all(r.get("gateway") == gateway for r in to_vm), to_vm
    neighbours = json.loads(_in(lab, HOME, "ip", "-j", "neigh", "show"))
    assert not [n for n in neighbours if n["dst"] in vm.addresses]
    external = json.loads(_in_external(lab, "ip", "-j", "route", "show", "10.1.0.10"))
    assert [r.get("gateway") for r in external] == [dest.ipv4]


def _in_external(lab: Lab, *argv: str) -> str:
    ns = lab.plan().external.ns
    return subprocess.run(
        ["ip", "netns", "exec", ns, *argv], capture_output=True, text=True, check=True
    ).stdout


@pytest.fixture(scope="module")
def moved_back_without_state(moved: Moved) -> tuple[GuestMigrationReport, dict[str, object]]:
    """lb-1 moved back to hv1 with `--no-state` under a new held stream (after the tests
    above: the module's one lab, one more live migration)."""
    lab = moved[0]
    held = Held(lab, "10.1.0.10", 443)
    try:
        report = lab.migrate(VM, HOME, state=False)
    finally:
        stream = held.result()
    assert isinstance(report, GuestMigrationReport)
    return report, stream


def test_without_state_the_held_connection_breaks_and_new_ones_work(
    moved: Moved, moved_back_without_state: tuple[GuestMigrationReport, dict[str, object]]
) -> None:
    lab = moved[0]
    report, stream = moved_back_without_state
    assert report.errors == () and report.state is False
    assert (report.source, report.dest) == (AWAY, HOME)
    assert stream["resumed"] is False, stream  # strict TCP: no entry on hv1, dropped
    assert report.enforced_before_resume is True
    catalog = lab.catalog()
    expected = [VERDICT_TO_RESULT[trace(catalog, *p).verdict] for p in PROBES]
    assert [r.result for r in lab.probe_reports(PROBES, timeout=2.0)] == expected
