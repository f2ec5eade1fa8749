"""`hyperwall demo`: the whole system on this machine, in one command.

Starts the manager on loopback with SQLite, a lab of the documents' hosts (network
namespaces) with one agent process per host following the manager over HTTP, applies the
documents through the manager, waits for every host to realize them, prints a matrix of real
probes (expected by `trace` vs observed) and serves the API until Ctrl-C; then removes
everything it made. `--trace-only` prints the trace table without root or kernel.
Probes come from `probes.tsv` beside the documents: `from to service expected [why]`.

`--vm libvirt`: every VM is a real QEMU guest under a libvirtd per host (`lab up --vm
libvirt`); each agent learns its VMs from its libvirtd only, and a second table shows, from
the agents' `domains.json`, on which host each VM runs, its taps, and that its identity came
from libvirt (the `hw:workload` metadata of its domain).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import typer
from rich.markup import escape
from rich.table import Table

from hyperwall.analysis.trace import TraceInputError, trace
from hyperwall.cli.common import EXIT_OK, EXIT_VERDICT, fail, load_or_exit, out
from hyperwall.client.api import ClientError, ManagerClient
from hyperwall.io.files import read_documents
from hyperwall.lab import libvirtd
from hyperwall.lab.lab import Lab
from hyperwall.lab.relay import LoopbackRelay
from hyperwall.lab.topology import LabPlan
from hyperwall.policy.model import Catalog

_COLOURS = {"allow": "green", "drop": "red", "reject": "yellow"}
_RESULT = {"allow": "allowed", "drop": "blocked", "reject": "rejected"}
Probe = tuple[str, str, str, str, str]


def read_probes(path: Path) -> list[Probe]:
    probes = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        fields = line.split("\t")
        if len(fields) < 4:
            fail(f"{path}:{number}: expected 'from<TAB>to<TAB>service<TAB>expected[<TAB>why]'")
        why = fields[4] if len(fields) > 4 else ""
        probes.append((fields[0], fields[1], fields[2], fields[3], why))
    return probes


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_manager(state: Path, port: int) -> tuple[subprocess.Popen[bytes], str]:
    token_file = state / "admin.token"
    argv = [
        *[sys.executable, "-m", "hyperwall", "manager"],
        *["--listen", f"127.0.0.1:{port}", "--store", f"sqlite:///{state / 'manager.db'}"],
        *["--bootstrap-token-file", str(token_file)],
    ]
    log = (state / "manager.log").open("wb")
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        if proc.poll() is not None:
            fail(f"the manager exited: see {state / 'manager.log'}", EXIT_VERDICT)
        if token_file.exists():
            try:
                with ManagerClient(url, None, timeout=1) as c:
                    c.request("GET", "/v1/healthz")
                return proc, token_file.read_text().strip()
            except ClientError:
                pass
        time.sleep(0.1)
    proc.terminate()
    fail("the manager did not come up within 30 s", EXIT_VERDICT)


def _trace_rows(catalog: Catalog, probes: list[Probe]) -> list[tuple[Probe, str, str, str]]:
    rows: list[tuple[Probe, str, str, str]] = []
    for probe in probes:
        src, dst, service, _, _ = probe
        try:
            result = trace(catalog, src, dst, service)
        except TraceInputError as exc:
            fail(f"probe {src} -> {dst} {service}: {exc}")
        egress = result.egress.rule if result.egress else "-"
        ingress = result.ingress.rule if result.ingress else "-"
        rows.append((probe, result.verdict, egress, ingress))
    return rows


def _table(rows: list[tuple[Probe, str, str, str]], observed: Sequence[str] | None) -> int:
    table = Table(title="probes: expected by trace" + (" vs observed" if observed else ""))
    columns = ["from", "to", "service", "trace", "egress rule", "ingress rule"]
    columns += ["observed"] if observed else []
    for column in [*columns, "what it shows"]:
        table.add_column(column)
    wrong = 0
    for i, ((src, dst, service, expected, why), verdict, egress, ingress) in enumerate(rows):
        colour = _COLOURS[verdict]
        cells = [escape(src), escape(dst), escape(service), f"[{colour}]{verdict}[/{colour}]"]
        cells += [escape(egress), escape(ingress)]
        ok = verdict == expected
        if observed:
            seen = observed[i]
            ok = ok and seen == _RESULT[verdict]
            cells.append(seen if seen == _RESULT[verdict] else f"[red]{seen}[/red]")
        wrong += not ok
        cells.append(("" if ok else "[red]MISMATCH[/red] ") + escape(why))
        table.add_row(*cells)
    out.print(table)
    return wrong


IDENTITY = "libvirt domain metadata"


def vm_rows(
    catalog: Catalog, reports: Mapping[str, Mapping[str, Any]]
) -> list[tuple[str, str, str, str, str]]:
    """(VM, host, state, taps, identity) per workload, from each host's `domains.json`:
    the host whose libvirtd runs the domain, and whether its agent took the identity from the
    domain's metadata (managed) or not (unmanaged: why; not found)."""
    rows = []
    for key, w in sorted(catalog.workloads.items()):
        found = []
        for host, report in sorted(reports.items()):
            dom = report.get("domains", {}).get(w.name)
            if dom is not None:
                found.append((host, dom, report.get("unmanaged", {}).get(w.name)))
        if not found:
            rows.append((key, "-", "-", "-", "[red]not found in any libvirtd[/red]"))
            continue
        running = [f for f in found if f[1].get("state") == "running"] or found
        host, dom, why = running[0]
        taps = ", ".join(str(t.get("dev")) for t in dom.get("taps", ()))
        identity = IDENTITY if dom.get("managed") else f"[red]unmanaged: {why}[/red]"
        rows.append((key, host, str(dom.get("state", "?")), taps or "-", identity))
    return rows


