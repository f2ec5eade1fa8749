"""Differential test: random fleets deployed in the lab; real traffic says what `trace` says.

Each example writes a fleet (tests/fleetgen.py, made lab-ready: every workload has an IPv4
and an IPv6 address) to a temporary folder, brings a lab up with agents, sends real probes
between the VMs (same host and across hosts, IPv4 and IPv6, TCP, UDP, ICMP echo) and to and
from addresses outside the lab, and compares every result with `hyperwall trace` on the same
documents: allow -> allowed, drop -> blocked, reject -> rejected. A fixed fleet makes sure
every combination of placement, family, protocol and verdict is exercised on every run.
"""

from __future__ import annotations

import copy
import ipaddress
import itertools
import tempfile
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import yaml
from hypothesis import HealthCheck, Phase, event, given, settings
from hypothesis import strategies as st

from hyperwall.analysis.trace import TraceResult, trace
from hyperwall.evaluator.evaluate import Decision
from hyperwall.lab import Lab, ProbeReport
from hyperwall.policy.model import Catalog, Workload
from tests.fleetgen import (
    V4_EXTERNAL,
    V4_POOL,
    V6_EXTERNAL,
    V6_POOL,
    Doc,
    doc,
    fleets,
    workload_ips,
)

from .conftest import VERDICT_TO_RESULT, lab_marks, lab_name, lab_namespaces

pytestmark = lab_marks()

Probe = tuple[str, str, str]  # (src address, dst address, service)

PARALLEL = 32  # below the log rate limit's burst (docs/design/lab.md, "What the lab found")
TCP_UDP = ("tcp/22", "tcp/80", "tcp/443", "tcp/8000", "tcp/8080", "tcp/8081", "udp/53", "udp/123")
SERVICES = {4: (*TCP_UDP, "icmp/echo-request"), 6: (*TCP_UDP, "icmpv6/echo-request")}
EXTERNAL = {4: V4_EXTERNAL, 6: V6_EXTERNAL}


def family(address: str) -> int:
    return ipaddress.ip_address(address).version


# -- fleets the lab can build ------------------------------------------------------------


@st.composite
def lab_fleets(draw: st.DrawFn) -> list[Doc]:
    """`fleetgen.fleets()` with an IPv4 and an IPv6 address on every workload (the lab needs
    one address per workload; both families give every pair of VMs both kinds of probe)."""
    docs = copy.deepcopy(draw(fleets()))
    used = set(workload_ips(docs, 4) + workload_ips(docs, 6))
    free = {
        4: [ip for ip in V4_POOL if ip not in used],
        6: [ip for ip in V6_POOL if ip not in used],
    }
    for d in docs:
        if d["kind"] != "Workload":
            continue
        interfaces = d["spec"]["interfaces"]
        for fam in (4, 6):
            if not any(family(ip) == fam for i in interfaces for ip in i["ips"]):
                where = draw(st.sampled_from(interfaces))
                where["ips"].append(free[fam].pop(draw(st.integers(0, len(free[fam]) - 1))))
    return docs


def outside_addresses(docs: Sequence[Doc], fam: int) -> list[str]:
    """Addresses no workload has: documentation ranges and unused ones of the pool (these
    fall into the generated CIDRs); the lab's external namespace answers for all of them."""
    used = set(workload_ips(docs, fam))
    pool = V4_POOL if fam == 4 else V6_POOL
    return [*EXTERNAL[fam], *[ip for ip in pool if ip not in used][:2]]


def addresses(w: Workload, fam: int) -> list[str]:
    return [ip for ip in w.ips() if family(ip) == fam]


@st.composite
def probe_lists(draw: st.DrawFn, catalog: Catalog, docs: Sequence[Doc]) -> list[Probe]:
    """For every ordered pair of VMs and each family: drawn addresses and two services; for
    every VM one probe to and one from an outside address of a drawn family."""
    workloads = sorted(catalog.workloads.values(), key=lambda w: w.key)
    probes: list[Probe] = []
    for a, b in itertools.permutations(workloads, 2):
        for fam in (4, 6):
            src = draw(st.sampled_from(addresses(a, fam)))
            dst = draw(st.sampled_from(addresses(b, fam)))
            services = draw(st.lists(st.sampled_from(SERVICES[fam]), min_size=2, max_size=2))
            probes += [(src, dst, s) for s in dict.fromkeys(services)]
    for w in workloads:
        for outbound in (True, False):
            fam = draw(st.sampled_from((4, 6)))
            mine = draw(st.sampled_from(addresses(w, fam)))
            other = draw(st.sampled_from(outside_addresses(docs, fam)))
            service = draw(st.sampled_from(SERVICES[fam]))
            probes.append((mine, other, service) if outbound else (other, mine, service))
    return probes


