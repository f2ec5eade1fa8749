"""Writes one benchmark's section into docs/benchmarks.md, keeping the other sections."""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

RESULTS = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"


def progress(message: str) -> None:
    """A benchmark's progress line, on stderr (the section goes to stdout)."""
    print(f"[benchmark] {message}", file=sys.stderr, flush=True)


def write_section(path: Path, section: str) -> None:
    """Put `section` (starting with its `## ` heading) into `path`, replacing an older one."""
    heading = section.splitlines()[0]
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    lines = text.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if line.rstrip() == heading), None)
    if start is None:
        text = text.rstrip("\n") + "\n\n" + section
    else:
        end = next(
            (j for j in range(start + 1, len(lines)) if re.match(r"#{1,2} ", lines[j])),
            len(lines),
        )
        after = "".join(lines[end:])
        text = "".join(lines[:start]) + section + ("\n" + after if after else "")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def publish(
    name: str,
    argv: Sequence[str],
    render: Callable[[str], str],
    output: Path | None,
    quick: bool,
    no_write: bool,
) -> None:
    """Print the section `render` makes for the command line `benchmarks/NAME ARGV`, and
    write it into `output`: by default `RESULTS`, but nowhere for a `--quick` run (a smoke
    run's numbers are not results) or with `--no-write`."""
    section = render(f"benchmarks/{name}" + "".join(f" {a}" for a in argv))
    print(section)
    target = None if no_write else output or (None if quick else RESULTS)
    if target is not None:
        write_section(target, section)
        progress(f"wrote {target}")
