"""What the commands against a running manager share (`apply`, `get`, `delete`, `diff`,
`history`, `rollback`, `status`, `token`): the `--server` / `--token-file` (or
HYPERWALL_SERVER / HYPERWALL_TOKEN) and `--json` options, the connection that maps each
client error to its exit code, and the change summaries. Exit codes: 0 ok, 1 not the good
state, 2 bad input, 3 not allowed, 4 server unreachable (or its store: a 503)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

import typer
from rich.console import Console

from hyperwall.cli.common import EXIT_INPUT, EXIT_VERDICT, err, fail, print_json, shown
from hyperwall.client import (
    AssertionsFailed,
    ClientError,
    Invalid,
    ManagerClient,
    NotAllowed,
    NotFound,
    StoreUnavailable,
    Unreachable,
)
from hyperwall.io.files import read_documents
from hyperwall.manager_api import ApplyResult, DiffResult

EXIT_NOT_ALLOWED = 3
EXIT_UNREACHABLE = 4
DEFAULT_SERVER = "http://127.0.0.1:8470"

ServerOpt = typer.Option(DEFAULT_SERVER, "--server", envvar="HYPERWALL_SERVER", help="manager URL")
TokenFileOpt = typer.Option(
    None, "--token-file", help="file holding the API token (else env HYPERWALL_TOKEN)"
)
JsonOpt = typer.Option(False, "--json", help="machine-readable output")
TenantOpt = typer.Option(None, "--tenant", help="the document's tenant (none: provider)")
FilesOpt = typer.Option(..., "-f", "--file", help="document file or folder (repeatable)")


def _token(token_file: Path | None) -> str | None:
    if token_file is not None:
        try:
            return token_file.read_text().strip()
        except OSError as exc:
            fail(f"cannot read token file: {exc}")
    return os.environ.get("HYPERWALL_TOKEN") or None


def _print_issues(errors: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        print_json({"errors": errors})
        return
    for e in errors:
        where = f"{e.get('file', 'request')} document {e.get('document', 0)}"
        if e.get("path"):
            where += f": {e['path']}"
        text = f"{where}: {e.get('message', '')}"
        if e.get("expected"):
            text += f" (expected {e['expected']})"
        err.print(f"[red]error:[/red] {shown(text)}", markup=True)
    err.print(f"{len(errors)} error(s); nothing was applied")


@contextmanager
def connected(server: str, token_file: Path | None, as_json: bool) -> Iterator[ManagerClient]:
    """A client; maps every client error to its exit code after printing it."""
    client = ManagerClient(server, _token(token_file))
    try:
        yield client
    except Invalid as exc:
        _print_issues(exc.errors, as_json)
        raise typer.Exit(EXIT_INPUT) from None
    except NotAllowed as exc:
        what = "not authenticated" if exc.status == 401 else "not allowed"
        _report(f"{what}: {exc}", as_json, EXIT_NOT_ALLOWED)
    except StoreUnavailable as exc:
        _report(f"the manager cannot reach its store (503): {exc}", as_json, EXIT_UNREACHABLE)
    except Unreachable as exc:
        _report(f"server unreachable: {exc}", as_json, EXIT_UNREACHABLE)
    except NotFound as exc:
        _report(str(exc), as_json, EXIT_VERDICT)
    except AssertionsFailed as exc:
        if as_json:
            print_json({"error": str(exc), "assertions": exc.assertions})
        else:
            err.print(f"[red]refused:[/red] {shown(str(exc))}; nothing was committed", markup=True)
            print_broken(exc.assertions)
        raise typer.Exit(EXIT_VERDICT) from None
    except ClientError as exc:
        _report(str(exc), as_json, EXIT_VERDICT)
    finally:
        client.close()


def _report(message: str, as_json: bool, code: int) -> NoReturn:
    if as_json:
        print_json({"error": message})
        raise typer.Exit(code)
    fail(message, code)


def print_broken(assertions: list[dict[str, Any]], console: Console = err) -> None:
    """Each failing assertion and its counterexample, replayable with `hyperwall trace`."""
    for a in assertions:
        case = a.get("counterexample") or {}
        trace = case.get("trace") or {}
        ends = [
            f"{side} {end.get('verdict')} by {end.get('rule')}"
            for side in ("egress", "ingress")
            if isinstance(end := trace.get(side), dict)
        ]
        text = (
            f"assertion {a.get('name')} fails: {case.get('from')} -> {case.get('to')}"
            f" {case.get('service')} is {trace.get('verdict')} ({'; '.join(ends) or 'no rule'})"
        )
        console.print(f"  {shown(text)}")


def read_files(paths: list[Path], as_json: bool) -> list[dict[str, Any]]:
    """The documents in `paths`; on any issue print every one and exit 2."""
    docs, issues = read_documents(paths)
    if issues:
        _print_issues([i.to_json() for i in issues], as_json)
        raise typer.Exit(EXIT_INPUT)
    return [doc for doc, _ in docs]


def summary(result: ApplyResult | DiffResult) -> str:
    """ "1 add, 2 change; hosts whose program changes: hv1" for an apply, delete or diff."""
    changes = result.changes
    counts = {a: sum(1 for c in changes if c["action"] == a) for a in ("add", "change", "remove")}
    text = ", ".join(f"{n} {a}" for a, n in counts.items() if n) or "no changes"
    hosts = result.hostsChanged
    return f"{text}; hosts whose program changes: {', '.join(hosts) if hosts else 'none'}"
