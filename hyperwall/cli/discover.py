"""`hyperwall discover --connect URI [--host H] [--json]`: a libvirt host's managed domains
as Workload documents (each followed by its embedded Policy), in domain-name order.

Exit 0; 1 when some domains were left out for invalid metadata (each named on stderr); 2 for a
bad URI or host name; 4 when the connection cannot be opened."""

from __future__ import annotations

import sys

import typer
import yaml

from hyperwall.cli.common import EXIT_INPUT, EXIT_OK, EXIT_VERDICT, err, fail, print_json
from hyperwall.hypervisor.domain_xml import Invalid, Managed
from hyperwall.hypervisor.libvirt_conn import BadURI, Unreachable, discover, host_name
from hyperwall.hypervisor.libvirt_conn import open_connection as open_libvirt
from hyperwall.policy.documents import check_name

EXIT_UNREACHABLE = 4


def discover_command(
    connect: str = typer.Option(..., "--connect", "-c", help="libvirt URI, e.g. qemu:///system"),
    host: str | None = typer.Option(
        None, "--host", help="The host name to put in spec.host (default: the connection's)"
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON array of documents"),
) -> None:
    """List the managed domains of a libvirt connection as Workload (and Policy) documents."""
    try:
        conn = open_libvirt(connect)
    except BadURI as exc:
        fail(str(exc), EXIT_INPUT)
    except Unreachable as exc:
        fail(str(exc), EXIT_UNREACHABLE)
    try:
        name = host if host is not None else host_name(conn)
        try:
            check_name(name)
        except ValueError as exc:
            fail(f"bad host name {name!r} ({exc}); give one with --host", EXIT_INPUT)
        parsed = discover(conn, name)
    finally:
        conn.close()
    documents: list[object] = []
    left_out = 0
    for domain in parsed:
        if isinstance(domain, Managed):
            documents.extend(domain.documents())
        elif isinstance(domain, Invalid):
            left_out += 1
            for problem in domain.problems:
                err.print(f"error: {problem}", markup=False)
    if left_out:
        err.print(f"{left_out} domain(s) left out for invalid metadata", markup=False)
    if as_json:
        print_json(documents)
    elif documents:
        sys.stdout.write(yaml.safe_dump_all(documents, sort_keys=False))
    raise typer.Exit(EXIT_VERDICT if left_out else EXIT_OK)
