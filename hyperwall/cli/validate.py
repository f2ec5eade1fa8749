"""`hyperwall validate -f PATH`: check documents, print every error (exit 0 or 2)."""

from __future__ import annotations

from pathlib import Path

import typer

from hyperwall.cli.common import load_or_exit, out, print_json


def validate(
    files: list[Path] = typer.Option(..., "-f", "--file", help="File or folder (repeatable)"),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON object"),
) -> None:
    """Validate policy documents; exit 0 if valid, 2 with every error if not."""
    catalog = load_or_exit(files, as_json)
    cfg = catalog.config
    counts = {
        "tenants": len(cfg.tenants),
        "workloads": len(catalog.workloads),
        "groups": len(cfg.groups),
        "services": len(cfg.services),
        "policies": len(cfg.policies),
        "rules": sum(len(p.rules) for p in cfg.policies.values()),
    }
    if as_json:
        print_json({"valid": True, "counts": counts})
    else:
        out.print("valid: " + ", ".join(f"{v} {k}" for k, v in counts.items()))
