"""`hyperwall diff -f FILES`: what applying the documents would change on the manager."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hyperwall.cli.common import out, print_json, shown
from hyperwall.cli.remote_common import (
    FilesOpt,
    JsonOpt,
    ServerOpt,
    TokenFileOpt,
    connected,
    print_broken,
    read_files,
    summary,
)


def _name(change: dict[str, Any]) -> str:
    tenant = f"{change['tenant']}/" if change.get("tenant") else ""
    return f"{change['kind']} {tenant}{change['name']}"


def diff(
    files: list[Path] = FilesOpt,
    server: str = ServerOpt,
    token_file: Path | None = TokenFileOpt,
    as_json: bool = JsonOpt,
) -> None:
    """What applying the documents would change, and which hosts' programs."""
    docs = read_files(files, as_json)
    with connected(server, token_file, as_json) as client:
        result = client.diff(docs)
    if as_json:
        print_json(result.model_dump(mode="json"))
        return
    for change in result.changes:
        sign = {"add": "+", "change": "~", "remove": "-"}[change["action"]]
        out.print(f"{sign} {shown(_name(change))}")
    out.print(shown(summary(result)))
    checked, broken = result.assertions.get("checked", []), result.assertions.get("broken", [])
    if broken:
        out.print(f"this change would break {len(broken)} of {len(checked)} assertions it touches:")
        print_broken(broken, out)
    elif checked:
        out.print(f"the {len(checked)} assertions this change touches still hold")
