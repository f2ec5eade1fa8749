"""`hyperwall compile -f PATH --host H`: print the program a host enforces."""

from __future__ import annotations

from pathlib import Path

import typer

from hyperwall.cli.common import fail, load_or_exit, out, print_json
from hyperwall.compiler.fleet import FleetCompiler
from hyperwall.compiler.serialize import program_to_json, program_to_text


def compile_command(
    files: list[Path] = typer.Option(..., "-f", "--file", help="File or folder (repeatable)"),
    host: str = typer.Option(..., "--host", help="Hypervisor host name"),
    as_json: bool = typer.Option(False, "--json", help="Print JSON"),
) -> None:
    """Compile the documents for one host and print its program."""
    catalog = load_or_exit(files, as_json)
    compiler = FleetCompiler(catalog.config, catalog.workloads.values())
    if host not in compiler.hosts():
        known = ", ".join(compiler.hosts()) or "none"
        fail(f"no workload runs on host {host!r}: known hosts are {known}")
    program = compiler.host_program(host)
    if as_json:
        print_json(program_to_json(program))
    else:
        out.print(program_to_text(program), markup=False)
