"""Shared CLI plumbing: loading documents with errors printed in full, exit codes, consoles."""

from __future__ import annotations

import json
import re
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


# C0/C1 controls and DEL (terminal escapes), bidi and direction marks (text that reads
# differently than it is), lone surrogates (not printable at all)
_INVISIBLE = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")


def shown(value: object) -> str:
    """`value` as text safe to print with rich: markup escaped (`[/x]` prints as is) and
    every control character visible as its escape (`\x1b`), never sent to the terminal.
    Everything a command prints that came from a server or a file goes through this."""
    text = _INVISIBLE.sub(lambda m: repr(m.group())[1:-1], str(value))
    return escape(text)


def print_json(value: object, compact: bool = False) -> None:
    text = json.dumps(value) if compact else json.dumps(value, indent=2)
    sys.stdout.write(text + "\n")


def fail(message: str, code: int = EXIT_INPUT) -> NoReturn:
    err.print(f"[red]error:[/red] {shown(message)}", markup=True)
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
                err.print(f"[red]error:[/red] {shown(issue)}", markup=True)
            err.print(f"{len(exc.issues)} error(s); nothing was applied")
        raise typer.Exit(EXIT_INPUT) from None
