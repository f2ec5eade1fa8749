"""`hyperwall lab ...`: real hosts and VMs as network namespaces, from the same documents.

Commands: `up`, `apply`, `probe`, `status`, `exec`, `migrate`, `stats`, `logs`, `down`. Exit
codes: 0 good, 1 a probe not allowed or a lab failure, 2 bad input. The work is done by
`hyperwall.lab.Lab`.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal, NoReturn, TypeVar

import typer

from hyperwall.attachment import ATTACHMENTS, parse_attachment
from hyperwall.cli.common import (
    EXIT_INPUT,
    EXIT_OK,
    EXIT_VERDICT,
    err,
    fail,
    load_or_exit,
    out,
    print_json,
)
from hyperwall.cli.logs import (
    ActionFilterOpt,
    RuleFilterOpt,
    SinceOpt,
    TenantFilterOpt,
    UntilOpt,
    WorkloadFilterOpt,
    time_bounds,
)
from hyperwall.cli.stats import (
    PolicyOpt,
    TenantOpt,
    UnusedOpt,
    check_unused,
    lab_body,
    render,
)
from hyperwall.flows.filter import FlowFilter
from hyperwall.flows.local import read_local
from hyperwall.flows.text import record_line
from hyperwall.lab.agents import flow_log
from hyperwall.lab.errors import LabError, LabInputError
from hyperwall.lab.lab import DEFAULT_AGENT_TIMEOUT, DEFAULT_PROBE_TIMEOUT, Lab, LabStatus
from hyperwall.lab.nsexec import NetnsError
from hyperwall.lab.state import DEFAULT_NAME
from hyperwall.policy.errors import DocumentsInvalid

lab_app = typer.Typer(
    name="lab",
    help="Real hosts and VMs as network namespaces, built from the policy documents.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

T = TypeVar("T")
_COLOURS = {"allowed": "green", "blocked": "red", "rejected": "yellow"}


_NAME = typer.Option(DEFAULT_NAME, "--name", "-n", help="Lab name (1-12 of [a-z0-9])")
_FILES = typer.Option(..., "-f", "--file", help="File or folder of documents (repeatable)")


def _issues(exc: DocumentsInvalid) -> NoReturn:
    for issue in exc.issues:
        err.print(f"[red]error:[/red] {issue}", markup=True)
    err.print(f"{len(exc.issues)} error(s); nothing was applied")
    raise typer.Exit(EXIT_INPUT)


def _run(action: Callable[[], T]) -> T:
    """Run a lab action, turning its exceptions into messages and exit codes."""
    try:
        return action()
    except DocumentsInvalid as exc:
        _issues(exc)
    except LabInputError as exc:
        fail(str(exc), EXIT_INPUT)
    except (LabError, NetnsError) as exc:
        fail(str(exc), EXIT_VERDICT)


def _lab(name: str) -> Lab:
    if os.geteuid() != 0:
        fail("the lab creates network namespaces: run it as root", EXIT_VERDICT)
    return _run(lambda: Lab(name))


@lab_app.command("up")
def up(
    files: list[Path] = _FILES,
    name: str = _NAME,
    no_agents: bool = typer.Option(False, "--no-agents", help="No agents: no firewall at all"),
    timeout: float = typer.Option(
        DEFAULT_AGENT_TIMEOUT, "--timeout", help="Seconds to wait for the agents to converge"
    ),
    mode: str = typer.Option(
        "routed",
        "--mode",
        help="VM attachment: 'routed' (host-routed VM links) or 'bridge' (a Linux bridge per"
        " host, all VMs on one VXLAN segment, agents with --mode bridge)",
    ),
    vm: str = typer.Option(
        "netns",
        "--vm",
        help="What a VM is: 'netns' (a network namespace) or 'libvirt' (a real QEMU guest under"
        " a libvirtd per host; the agents learn their VMs from it)",
    ),
) -> None:
    """Build the lab: a namespace per host and per VM, responders, one agent per host."""
    chosen = parse_attachment(mode)
    if chosen is None:
        fail(f"bad --mode {mode!r}: expected one of {', '.join(ATTACHMENTS)}", EXIT_INPUT)
    if vm not in ("netns", "libvirt"):
        fail(f"bad --vm {vm!r}: expected netns or libvirt", EXIT_INPUT)
    kind: Literal["netns", "libvirt"] = "libvirt" if vm == "libvirt" else "netns"
    lab = _lab(name)
    load_or_exit(files)
    start = time.monotonic()
    _run(lambda: lab.up(files, agents_enabled=not no_agents, timeout=timeout, mode=chosen, vm=kind))
    plan = lab.plan()
    agents = "no agents" if no_agents else "agents converged"
    out.print(
        f"lab {name} up ({plan.mode} mode): {len(plan.hosts)} hosts, {len(plan.vms)}"
        f" {'guests' if kind == 'libvirt' else 'VMs'},"
        f" {agents} ({time.monotonic() - start:.1f} s)"
    )


@lab_app.command("apply")
def apply(
    files: list[Path] = _FILES,
    name: str = _NAME,
    wait: bool = typer.Option(False, "--wait", help="Wait until every agent has converged"),
    timeout: float = typer.Option(DEFAULT_AGENT_TIMEOUT, "--timeout", help="Seconds to wait"),
) -> None:
    """Replace the lab's documents (policy and labels; not hosts, VMs or interfaces)."""
    lab = _lab(name)
    load_or_exit(files)
    _run(lambda: lab.apply(files, wait=wait, timeout=timeout))
    out.print(f"lab {name}: documents applied" + (", agents converged" if wait else ""))


