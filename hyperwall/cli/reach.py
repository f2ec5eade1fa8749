"""`hyperwall reach`: which groups (or workloads) reach which, on which services, by which
rules (`analysis.reach`); with `--between REV1 REV2` (through the manager) what a change
opened and closed. From files (`-f`) or from the manager's documents (`--server`,
`GET /v1/reach`). Exit 0, 2 for bad input; through the manager also 3 not allowed and
4 unreachable.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from hyperwall.analysis.reach import reach, resolve_services, sides
from hyperwall.analysis.view import FleetView
from hyperwall.cli.common import EXIT_OK, fail, load_or_exit, out, print_json, shown
from hyperwall.cli.remote_common import DEFAULT_SERVER, connected

RULES_SHOWN = 4  # deciding rules listed per cell in the text output


def _render(answer: dict[str, Any]) -> None:
    if "changes" in answer:
        old, new = answer["between"]
        for change in answer["changes"]:
            pair = f"{shown(change['from'])} -> {shown(change['to'])}"
            if change["opened"]:
                out.print(
                    f"[red]+ opens [/red] {pair}: {shown(', '.join(change['opened']))}", markup=True
                )
            if change["closed"]:
                out.print(
                    f"[green]- closes[/green] {pair}: {shown(', '.join(change['closed']))}",
                    markup=True,
                )
        out.print(f"{len(answer['changes'])} pair(s) changed from revision {old} to {new}")
        return
    for cell in answer["reach"]:
        rules = cell["rules"][:RULES_SHOWN]
        more = len(cell["rules"]) - len(rules)
        by = ", ".join(rules) + (f" and {more} more" if more else "")
        out.print(
            f"{shown(cell['from'])} -> {shown(cell['to'])}: "
            f"[bold]{shown(', '.join(cell['services']))}[/bold]"
            + (f"  (by {shown(by)})" if by else "  (unfiltered)"),
            markup=True,
        )
    pairs = len(answer["rows"]) * len(answer["columns"])
    out.print(f"{len(answer['reach'])} of {pairs} pair(s) reach")


def reach_command(
    files: list[Path] = typer.Option(None, "-f", "--file", help="File or folder (repeatable)"),
    server: str | None = typer.Option(
        None, "--server", envvar="HYPERWALL_SERVER", help=f"manager URL (e.g. {DEFAULT_SERVER})"
    ),
    token_file: Path | None = typer.Option(
        None, "--token-file", help="API token file, else env HYPERWALL_TOKEN (--server)"
    ),
    sources: list[str] = typer.Option(
        None, "--from", help="Rows: group:NAME, workload:NAME, cidr:CIDR, selector:EXPR or NAME"
    ),
    targets: list[str] = typer.Option(None, "--to", help="Columns, as --from"),
    service: str | None = typer.Option(None, "--service", help="tcp/8080-8090 or a Service name"),
    tenant: str | None = typer.Option(None, "--tenant", help="Only this tenant's groups"),
    workloads: bool = typer.Option(False, "--workloads", help="Workloads, not groups"),
    between: tuple[int, int] | None = typer.Option(
        None, "--between", help="REV1 REV2: what REV2 opens and closes (--server)"
    ),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON object"),
) -> None:
    """Print the reachability matrix (exit 0; 2 bad input; 3/4 manager errors)."""
    sources, targets = sources or [], targets or []
    if bool(files) == bool(server):
        fail("give -f PATH or --server URL")
    if server:
        params: dict[str, Any] = {"from": sources, "to": targets, "workloads": workloads}
        params |= {k: v for k, v in (("service", service), ("tenant", tenant)) if v}
        if between:
            params["between"] = list(between)
        with connected(server, token_file, as_json) as client:
            answer = client.reach(params)
    else:
        if between:
            fail("--between compares the manager's revisions: give --server")
        catalog = load_or_exit(files)
        view = FleetView(catalog)
        try:
            rows = sides(view, sources, tenant, workloads)
            columns = sides(view, targets, tenant, workloads)
            ports = resolve_services(catalog, service, tenant)
        except ValueError as exc:
            fail(str(exc))
        answer = reach(view, rows, columns, ports).to_json()
    if as_json:
        print_json(answer, compact=True)
    else:
        _render(answer)
    raise typer.Exit(EXIT_OK)