def _vm_table(rows: list[tuple[str, str, str, str, str]]) -> int:
    table = Table(title="VMs: where they run and where their identity came from")
    for column in ("VM", "host", "state", "taps", "identity"):
        table.add_column(column)
    for key, host, state, taps, identity in rows:
        table.add_row(escape(key), escape(host), escape(state), escape(taps), identity)
    out.print(table)
    return sum(identity != IDENTITY for *_, identity in rows)


def _read_domains(lab: Lab) -> dict[str, dict[str, Any]]:
    reports = {}
    for host in lab.state().agents:
        try:
            reports[host] = json.loads((lab.paths.agent_dir(host) / "domains.json").read_text())
        except (OSError, ValueError):
            reports[host] = {}
    return reports


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def demo(
    files: list[Path] = typer.Option([Path("examples")], "-f", "--file", help="Documents"),
    probes: Path | None = typer.Option(None, "--probes", help="Probe table (probes.tsv)"),
    trace_only: bool = typer.Option(False, "--trace-only", help="Traces only: no root"),
    exit_after: bool = typer.Option(False, "--exit", help="Clean up after the matrix"),
    name: str = typer.Option("demo", "--name", help="Lab name"),
    vm: str = typer.Option(
        "netns", "--vm", help="VMs: netns (namespaces) or libvirt (real QEMU guests)"
    ),
) -> None:
    """Manager + lab + one agent per host, examples applied, real probes vs trace."""
    catalog = load_or_exit(files)
    table_path = probes or (files[0] if files[0].is_dir() else files[0].parent) / "probes.tsv"
    if not table_path.exists():
        fail(f"no probe table at {table_path}")
    rows = _trace_rows(catalog, read_probes(table_path))
    if trace_only:
        raise typer.Exit(EXIT_OK if _table(rows, None) == 0 else EXIT_VERDICT)
    if vm not in ("netns", "libvirt"):
        fail(f"bad --vm {vm!r}: expected netns or libvirt")
    kind: Literal["netns", "libvirt"] = "libvirt" if vm == "libvirt" else "netns"
    if os.geteuid() != 0:
        fail("the demo builds network namespaces: run it as root (or use --trace-only)")
    if kind == "libvirt":
        why = libvirtd.missing()
        if why is not None:
            fail(why)
    state = Path(tempfile.mkdtemp(prefix="hyperwall-demo-"))
    port = _free_port()
    lab = Lab(name)
    manager, admin = _start_manager(state, port)
    url = f"http://127.0.0.1:{port}"
    try:
        with ManagerClient(url, admin) as client:
            docs, _ = read_documents(files)
            applied = client.apply([d for d, _ in docs], message="hyperwall demo: examples")
            out.print(f"manager {url}: revision {applied.revision} applied")
            tokens = {}
            for host in sorted({w.host for w in catalog.workloads.values()}):
                token = client.create_token("agent", host=host).token
                tokens[host] = state / f"agent-{host}.token"
                tokens[host].write_text(token)
                tokens[host].chmod(0o600)
        out.print("building the lab and starting one agent per host ...")
        relays: list[LoopbackRelay] = []

        def relay(plan: LabPlan) -> None:  # agents in host namespaces reach the manager
            relays.append(LoopbackRelay([h.ns for h in plan.hosts], port))

        lab.up(files, server=url, token_files=tokens, before_agents=relay, vm=kind)
        timeout = 2.0 if kind == "libvirt" else 1.0  # TCG guests share the machine's cores
        matrix = [(s, d, svc) for (s, d, svc, _, _), *_ in rows]
        observed = lab.probe_many(matrix, timeout=timeout)
        wrong = _table(rows, observed)
        if kind == "libvirt":
            wrong += _vm_table(vm_rows(catalog, _read_domains(lab)))
        if exit_after:
            raise typer.Exit(EXIT_OK if wrong == 0 else EXIT_VERDICT)
        out.print(
            f"\nThe manager serves {url} (admin token in {state / 'admin.token'}); try\n"
            f"  HYPERWALL_SERVER={url} HYPERWALL_TOKEN=$(cat {state / 'admin.token'}) "
            f"hyperwall status\n  hyperwall lab probe web-1 db-1 tcp/5432 --name {name}\n"
            "Ctrl-C stops everything."
        )
        signal.signal(signal.SIGTERM, _interrupt)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            out.print("stopping ...")
    finally:
        lab.down()
        manager.terminate()
        try:
            manager.wait(timeout=10)
        except subprocess.TimeoutExpired:
            manager.kill()
