"""`hyperwall apply -f FILES [--wait]`: upsert documents on the manager as one revision and
optionally wait until the affected hosts realize it."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from hyperwall.cli.common import EXIT_VERDICT, err, out, print_json, shown
from hyperwall.cli.remote_common import (
    FilesOpt,
    JsonOpt,
    ServerOpt,
    TokenFileOpt,
    connected,
    read_files,
    summary,
)
from hyperwall.client import ManagerClient


def apply(
    files: list[Path] = FilesOpt,
    message: str = typer.Option("", "-m", "--message", help="revision message"),
    wait: bool = typer.Option(False, "--wait", help="wait until affected hosts realize it"),
    timeout: float = typer.Option(120.0, "--timeout", help="seconds --wait waits"),
    server: str = ServerOpt,
    token_file: Path | None = TokenFileOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Upsert documents (all or nothing) as one new revision."""
    docs = read_files(files, as_json)
    with connected(server, token_file, as_json) as client:
        result = client.apply(docs, message)
        realized = True
        if wait and result.created:
            realized = _wait(client, result.revision, result.hostsChanged, timeout, as_json)
    body = result.model_dump(mode="json")
    if as_json:
        print_json({**body, "realized": realized} if wait else body)
    elif result.created:
        out.print(f"revision {result.revision}: {shown(summary(result))}")
    else:
        out.print(f"no change: identical to revision {result.revision}; no revision created")
    if not realized:
        raise typer.Exit(EXIT_VERDICT)


def _wait(
    client: ManagerClient, revision: int, hosts: list[str], timeout: float, as_json: bool
) -> bool:
    deadline = time.monotonic() + timeout
    pending = set(hosts)
    while pending:
        by_host = {h.host: h for h in client.status().hosts}
        for host in list(pending):
            h = by_host.get(host)
            if h and (h.revision or 0) >= revision and h.converged and not h.error:
                pending.discard(host)
        if not pending:
            break
        if time.monotonic() >= deadline:
            if not as_json:
                err.print(f"timed out; not yet realized on: {shown(', '.join(sorted(pending)))}")
            return False
        time.sleep(0.5)
    return True