@lab_app.command("probe")
def probe(
    src: str = typer.Argument(..., help="Workload name or IP address (a lab VM or outside)"),
    dst: str = typer.Argument(..., help="Workload name or IP address"),
    service: str = typer.Argument(
        ..., help="tcp/443, udp/53, icmp/echo-request, icmpv6/echo-request, or a Service name"
    ),
    name: str = _NAME,
    as_json: bool = typer.Option(False, "--json", help="Print a JSON object"),
    timeout: float = typer.Option(
        DEFAULT_PROBE_TIMEOUT, "--timeout", help="Seconds without an answer that mean blocked"
    ),
) -> None:
    """Send real traffic from SRC to DST: exit 0 allowed, 1 blocked or rejected, 2 bad input."""
    lab = _lab(name)
    report = _run(lambda: lab.probe_report(src, dst, service, timeout))
    if as_json:
        print_json(report.to_json())
    else:
        colour = _COLOURS[report.result]
        out.print(
            f"[{colour}]{report.result}[/{colour}] {src} ({report.target.source.address}) ->"
            f" {dst} ({report.target.destination.address}) {report.target.service}:"
            f" {report.outcome.detail}",
            markup=True,
        )
    raise typer.Exit(EXIT_OK if report.result == "allowed" else EXIT_VERDICT)


def _render_status(status: LabStatus) -> None:
    word = "[green]healthy[/green]" if status.healthy else "[red]unhealthy[/red]"
    out.print(f"lab {status.name}: {status.phase}, {word}", markup=True)
    missing = [n for n, ok in status.namespaces.items() if not ok]
    out.print(f"namespaces: {len(status.namespaces) - len(missing)}/{len(status.namespaces)}")
    for n in missing:
        out.print(f"  missing {n}")
    for n in status.stray:
        out.print(f"  stray {n}")
    out.print("vms:")
    for vm in status.vms:
        state = "up" if vm.alive else "[red]responder down[/red]"
        addresses = ", ".join(vm.addresses)
        out.print(f"  {vm.key:24} {state} {vm.namespace} {addresses}", markup=True)
    out.print("agents:" if status.agents else "agents: none")
    for a in status.agents:
        if a.ok:
            state = f"[green]converged[/green] {a.program_hash}"
        else:
            state = "[red]" + ("not running" if not a.alive else "not converged") + "[/red]"
        line = f"  agent {a.host:10} pid {a.pid} {state}"
        if a.error:
            line += f" error: {a.error}"
        if a.flowlog:
            f = a.flowlog
            line += f" flow log: {f.get('records', 0)} records, {f.get('suppressed', 0)} suppressed"
        out.print(line, markup=True)


@lab_app.command("status")
def status(
    name: str = _NAME,
    as_json: bool = typer.Option(False, "--json", help="Print a JSON object"),
) -> None:
    """Namespaces, VMs and agents of the lab; exit 1 if anything is not as it should be."""
    lab = _lab(name)
    result = _run(lab.status)
    if as_json:
        print_json(result.to_json())
    else:
        _render_status(result)
    raise typer.Exit(EXIT_OK if result.healthy else EXIT_VERDICT)


@lab_app.command(
    "exec", context_settings={"allow_extra_args": True, "ignore_unknown_options": True}
)
def exec_command(
    vm: str = typer.Argument(..., help="Workload name, or 'external'"),
    command: list[str] = typer.Argument(..., help="The command (after --)"),
    name: str = _NAME,
) -> None:
    """Run a command inside a VM's namespace: `hyperwall lab exec web-1 -- ip addr`."""
    lab = _lab(name)
    result = _run(lambda: lab.exec(vm, command))
    sys.stdout.write(result.stdout)
    sys.stderr.write(result.stderr)
    raise typer.Exit(result.returncode)


