"""`hyperwall trace`: the verdict on one packet and the deciding rule at each end; with
`--live`, through the manager: one real probe, the rules each end's kernel hit beside the
offline answer (`manager.trace_routes`, `analysis.live`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.markup import escape

from hyperwall.analysis.trace import TraceInputError, TraceResult, trace
from hyperwall.cli.common import EXIT_OK, EXIT_VERDICT, fail, load_or_exit, out, print_json
from hyperwall.cli.remote_common import (
    DEFAULT_SERVER,
    EXIT_UNREACHABLE,
    connected,
)
from hyperwall.evaluator.evaluate import Decision

_COLOURS = {"allow": "green", "drop": "red", "reject": "yellow"}


def _end(label: str, name: str, decision: Decision | None) -> str:
    name = escape(name)
    if decision is None:
        return f"{label:8} {name}: not a managed workload"
    colour = _COLOURS[decision.verdict]
    rule = escape(decision.rule)
    return f"{label:8} {name}: [{colour}]{decision.verdict}[/{colour}] by {rule}"


def render(result: TraceResult) -> None:
    colour = _COLOURS[result.verdict]
    src = result.source.workload.key if result.source.workload else result.source.address
    dst = (
        result.destination.workload.key
        if result.destination.workload
        else result.destination.address
    )
    out.print(f"[{colour}]{result.verdict}[/{colour}]", markup=True)
    out.print(_end("egress", f"{src} ({result.source.address})", result.egress), markup=True)
    out.print(_end("ingress", f"{dst} ({result.destination.address})", result.ingress), markup=True)


def _decision(d: dict[str, Any] | None) -> str:
    if d is None:
        return "-"
    colour = _COLOURS.get(str(d["verdict"]), "white")
    return f"[{colour}]{escape(str(d['verdict']))}[/{colour}] by {escape(str(d['rule']))}"


def render_live(answer: dict[str, Any]) -> None:
    """The offline and the live decision of each end, then every difference."""
    offline, live = answer["offline"], answer["live"]
    probe = answer["probe"]
    out.print(
        escape(
            f"probe {probe['src']} -> {probe['dst']} {probe['proto']}/{probe['port']} "
            f"(tag {probe['tag']}), revision {answer['revision']}"
        ),
        markup=True,
    )
    for end in ("egress", "ingress"):
        hit = live.get(end)
        where = (
            f" (host {escape(hit['host'])}, {escape(hit['chain'])} #{hit['handle']})" if hit else ""
        )
        note = " (not reached)" if end in answer.get("unchecked", []) else ""
        out.print(f"{end:8} offline {_decision(offline.get(end))}", markup=True)
        out.print(f"{'':8} live    {_decision(hit)}{where}{note}", markup=True)
    for host, report in sorted(answer.get("hosts", {}).items()):
        if report.get("error"):
            out.print(escape(f"{host}: {report['error']}"))
    if answer["differences"]:
        for d in answer["differences"]:
            out.print(f"[red]difference:[/red] {escape(d)}", markup=True)
    else:
        out.print("[green]the kernel agrees with trace[/green]", markup=True)


def live_exit(answer: dict[str, Any]) -> int:
    """0 the kernel agrees, 1 a difference, 4 an agent did not answer in time."""
    if answer.get("missing"):
        return EXIT_UNREACHABLE
    return EXIT_VERDICT if answer["differences"] else EXIT_OK


def trace_live(
    source: str,
    destination: str,
    service: str,
    server: str,
    token_file: Path | None,
    timeout: float,
    as_json: bool,
) -> None:
    body = {"from": source, "to": destination, "service": service, "timeout": timeout}
    with connected(server, token_file, as_json) as client:
        answer = client.request("POST", "/v1/traces", json=body, timeout=timeout + 30.0)
    assert isinstance(answer, dict)
    if as_json:
        print_json(answer, compact=True)
    else:
        render_live(answer)
    raise typer.Exit(live_exit(answer))


def trace_command(
    files: list[Path] = typer.Option(
        None, "-f", "--file", help="File or folder (repeatable); not with --live"
    ),
    source: str = typer.Option(..., "--from", help="Workload name or IP address"),
    destination: str = typer.Option(..., "--to", help="Workload name or IP address"),
    service: str = typer.Option(
        ..., "--service", help="tcp/443, udp/53, icmp/echo-request, or a Service name"
    ),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON object"),
    live: bool = typer.Option(
        False, "--live", help="Through the manager: a real probe traced in the hosts' kernels"
    ),
    server: str = typer.Option(
        DEFAULT_SERVER, "--server", envvar="HYPERWALL_SERVER", help="manager URL (--live)"
    ),
    token_file: Path | None = typer.Option(
        None, "--token-file", help="API token file, else env HYPERWALL_TOKEN (--live)"
    ),
    timeout: float = typer.Option(10.0, "--timeout", help="Seconds to wait for the agents"),
) -> None:
    """Evaluate one packet: exit 0 for allow, 1 for drop or reject, 2 for bad input.
    With --live: exit 0 when the kernel agrees with trace, 1 on a difference, 2 bad input,
    3 not allowed, 4 manager or an agent unreachable."""
    if live:
        if files:
            fail("--live asks the manager: give no -f")
        if not 0 < timeout <= 60:
            fail("--timeout must be in (0, 60] seconds")
        trace_live(source, destination, service, server, token_file, timeout, as_json)
    if not files:
        fail("give -f PATH (or --live)")
    catalog = load_or_exit(files)
    try:
        result = trace(catalog, source, destination, service)
    except TraceInputError as exc:
        fail(str(exc))
    if as_json:
        print_json(result.to_json(), compact=True)
    else:
        render(result)
    raise typer.Exit(EXIT_OK if result.verdict == "allow" else EXIT_VERDICT)
