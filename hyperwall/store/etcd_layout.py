"""Where the etcd store keeps what, and how its values are encoded. Pure: no I/O.

Under one prefix P (default `/hyperwall/`):

    P/rev                         current hyperwall revision, decimal; every commit compares it
    P/floor                       oldest kept revision (compaction), decimal
    P/doc/KIND/TENANT/NAME        current document, canonical JSON (TENANT empty = provider)
    P/log/NNNNNNNNNNNNNNNNNNNN    revision record: header and before/after of each change
    P/ledger/NNNNNNNNNNNNNNNNNNNN audit-ledger record of revision N: {"body", "hash"}; never
                                  compacted (`store.ledger`)
    P/token/ID                    token record (JSON), P/tokenhash/SHA256 the same record
    P/status/HOST, P/inventory/HOST   latest report of a host (JSON)

Path segments are percent-encoded, so no name can escape its segment. Revision records are
ordinary keys, not etcd history: etcd's own compaction never removes them, only
`EtcdStore.compact` does. Counterpart: `store.etcd`.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote, unquote

from hyperwall.store.base import DocChange, DocKey, LedgerEntry, Revision, TokenRecord, summarize
from hyperwall.store.changes import BodyChange, canonical

LOG_DIGITS = 20


def _seg(text: str) -> str:
    return quote(text, safe="")


class Layout:
    def __init__(self, prefix: str) -> None:
        if not prefix.startswith("/"):
            prefix = "/" + prefix
        self.prefix = prefix if prefix.endswith("/") else prefix + "/"
        self.rev = self._b("rev")
        self.floor = self._b("floor")
        self.docs = self._b("doc/")
        self.log_prefix = self._b("log/")
        self.ledger_prefix = self._b("ledger/")
        self.tokens = self._b("token/")
        self.statuses = self._b("status/")
        self.inventories = self._b("inventory/")

    def _b(self, suffix: str) -> bytes:
        return (self.prefix + suffix).encode()

    def doc(self, key: DocKey) -> bytes:
        return self.docs + f"{_seg(key.kind)}/{_seg(key.tenant or '')}/{_seg(key.name)}".encode()

    def doc_key(self, raw: bytes) -> DocKey:
        kind, tenant, name = raw[len(self.docs) :].decode().split("/")
        return DocKey(unquote(kind), unquote(tenant) or None, unquote(name))

    def log(self, number: int) -> bytes:
        return self.log_prefix + str(number).zfill(LOG_DIGITS).encode()

    def ledger(self, number: int) -> bytes:
        return self.ledger_prefix + str(number).zfill(LOG_DIGITS).encode()

    def token(self, token_id: str) -> bytes:
        return self.tokens + _seg(token_id).encode()

    def token_hash(self, sha256_hash: str) -> bytes:
        return self._b("tokenhash/" + _seg(sha256_hash))

    def status(self, host: str) -> bytes:
        return self.statuses + _seg(host).encode()

    def inventory(self, host: str) -> bytes:
        return self.inventories + _seg(host).encode()

    def host_of(self, raw: bytes, prefix: bytes) -> str:
        return unquote(raw[len(prefix) :].decode())


def prefix_end(prefix: bytes) -> bytes:
    """The first key after every key that starts with `prefix` (etcd range end)."""
    out = bytearray(prefix)
    while out and out[-1] == 0xFF:
        out.pop()
    out[-1] += 1
    return bytes(out)


def encode_record(
    number: int, author: str, time: float, message: str, changes: tuple[BodyChange, ...]
) -> bytes:
    record = {
        "number": number,
        "author": author,
        "time": time,
        "message": message,
        "changes": [
            {
                "key": [c.key.kind, c.key.tenant, c.key.name],
                "before": None if c.before is None else json.loads(c.before),
                "after": None if c.after is None else json.loads(c.after),
            }
            for c in changes
        ],
    }
    return canonical(record).encode()


def decode_record(raw: bytes) -> Revision:
    record = json.loads(raw)
    changes = tuple(
        DocChange(DocKey(*c["key"]), c["before"], c["after"]) for c in record["changes"]
    )
    info = summarize(record["number"], record["author"], record["time"], record["message"], changes)
    return Revision(info, changes)


def encode_ledger(made: LedgerEntry) -> bytes:
    return canonical({"body": made.body, "hash": made.hash}).encode()


def decode_ledger(number: int, raw: bytes) -> LedgerEntry:
    """A stored ledger value; one edited into something else still comes back, as an
    entry whose hash cannot match (verification names it)."""
    try:
        value = json.loads(raw)
        return LedgerEntry(number, str(value["body"]), str(value["hash"]))
    except (ValueError, KeyError, TypeError):
        return LedgerEntry(number, raw.decode(errors="replace"), "")


def encode_token(token: TokenRecord) -> bytes:
    return canonical(
        {
            "id": token.id,
            "sha256_hash": token.sha256_hash,
            "role": token.role,
            "tenant": token.tenant,
            "host": token.host,
            "created": token.created,
            "expires": token.expires,
        }
    ).encode()


def decode_token(raw: bytes) -> TokenRecord:
    value: dict[str, Any] = json.loads(raw)
    return TokenRecord(**value)
