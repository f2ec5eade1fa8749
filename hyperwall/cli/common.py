"""Shared CLI plumbing: loading documents with errors printed in full, exit codes, consoles."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from hyperwall.io.files import load_catalog
from hyperwall.policy.errors import DocumentsInvalid
from hyperwall.policy.model import Catalog

EXIT_OK = 0
EXIT_VERDICT = 1  # a verdict or state that is not the good one
EXIT_INPUT = 2  # bad input

out = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def print_json(value: object, compact: bool = False) -> None:
    text = json.dumps(value) if compact else json.dumps(value, indent=2)
    sys.stdout.write(text + "\n")


def fail(message: str, code: int = EXIT_INPUT) -> NoReturn:
    err.print(f"[red]error:[/red] {escape(message)}", markup=True)
    raise typer.Exit(code)


def load_or_exit(paths: Sequence[Path], as_json: bool = False) -> Catalog:
    """Load and validate documents; on any issue print every one and exit 2."""
    try:
        return load_catalog(paths)
    except DocumentsInvalid as exc:
        if as_json:
            print_json({"valid": False, "errors": [i.to_json() for i in exc.issues]})
        else:
            for issue in exc.issues:
                err.print(f"[red]error:[/red] {escape(str(issue))}", markup=True)
            err.print(f"{len(exc.issues)} error(s); nothing was applied")
        raise typer.Exit(EXIT_INPUT) from None
