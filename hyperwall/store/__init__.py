"""The manager's datastore: versioned policy documents, tokens, host reports.

`open_store(url)` is the one way in:

    sqlite:///relative/path.db    sqlite:////var/lib/hyperwall/store.db    [?poll=SECONDS]
    etcd://HOST:PORT[/PREFIX]     [?timeout=SECONDS&max_txn_ops=N]

The interface and its values are in `store.base`; design notes in `docs/design/store.md`.
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from hyperwall.store.base import (
    Compacted,
    Conflict,
    DocChange,
    DocKey,
    Document,
    InvalidDocument,
    Resync,
    Revision,
    RevisionInfo,
    Snapshot,
    Store,
    StoreError,
    TokenRecord,
    TooLarge,
    Unavailable,
    UnknownRevision,
    WatchEvent,
    sha256_hex,
)

__all__ = [
    "Compacted",
    "Conflict",
    "DocChange",
    "DocKey",
    "Document",
    "InvalidDocument",
    "Resync",
    "Revision",
    "RevisionInfo",
    "Snapshot",
    "Store",
    "StoreError",
    "TokenRecord",
    "TooLarge",
    "Unavailable",
    "UnknownRevision",
    "WatchEvent",
    "open_store",
    "sha256_hex",
]


def _options(query: str, allowed: set[str]) -> dict[str, str]:
    options = {k: v[-1] for k, v in parse_qs(query, strict_parsing=bool(query)).items()}
    unknown = set(options) - allowed
    if unknown:
        raise ValueError(f"unknown store URL option(s): {', '.join(sorted(unknown))}")
    return options


async def open_store(url: str) -> Store:
    """Open the store a URL names; raises ValueError for a URL it cannot use."""
    if url.startswith("sqlite:///"):
        from hyperwall.store.sqlite import SqliteStore

        path, _, query = url.removeprefix("sqlite:///").partition("?")
        if not path:
            raise ValueError(f"{url}: no database path")
        options = _options(query, {"poll"})
        return await SqliteStore.open(path, poll_interval=float(options.get("poll", 0.5)))
    if url.startswith("etcd://"):
        from hyperwall.store.etcd import DEFAULT_PREFIX, EtcdStore

        parts = urlsplit(url)
        if not parts.hostname or parts.port is None:
            raise ValueError(f"{url}: expected etcd://HOST:PORT[/PREFIX]")
        options = _options(parts.query, {"timeout", "max_txn_ops"})
        return await EtcdStore.open(
            parts.hostname,
            parts.port,
            prefix=parts.path if parts.path not in ("", "/") else DEFAULT_PREFIX,
            timeout=float(options.get("timeout", 10.0)),
            max_txn_ops=int(options.get("max_txn_ops", 128)),
        )
    raise ValueError(f"{url}: unknown store URL (sqlite:///PATH or etcd://HOST:PORT)")
