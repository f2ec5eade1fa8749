"""`hyperwall demo`: validate the examples and show what they decide, as a table of traces.

Reads `probes.tsv` beside the documents: one probe a line, `from to service expected`.
Until the lab exists this is the project's main command; exit 1 if a trace disagrees.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from hyperwall.analysis.trace import TraceInputError, trace
from hyperwall.cli.common import EXIT_OK, EXIT_VERDICT, fail, load_or_exit, out


def read_probes(path: Path) -> list[tuple[str, str, str, str, str]]:
    probes = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        fields = line.split("\t")
        if len(fields) < 4:
            fail(f"{path}:{number}: expected 'from<TAB>to<TAB>service<TAB>expected[<TAB>why]'")
        why = fields[4] if len(fields) > 4 else ""
        probes.append((fields[0], fields[1], fields[2], fields[3], why))
    return probes


def demo(
    files: list[Path] = typer.Option([Path("examples")], "-f", "--file", help="Documents"),
    probes: Path | None = typer.Option(
        None, "--probes", help="Probe table (default: probes.tsv beside the documents)"
    ),
) -> None:
    """Validate the examples and print a table of traces with the rules that decide."""
    catalog = load_or_exit(files)
    cfg = catalog.config
    out.print(
        f"[green]valid[/green]: {len(cfg.tenants)} tenants, {len(catalog.workloads)} workloads, "
        f"{len(cfg.groups)} groups, {len(cfg.services)} services, {len(cfg.policies)} policies",
        markup=True,
    )
    table_path = probes or (files[0] if files[0].is_dir() else files[0].parent) / "probes.tsv"
    if not table_path.exists():
        fail(f"no probe table at {table_path}")
    table = Table(title="traces (reference evaluator)")
    for column in ("from", "to", "service", "verdict", "egress rule", "ingress rule", "expected"):
        table.add_column(column)
    wrong = 0
    for src, dst, service, expected, why in read_probes(table_path):
        try:
            result = trace(catalog, src, dst, service)
        except TraceInputError as exc:
            fail(f"{table_path}: {src} -> {dst} {service}: {exc}")
        ok = result.verdict == expected
        wrong += not ok
        colour = {"allow": "green", "drop": "red", "reject": "yellow"}[result.verdict]
        table.add_row(
            src,
            dst,
            service,
            f"[{colour}]{result.verdict}[/{colour}]",
            result.egress.rule if result.egress else "-",
            result.ingress.rule if result.ingress else "-",
            ("ok " if ok else "[red]MISMATCH[/red] ") + why,
        )
    out.print(table)
    raise typer.Exit(EXIT_OK if wrong == 0 else EXIT_VERDICT)
