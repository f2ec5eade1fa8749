"""The one place that talks to the kernel's nftables: libnftables' JSON API (python3-nftables).

Transactions are sent as JSON text (`wire.encode`), not through `json_cmd`, which would
`json.dumps` a whole object tree first.

A context binds to the network namespace current when it is created: create the client
inside the host's namespace (the agent runs there).
"""

from __future__ import annotations

import json
from typing import Any

from hyperwall.dataplane.nft.render import FAMILY, TABLE
from hyperwall.dataplane.nft.wire import encode


class NftError(RuntimeError):
    """nftables refused a transaction; nothing of it was applied."""


class NftClient:
    def __init__(self) -> None:
        try:
            import nftables  # Debian's python3-nftables, linked into .venv by bootstrap
        except ImportError as exc:  # pragma: no cover - depends on the machine
            raise NftError(
                "python3-nftables is not importable: run scripts/bootstrap (apt python3-nftables)"
            ) from exc
        self._nft = nftables.Nftables()
        self._nft.set_json_output(True)
        # Protocols as numbers: by name, nft reads /etc/protocols once per element listed
        # (measured: 1.6 s of system time to list 200,000 elements).
        self._nft.set_numeric_proto_output(True)

    def run(self, commands: list[dict[str, Any]]) -> None:
        """Send `commands` as one transaction (all or nothing)."""
        if not commands:
            return
        # JSON output on: libnftables then reads the input as JSON (nft 1.0.6)
        rc, _, err = self._nft.cmd(encode(commands))
        if rc != 0:
            raise NftError(err.strip() or f"nft returned {rc}")

    def list_table(self, family: str = FAMILY) -> dict[str, Any] | None:
        """Our table of `family` as JSON, or None if it does not exist."""
        rc, out, err = self._nft.cmd(f"list table {family} {TABLE}")
        if rc != 0:
            if "No such file" in err:
                return None
            raise NftError(err.strip())
        listing: dict[str, Any] = json.loads(out)
        return listing

    def command(self, text: str) -> str:
        """A plain nft command (tests, diagnostics); JSON output."""
        rc, out, err = self._nft.cmd(text)
        if rc != 0:
            raise NftError(err.strip())
        return str(out)
