"""`hyperwall verify -f PATH [--json]`: does every Assertion in PATH hold?

Exit 0 when every assertion holds, 1 when one fails, 2 for bad input (docs/policy.md,
"Compliance as code"). The checker is `analysis.assertions`: exhaustive over equivalence
classes; a failure comes with a counterexample that `hyperwall trace` replays.
"""

from __future__ import annotations

from pathlib import Path

import typer

from hyperwall.analysis.assertions import AssertionResult, check_assertions
from hyperwall.cli.common import EXIT_OK, EXIT_VERDICT, load_or_exit, out, print_json, shown

EVIDENCE_SHOWN = 5  # deciding rules listed per assertion in the text output


def _render(result: AssertionResult, files: list[Path]) -> None:
    name = shown(result.name)
    if result.holds:
        rules = list(result.evidence[:EVIDENCE_SHOWN])
        more = len(result.evidence) - len(rules)
        because = ", ".join(shown(r) for r in rules) + (f" and {more} more" if more else "")
        out.print(
            f"[green]holds[/green]  {name} ({result.expect}"
            + (f"; by {because})" if rules else ")"),
            markup=True,
        )
        return
    cx = result.counterexample
    assert cx is not None
    t = cx.trace
    out.print(f"[red]FAILS[/red]  {name} (expect {result.expect})", markup=True)
    out.print(
        f"       {shown(cx.source)} -> {shown(cx.destination)} {shown(cx.service)}: "
        f"{shown(t.verdict)}",
        markup=True,
    )
    for label, decision in (("egress", t.egress), ("ingress", t.ingress)):
        if decision is not None:
            out.print(
                f"       {label} {shown(decision.verdict)} by {shown(decision.rule)}", markup=True
            )
    paths = " ".join(f"-f {shown(p)}" for p in files)
    out.print(
        f"       replay: hyperwall trace {paths} --from {shown(cx.source)} "
        f"--to {shown(cx.destination)} --service {shown(cx.service)}",
        markup=True,
    )


def verify(
    files: list[Path] = typer.Option(..., "-f", "--file", help="File or folder (repeatable)"),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON object"),
) -> None:
    """Check every Assertion: exit 0 if all hold, 1 if one fails, 2 for bad input."""
    catalog = load_or_exit(files)
    results = check_assertions(catalog)
    if as_json:
        print_json({"assertions": [r.to_json() for r in results]}, compact=True)
    else:
        for r in results:
            _render(r, files)
        failed = sum(not r.holds for r in results)
        out.print(f"{len(results) - failed} of {len(results)} assertion(s) hold")
    raise typer.Exit(EXIT_OK if all(r.holds for r in results) else EXIT_VERDICT)
