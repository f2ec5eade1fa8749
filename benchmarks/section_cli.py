"""The command line shared by the benchmarks that rerun part of `benchmarks/dataplane` and
write one section of `docs/benchmarks.md`: `--quick` (printed only), `--tools` (the built
C tools), `--output`, `--no-write`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from benchmarks import dataplane as dp
from benchmarks.results_file import write_section


def section_main(
    prog: str,
    description: str | None,
    plans: tuple[Any, Any],
    run: Callable[[Any, dp.Tools, dp.Log], Any],
    render: Callable[[Any, str], str],
    argv: Sequence[str] | None = None,
) -> int:
    """Parse `argv`, run the full or the quick plan (`plans`), print the section and, for a
    full run, write it into the results file."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--quick", action="store_true", help="a short run, printed only")
    parser.add_argument("--tools", type=Path, required=True, help="directory of built C tools")
    parser.add_argument("--output", type=Path, default=dp.DEFAULT_OUTPUT)
    parser.add_argument("--no-write", action="store_true", help="only print the results")
    args = parser.parse_args(argv)
    plan = plans[1] if args.quick else plans[0]
    command = prog + (" --quick" if args.quick else "")
    results = run(plan, dp.tools_in(args.tools), lambda s: print(s, file=sys.stderr, flush=True))
    section = render(results, command)
    print(section)
    if not args.no_write and not args.quick:
        write_section(args.output, section)
    return 0
