"""Document-set helpers for the manager: validate a whole set, key and filter documents."""

from __future__ import annotations

import re
from collections.abc import Mapping
from collections.abc import Set as AbstractSet
from typing import Any

from hyperwall.manager.auth import Principal
from hyperwall.policy.catalog import build_catalog
from hyperwall.policy.documents import KINDS
from hyperwall.policy.errors import DocumentsInvalid, Issue, Source
from hyperwall.policy.model import Catalog
from hyperwall.policy.selector import SelectorSyntaxError, parse_selector
from hyperwall.store import DocKey, Document, InvalidDocument


class BadRequest(Exception):
    """Input the manager refuses with 422 and these issues (JSON-ready)."""

    def __init__(self, errors: list[dict[str, object]]) -> None:
        super().__init__(f"{len(errors)} error(s)")
        self.errors = errors


def request_error(message: str, path: str = "", expected: str = "") -> BadRequest:
    return BadRequest(
        [{"file": "request", "document": 0, "path": path, "message": message, "expected": expected}]
    )


def normalize_kind(kind: str) -> str:
    """`group`, `groups`, `Group` -> `Group`; BadRequest for an unknown kind."""
    lowered = kind.lower().removesuffix("s") if kind.lower() != "policies" else "policy"
    for known in KINDS:
        if known.lower() == lowered:
            return known
    raise request_error(f"unknown kind {kind!r}", "kind", "one of " + ", ".join(KINDS))


def keys_of(documents: list[Any]) -> list[DocKey]:
    """The key of every submitted document; BadRequest naming each malformed one."""
    keys: list[DocKey] = []
    errors: list[dict[str, object]] = []
    for i, doc in enumerate(documents):
        try:
            keys.append(DocKey.of(doc))
        except InvalidDocument as exc:
            errors.append(Issue(Source("request", i + 1), "", str(exc)).to_json())
    if errors:
        raise BadRequest(errors)
    return keys


def source_of(key: DocKey) -> Source:
    return Source(f"stored {key}", 0)


def validate(
    documents: Mapping[DocKey, Document],
    submitted: Mapping[DocKey, int] | None = None,
    absent_workloads: bool | AbstractSet[str] = False,
) -> Catalog:
    """Build the catalog of a whole set, or BadRequest with every issue. `submitted` maps
    the keys given in the request to their 1-based position there, for error sources;
    `absent_workloads` as `build_catalog`'s."""
    numbered = submitted or {}
    pairs = [
        (doc, Source("request", numbered[key]) if key in numbered else source_of(key))
        for key, doc in documents.items()
    ]
    try:
        return build_catalog(pairs, absent_workloads)
    except DocumentsInvalid as exc:
        raise BadRequest([i.to_json() for i in exc.issues]) from None


def matches(
    key: DocKey, doc: Document, kind: str | None, tenant: str | None, selector: str | None
) -> bool:
    if kind is not None and key.kind != kind:
        return False
    if tenant is not None and key.tenant != (None if tenant in ("", "-") else tenant):
        return False
    if selector is None:
        return True
    try:
        parsed = parse_selector(selector)
    except SelectorSyntaxError as exc:
        raise request_error(f"bad selector: {exc}", "selector") from None
    labels = doc.get("metadata", {}).get("labels") or {}
    return isinstance(labels, dict) and parsed.matches({str(k): str(v) for k, v in labels.items()})


_STORED = re.compile(r"stored (\w+) (?:([^/ ]+)/)?(\S+)$")
_OWNER = re.compile(r"already belongs to workload '(?:([^'/]+)/)?[^']*' \([^)]*\)")


def redact(errors: list[dict[str, object]], who: Principal) -> list[dict[str, object]]:
    """The issues as `who` may see them: an issue of a stored document of a tenant it
    cannot read, or naming another tenant's workload, names neither. (That an address is
    taken stays visible: addresses are unique in the fleet.)"""
    out: list[dict[str, object]] = []
    for issue in errors:
        file, message = str(issue.get("file", "")), str(issue.get("message", ""))
        stored = _STORED.match(file)
        if stored and not who.can_see(stored.group(2)):
            what = "an address of this request" if "already belongs" in message else "this change"
            issue = {
                **issue,
                "file": "a stored document of another tenant",
                "path": "",
                "message": f"{what} conflicts with a document of another tenant",
            }
        else:
            owner = _OWNER.search(message)
            if owner and not who.can_see(owner.group(1)):
                message = _OWNER.sub("already belongs to a workload of another tenant", message)
                issue = {**issue, "message": message}
        out.append(issue)
    return out


def key_json(key: DocKey) -> dict[str, str | None]:
    return {"kind": key.kind, "tenant": key.tenant, "name": key.name}
