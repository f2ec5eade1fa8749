"""`hyperwall trace`: the verdict on one packet and the deciding rule at each end."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from hyperwall.analysis.trace import TraceInputError, TraceResult, trace
from hyperwall.cli.common import EXIT_OK, EXIT_VERDICT, fail, load_or_exit, out, print_json
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


def trace_command(
    files: list[Path] = typer.Option(..., "-f", "--file", help="File or folder (repeatable)"),
    source: str = typer.Option(..., "--from", help="Workload name or IP address"),
    destination: str = typer.Option(..., "--to", help="Workload name or IP address"),
    service: str = typer.Option(
        ..., "--service", help="tcp/443, udp/53, icmp/echo-request, or a Service name"
    ),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON object"),
) -> None:
    """Evaluate one packet: exit 0 for allow, 1 for drop or reject, 2 for bad input."""
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