# -- running and comparing ---------------------------------------------------------------


def describe_end(catalog: Catalog, address: str) -> str:
    for w in catalog.workloads.values():
        if address in w.ips():
            return f"{address} ({w.key}@{w.host})"
    return f"{address} (outside)"


def describe_decision(d: Decision | None) -> str:
    return "-" if d is None else f"{d.verdict} by {d.rule}"


def mismatch_text(catalog: Catalog, probe: Probe, want: TraceResult, got: ProbeReport) -> str:
    src, dst, service = probe
    return (
        f"{describe_end(catalog, src)} -> {describe_end(catalog, dst)} {service}:"
        f" trace {want.verdict} (egress {describe_decision(want.egress)};"
        f" ingress {describe_decision(want.ingress)}), lab {got.result} ({got.outcome.detail})"
    )


def placement(catalog: Catalog, probe: Probe) -> str:
    owners = [
        next((w for w in catalog.workloads.values() if a in w.ips()), None) for a in probe[:2]
    ]
    if owners[0] is None or owners[1] is None:
        return "outside"
    return "same-host" if owners[0].host == owners[1].host else "cross-host"


class _NoAliases(yaml.SafeDumper):
    def ignore_aliases(self, data: object) -> bool:
        return True


def to_yaml(docs: Sequence[Doc]) -> str:
    return yaml.dump_all(docs, Dumper=_NoAliases, sort_keys=False)


def check_fleet(docs: Sequence[Doc], draw_probes: st.DataObject | None = None) -> Counter[str]:
    """Bring the fleet up in a lab, probe, compare with `trace`; raise AssertionError listing
    every mismatch. Returns what was covered: 'placement family proto result' -> count."""
    with tempfile.TemporaryDirectory(prefix="hwl-diff-") as folder:
        path = Path(folder) / "fleet.yaml"
        path.write_text(to_yaml(docs))
        lab = Lab(lab_name("d"))
        lab.down()  # left-overs of an earlier run with the same pid
        try:
            lab.up([path])
            catalog = lab.catalog()
            if draw_probes is None:
                probes = all_probes(catalog)
            else:
                probes = draw_probes.draw(probe_lists(catalog, docs), label="probes")
            expected = [trace(catalog, *p) for p in probes]
            reports = lab.probe_reports(probes, parallel=PARALLEL)
        finally:
            lab.down()
        assert lab_namespaces(lab) == []
    mismatches = [
        mismatch_text(catalog, p, want, got)
        for p, want, got in zip(probes, expected, reports, strict=True)
        if VERDICT_TO_RESULT[want.verdict] != got.result
    ]
    assert not mismatches, (
        f"{len(mismatches)} of {len(probes)} probes differ from trace:\n  "
        + "\n  ".join(mismatches)
        + "\n--- documents ---\n"
        + to_yaml(docs)
    )
    covered: Counter[str] = Counter()
    for p, got in zip(probes, reports, strict=True):
        proto = p[2].split("/")[0].removesuffix("v6")
        covered[f"{placement(catalog, p)} ipv{family(p[0])} {proto} {got.result}"] += 1
    return covered


def all_probes(catalog: Catalog) -> list[Probe]:
    """Every ordered pair of VMs, every address pair of each family, every service."""
    workloads = sorted(catalog.workloads.values(), key=lambda w: w.key)
    probes: list[Probe] = []
    for a, b in itertools.permutations(workloads, 2):
        for fam in (4, 6):
            for src, dst in itertools.product(addresses(a, fam), addresses(b, fam)):
                probes += [(src, dst, s) for s in FIXED_SERVICES[fam]]
    for w in workloads:
        probes.append((addresses(w, 4)[0], "192.0.2.1", "tcp/80"))
        probes.append(("2001:db8::7", addresses(w, 6)[0], "icmpv6/echo-request"))
    return probes


# -- a fixed fleet that covers every combination -----------------------------------------

FIXED_SERVICES = {
    4: ("tcp/80", "tcp/22", "tcp/443", "udp/53", "udp/123", "udp/5353", "icmp/echo-request"),
    6: ("tcp/80", "tcp/22", "tcp/443", "udp/53", "udp/123", "udp/5353", "icmpv6/echo-request"),
}


