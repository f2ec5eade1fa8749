"""`hyperwall lint -f PATH [--json]`: shadowed, unmatched and redundant rules, `pass` rules
that pass nothing, groups that select nothing (`analysis.lint`). Exit 0 when there is none,
1 when there is any, 2 for bad input."""

from __future__ import annotations

from pathlib import Path

import typer

from hyperwall.analysis.lint import lint
from hyperwall.cli.common import EXIT_OK, EXIT_VERDICT, load_or_exit, out, print_json, shown


def lint_command(
    files: list[Path] = typer.Option(..., "-f", "--file", help="File or folder (repeatable)"),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON object"),
) -> None:
    """Find dead and redundant rules and empty groups: exit 0 if none, 1 if any, 2 bad input."""
    catalog = load_or_exit(files)
    findings = lint(catalog)
    if as_json:
        print_json({"findings": [f.to_json() for f in findings]}, compact=True)
    else:
        for f in findings:
            out.print(f"[yellow]{f.kind:12}[/yellow] {shown(f)}", markup=True)
        out.print(f"{len(findings)} finding(s)")
    raise typer.Exit(EXIT_VERDICT if findings else EXIT_OK)
