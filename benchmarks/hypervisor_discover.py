"""`discover` over many domains (libvirt's test driver), against the baseline of listing the
same domains' XML without parsing them, in the same run.

A node file with N managed domains (each with two labels, one interface with an IPv4 and
an IPv6 address, every tenth with an embedded policy) is written to a temporary folder;
`test:///PATH` opens a private copy of it. Measured, median of `--repeat` runs:

- baseline: `listAllDomains` + `XMLDesc` of every domain (what any libvirt client pays);
- hyperwall: the same plus parsing and validating every domain's metadata (`discover`);
- the `hyperwall discover --json` command end to end (process start, import, print).
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hyperwall.hypervisor.domain_xml import Managed, domain_xml
from hyperwall.hypervisor.libvirt_conn import discover, open_connection, read_all
from hyperwall.policy.documents import PolicyDoc, WorkloadDoc


def _workload(i: int) -> WorkloadDoc:
    mac = f"52:54:00:{(i >> 16) & 0xFF:02x}:{(i >> 8) & 0xFF:02x}:{i & 0xFF:02x}"
    return WorkloadDoc.model_validate(
        {
            "apiVersion": "hyperwall.io/v1",
            "kind": "Workload",
            "metadata": {
                "name": f"vm-{i:05d}",
                "tenant": f"t{i % 10}",
                "labels": {"role": f"r{i % 7}", "env": "prod" if i % 2 else "stage"},
            },
            "spec": {
                "host": "hv1",
                "interfaces": [
                    {
                        "name": "eth0",
                        "mac": mac,
                        "ips": [f"10.{i >> 16}.{(i >> 8) & 0xFF}.{i & 0xFF}", f"fd00::{i:x}"],
                    }
                ],
            },
        }
    )


def _policy(w: WorkloadDoc) -> PolicyDoc:
    return PolicyDoc.model_validate(
        {
            "apiVersion": "hyperwall.io/v1",
            "kind": "Policy",
            "metadata": {"name": f"vm-{w.metadata.name}", "tenant": w.metadata.tenant},
            "spec": {
                "appliedTo": {"workload": w.metadata.name},
                "rules": [
                    {
                        "name": "ssh",
                        "action": "allow",
                        "direction": "in",
                        "from": [{"cidr": "192.0.2.0/24"}],
                        "services": ["tcp/22"],
                    },
                ],
            },
        }
    )


def node_file(folder: Path, domains: int) -> Path:
    """A test-driver node file with `domains` managed domains."""
    parts = ["<node>"]
    for i in range(domains):
        w = _workload(i)
        parts.append(domain_xml(w, _policy(w) if i % 10 == 0 else None))
    parts.append("</node>")
    path = folder / "node.xml"
    path.write_text("\n".join(parts))
    return path


@dataclass(frozen=True, slots=True)
class DiscoverResult:
    domains: int
    managed: int
    baseline_s: float
    discover_s: float
    command_s: float


def _median_time(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def run(domains: int = 1000, repeat: int = 5) -> DiscoverResult:
    with tempfile.TemporaryDirectory(prefix="hwb-discover-") as tmp:
        uri = f"test://{node_file(Path(tmp), domains)}"
        conn = open_connection(uri)
        try:
            found = discover(conn, "hv1")
            managed = sum(isinstance(d, Managed) for d in found)
            baseline = _median_time(lambda: read_all(conn), repeat)
            parsed = _median_time(lambda: discover(conn, "hv1"), repeat)
        finally:
            conn.close()
        argv = [sys.executable, "-m", "hyperwall", "discover", "--connect", uri, "--json"]

        def command() -> None:
            subprocess.run(argv, check=True, capture_output=True)

        whole = _median_time(command, max(1, repeat // 2))
    return DiscoverResult(domains, managed, baseline, parsed, whole)


def section(result: DiscoverResult) -> list[str]:
    per = (result.discover_s - result.baseline_s) / result.domains * 1e6
    return [
        f"### `discover` over {result.domains:,} domains (libvirt test driver)",
        "",
        "| what | median |",
        "|---|---|",
        f"| baseline: list the domains and read each one's XML "
        f"| {result.baseline_s * 1000:.0f} ms |",
        f"| discover: the same, plus parse and validate every domain's metadata "
        f"| {result.discover_s * 1000:.0f} ms |",
        f"| `hyperwall discover --json`, the whole command | {result.command_s * 1000:.0f} ms |",
        "",
        f"{result.managed:,} of {result.domains:,} domains managed (all); parsing and "
        f"validating costs {per:.0f} us per domain above reading its XML.",
    ]
