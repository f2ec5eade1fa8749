"""Writes one benchmark's section into docs/benchmarks.md, keeping the other sections."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path


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
    log: Callable[[str], None],
) -> None:
    """Print the section `render` makes for the command line `benchmarks/NAME ARGV`, and
    write it into `output` (when not None)."""
    section = render(f"benchmarks/{name}" + "".join(f" {a}" for a in argv))
    print(section)
    if output is not None:
        write_section(output, section)
        log(f"wrote {output}")