def _vm(name: str, tenant: str | None, host: str, role: str | None, n: int) -> Doc:
    labels = {"role": role} if role else {}
    ips = [f"10.0.0.{n}", f"fd00::{n:x}"]
    interfaces: list[Doc] = [{"name": "eth0", "mac": f"52:54:00:0f:00:{n:02x}", "ips": ips}]
    spec = {"host": host, "interfaces": interfaces}
    return doc("Workload", name, tenant, labels=labels, spec=spec)


def fixed_fleet() -> list[Doc]:
    """Ports decide TCP/UDP (allow 80/53, reject 22/123, drop 443/5353); for ICMP echo the
    destination's role decides (r: reject, d: drop, else allow). Each role on both hosts,
    two tenants and provider VMs, one VM with a second interface."""
    docs = [
        doc("Tenant", "acme", spec={"defaultAction": "drop"}),
        doc("Tenant", "globex", spec={"defaultAction": "allow"}),
        _vm("a", "acme", "hv1", "r", 1),
        _vm("b", "acme", "hv1", "d", 2),
        _vm("c", None, "hv1", None, 3),
        _vm("d", "acme", "hv2", "r", 4),
        _vm("e", None, "hv2", "d", 5),
        _vm("f", "globex", "hv2", None, 6),
    ]
    docs[-1]["spec"]["interfaces"].append(
        {"name": "eth1", "mac": "52:54:00:0f:01:06", "ips": ["10.0.0.16", "fd00::16"]}
    )
    icmp = ["icmp/echo-request", "icmpv6/echo-request"]  # (dumped without YAML aliases)
    rules = [
        {"name": "web", "action": "allow", "services": ["tcp/80", "udp/53"]},
        {"name": "refuse", "action": "reject", "services": ["tcp/22", "udp/123"]},
        {"name": "silent", "action": "drop", "services": ["tcp/443", "udp/5353"]},
        {
            "name": "ping-r",
            "action": "reject",
            "direction": "in",
            "to": [{"selector": 'role == "r"'}],
            "services": icmp,
        },
        {
            "name": "ping-d",
            "action": "drop",
            "direction": "in",
            "to": [{"selector": 'role == "d"'}],
            "services": icmp,
        },
        {"name": "ping", "action": "allow", "services": icmp},
    ]
    docs.append(doc("Policy", "base", spec={"tier": "infrastructure", "rules": rules}))
    return docs


def test_fixed_fleet_matches_trace() -> None:
    covered = check_fleet(fixed_fleet())
    wanted = {
        f"{where} ipv{fam} {proto} {result}"
        for where in ("same-host", "cross-host")
        for fam in (4, 6)
        for proto in ("tcp", "udp", "icmp")
        for result in ("allowed", "blocked", "rejected")
    }
    assert wanted - set(covered) == set()


def test_burst_of_udp_rejects_is_rejected(tmp_path: Path) -> None:
    """Regression: bursts of UDP probes that `trace` says are rejected (18 over IPv4, 18 over
    IPv6, from one VM at once) are all `rejected`. The kernel's ICMP error rate limit (IPv4:
    a burst of 6 per destination, then 1/s; IPv6: 10/s) once turned most of them into
    `blocked`: lab hosts now run without it."""
    path = tmp_path / "fleet.yaml"
    path.write_text(to_yaml(fixed_fleet()))
    lab = Lab(lab_name("r"))
    lab.down()
    with lab:
        lab.up([path])
        targets = ("1", "3", "4", "5", "6", "16")  # every other VM address (f has two)
        probes = [("10.0.0.2", f"10.0.0.{n}", "udp/123") for n in targets] * 3
        probes += [("fd00::2", f"fd00::{n}", "udp/123") for n in targets] * 3
        assert {trace(lab.catalog(), *p).verdict for p in probes} == {"reject"}
        results = lab.probe_many(probes)
    assert lab_namespaces(lab) == []
    assert Counter(results) == {"rejected": len(probes)}


# -- random fleets -----------------------------------------------------------------------


@settings(
    max_examples=8,
    deadline=None,
    # each example builds a lab: no shrinking (minutes); the failure lists the documents
    phases=(Phase.explicit, Phase.reuse, Phase.generate),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(docs=lab_fleets(), data=st.data())
def test_random_fleets_match_trace(docs: list[Doc], data: st.DataObject) -> None:
    covered = check_fleet(docs, data)
    for key in covered:
        event(key)
