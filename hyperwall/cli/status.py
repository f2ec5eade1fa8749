"""`hyperwall status`: per-host realization status as the manager sees it."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from hyperwall.cli.common import EXIT_VERDICT, out, print_json, shown
from hyperwall.cli.remote_common import JsonOpt, ServerOpt, TokenFileOpt, connected


def status(
    server: str = ServerOpt,
    token_file: Path | None = TokenFileOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Per-host realization status; exit 1 unless every host is in sync."""
    with connected(server, token_file, as_json) as client:
        result = client.status()
    if as_json:
        print_json(result.model_dump(mode="json"))
    else:
        out.print(f"current revision {result.revision}")
        table = Table("HOST", "STATE", "REVISION", "PROGRAM", "ENDPOINTS", "ERROR")
        for h in result.hosts:
            table.add_row(
                shown(h.host),
                shown(h.state),
                str(h.revision if h.revision is not None else "-"),
                shown(h.programHash or "-"),
                str(h.endpoints),
                shown(h.error or ""),
            )
        out.print(table)
        for h in result.hosts:
            for c in h.conflicts:
                out.print(
                    shown(
                        f"{h.host}: conflict {c.get('workload')}: declared {c.get('declared')},"
                        f" discovered {c.get('discovered')} (the discovered one is in force)"
                    )
                )
            for domain, why in sorted(h.unmanaged.items()):
                out.print(shown(f"{h.host}: domain {domain} not enforced: {why}"))
    if any(h.state != "in-sync" for h in result.hosts):
        raise typer.Exit(EXIT_VERDICT)
