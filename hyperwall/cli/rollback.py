"""`hyperwall rollback N`: commit revision N's documents on the manager as a new revision."""

from __future__ import annotations

from pathlib import Path

import typer

from hyperwall.cli.common import out, print_json, shown
from hyperwall.cli.remote_common import JsonOpt, ServerOpt, TokenFileOpt, connected


def rollback(
    revision: int = typer.Argument(..., help="the revision whose documents to restore"),
    message: str | None = typer.Option(None, "-m", "--message"),
    server: str = ServerOpt,
    token_file: Path | None = TokenFileOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Commit revision N's documents as a new revision."""
    with connected(server, token_file, as_json) as client:
        result = client.rollback(revision, message)
    if as_json:
        print_json(result.model_dump(mode="json"))
    elif result.created:
        hosts = ", ".join(result.hostsChanged) or "none"
        out.print(f"revision {result.revision}: rolled back to {revision}; hosts: {shown(hosts)}")
    else:
        out.print(f"no change: already identical to revision {revision}")
