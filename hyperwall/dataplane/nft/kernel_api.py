"""What the nftables backend needs of the kernel (`Kernel`), and how the kernel refuses
(`NftError`). Pure: `nft.kernel.NftKernel` is the implementation that talks to the kernel;
tests may put a fake in its place.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from hyperwall.dataplane.nft.table import FAMILY


class NftError(RuntimeError):
    """nftables refused a transaction; nothing of it was applied."""


class Kernel(Protocol):
    def run(self, commands: list[dict[str, Any]]) -> None:
        """Send `commands` as one transaction (all or nothing)."""

    def list_table(self, family: str = FAMILY) -> dict[str, Any] | None:
        """Our table of `family` as JSON, or None if it does not exist."""

    def add_elements(self, sets: Sequence[tuple[str, Sequence[bytes]]]) -> None:
        """Add kernel keys (`netlink.exact_keys`) to existing sets of our inet table, as one
        transaction (all or nothing)."""
