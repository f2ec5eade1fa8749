"""`hyperwall delete KIND NAME`: delete one document on the manager as a new revision."""

from __future__ import annotations

from pathlib import Path

import typer

from hyperwall.cli.common import out, print_json, shown
from hyperwall.cli.remote_common import (
    JsonOpt,
    ServerOpt,
    TenantOpt,
    TokenFileOpt,
    connected,
    summary,
)


def delete(
    kind: str = typer.Argument(...),
    name: str = typer.Argument(...),
    tenant: str | None = TenantOpt,
    message: str = typer.Option("", "-m", "--message"),
    server: str = ServerOpt,
    token_file: Path | None = TokenFileOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Delete one document as a new revision (the rest must still validate)."""
    with connected(server, token_file, as_json) as client:
        result = client.delete(kind, name, tenant, message)
    if as_json:
        print_json(result.model_dump(mode="json"))
    else:
        out.print(f"revision {result.revision}: {shown(summary(result))}")
