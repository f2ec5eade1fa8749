"""`hyperwall history`: the manager's revisions, newest first."""

from __future__ import annotations

import time
from pathlib import Path

import typer
from rich.table import Table

from hyperwall.cli.common import out, print_json, shown
from hyperwall.cli.remote_common import JsonOpt, ServerOpt, TokenFileOpt, connected


def history(
    limit: int = typer.Option(50, "--limit"),
    server: str = ServerOpt,
    token_file: Path | None = TokenFileOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Revisions, newest first."""
    with connected(server, token_file, as_json) as client:
        entries = client.history(limit)
    if as_json:
        fields = {"revision", "author", "time", "message"}
        print_json([e.model_dump(mode="json", include=fields) for e in entries])
        return
    table = Table("REV", "TIME (UTC)", "AUTHOR", "MESSAGE", "+/~/-")
    for e in entries:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(e.time))
        counts = f"{len(e.added)}/{len(e.changed)}/{len(e.removed)}"
        table.add_row(str(e.revision), when, shown(e.author), shown(e.message), counts)
    out.print(table)
