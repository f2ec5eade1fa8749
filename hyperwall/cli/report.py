"""`hyperwall report --format html|pdf --out FILE [--tenant T] [--no-lint]`: the compliance
report.

The manager computes the content (`GET /v1/audit/report`: assertions with their evidence,
who changed the rules involved, the reachability matrix, lint, the ledger's verification);
this command renders it (`hyperwall.report`) and writes FILE. Exit 0 when every assertion
in it holds and the ledger is intact, 1 otherwise (the file is written either way); other
exit codes as every remote command (`remote_common`).
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

import typer

from hyperwall.cli.common import EXIT_VERDICT, fail, out, print_json, shown
from hyperwall.cli.remote_common import JsonOpt, ServerOpt, TokenFileOpt, connected
from hyperwall.report.html import render_html


class Format(StrEnum):
    html = "html"
    pdf = "pdf"


def report(
    out_file: Path = typer.Option(..., "--out", help="the file to write"),
    fmt: Format = typer.Option(Format.html, "--format", help="html or pdf"),
    tenant: str | None = typer.Option(None, "--tenant", help="one tenant (default: the fleet)"),
    no_lint: bool = typer.Option(
        False, "--no-lint", help="leave lint out (it reads every rule of the fleet)"
    ),
    server: str = ServerOpt,
    token_file: Path | None = TokenFileOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Write the compliance report: assertions with evidence, history, matrix, lint."""
    with connected(server, token_file, as_json) as client:
        body = client.report(tenant, lint=not no_lint)
    html = render_html(body)
    try:
        if fmt is Format.pdf:
            from hyperwall.report.pdf import write_pdf  # WeasyPrint loads Pango: only here

            write_pdf(html, out_file)
        else:
            out_file.write_text(html, encoding="utf-8")
    except OSError as exc:
        fail(f"cannot write {out_file}: {exc}")
    failing = [a["name"] for a in body.assertions if not a["holds"]]
    if as_json:
        print_json(
            {
                "out": str(out_file),
                "format": fmt.value,
                "revision": body.revision,
                "assertions": len(body.assertions),
                "failing": failing,
                "ledgerIntact": body.ledger.intact,
            }
        )
    else:
        out.print(
            f"wrote {shown(str(out_file))}: revision {body.revision},"
            f" {len(body.assertions) - len(failing)} of {len(body.assertions)} assertions hold,"
            f" ledger {'intact' if body.ledger.intact else 'ALTERED'}"
        )
    if failing or not body.ledger.intact:
        raise typer.Exit(EXIT_VERDICT)