@lab_app.command("down")
def down(name: str = _NAME) -> None:
    """Stop the lab's processes and delete its namespaces and state (idempotent)."""
    lab = _lab(name)
    removed = _run(lab.down)
    out.print(f"lab {name} down: {len(removed)} namespaces and links removed")


@lab_app.command("migrate")
def migrate(
    vm: str = typer.Argument(..., help="The VM (workload name or tenant/name) to move"),
    to: str = typer.Option(..., "--to", help="The host it moves to"),
    name: str = _NAME,
    no_state: bool = typer.Option(
        False, "--no-state", help="Skip the agents' connection-state handover"
    ),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON object"),
    timeout: float = typer.Option(
        DEFAULT_AGENT_TIMEOUT, "--timeout", help="Seconds to wait for the agents to converge"
    ),
    token_file: Path | None = typer.Option(
        None, "--token-file", help="Admin token, for a lab whose agents follow a manager"
    ),
) -> None:
    """Move a running VM to another host: its links, the underlay routes, its documents."""
    lab = _lab(name)
    token = token_file.read_text().strip() if token_file is not None else None
    report = _run(lambda: lab.migrate(vm, to, state=not no_state, timeout=timeout, token=token))
    if as_json:
        print_json(report.to_json())
        return
    gap = "not measured" if report.gap_ms is None else f"{report.gap_ms:g} ms"
    out.print(
        f"{report.vm}: {report.source} -> {report.dest}, {report.connections} connections"
        f" handed over{'' if report.state else ' (--no-state)'}, gap {gap}"
        + (f" ({report.echo})" if report.echo else "")
    )
    out.print("  steps: " + ", ".join(f"{k} {v:g} ms" for k, v in report.steps_ms))
    extra = report.to_json()
    if "downtimeMs" in extra:  # a real guest: qemu's own downtime, and the agent's timing
        out.print(
            f"  qemu downtime {extra['downtimeMs']} ms, enforced before resume:"
            f" {extra['enforcedBeforeResume']}"
        )
    for line in report.handover:
        out.print(f"  {line}", markup=False)
    for line in report.errors:
        err.print(f"handover failed: {line}", markup=False)


@lab_app.command("stats")
def stats(
    name: str = _NAME,
    tenant: str | None = TenantOpt,
    policy: str | None = PolicyOpt,
    unused: float | None = UnusedOpt,
    as_json: bool = typer.Option(False, "--json", help="Print a JSON object"),
) -> None:
    """Per-rule hit counters of the lab, summed over its agents' own readings (as
    `hyperwall stats` shows the manager's)."""
    check_unused(unused)
    lab = _lab(name)
    catalog = _run(lab.catalog)
    files = {h: lab.paths.agent_dir(h) / "hits.json" for h in _run(lab.state).agents}
    now = time.time()
    render(lab_body(files, catalog, tenant, policy, unused, now), as_json, now)


@lab_app.command("logs")
def logs(
    name: str = _NAME,
    tenant: str | None = TenantFilterOpt,
    workload: str | None = WorkloadFilterOpt,
    rule: str | None = RuleFilterOpt,
    action: str | None = ActionFilterOpt,
    since: str | None = SinceOpt,
    until: str | None = UntilOpt,
    limit: int | None = typer.Option(None, "--limit", help="only the newest N records"),
    as_json: bool = typer.Option(False, "--json", help="One JSON record per line"),
) -> None:
    """The lab agents' own flow logs (logged decisions, connections, suppression
    summaries), merged by time and filtered like `hyperwall logs`."""
    bounds = time_bounds(since, until, time.time_ns() // 1000)
    if limit is not None and limit < 0:
        fail("--limit: not negative", EXIT_INPUT)
    flt = FlowFilter(tenant, workload, rule, action, bounds[0], bounds[1])
    lab = _lab(name)
    hosts = sorted(_run(lab.state).agents)
    records, skipped = read_local([flow_log(lab.paths, h) for h in hosts], flt, limit)
    for record in records:
        if as_json:
            sys.stdout.write(json.dumps(record, separators=(",", ":")) + "\n")
        else:
            out.print(record_line(record), markup=False, highlight=False)
    sys.stdout.flush()
    if skipped:
        err.print(f"{skipped} line(s) that are not records were skipped", markup=False)
