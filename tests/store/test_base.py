"""Store values: document keys, token records."""

from __future__ import annotations

import pytest

from hyperwall.store import DocKey, InvalidDocument, TokenRecord, sha256_hex
from hyperwall.store.base import sorted_keys


def test_doc_key_of_a_raw_document() -> None:
    assert DocKey.of({"kind": "Policy", "metadata": {"name": "web", "tenant": "acme"}}) == DocKey(
        "Policy", "acme", "web"
    )
    assert DocKey.of({"kind": "Service", "metadata": {"name": "https"}}) == DocKey(
        "Service", None, "https"
    )


@pytest.mark.parametrize(
    "raw",
    [
        {},
        {"kind": "Policy"},
        {"kind": 3, "metadata": {"name": "x"}},
        {"kind": "Policy", "metadata": {"name": 7}},
        {"kind": "Policy", "metadata": {"name": "x", "tenant": ["acme"]}},
        {"kind": "Policy", "metadata": {"name": "x", "tenant": ""}},
        {"kind": "", "metadata": {"name": "x"}},
        {"kind": "Policy", "metadata": {"name": ""}},
        ["not", "a", "mapping"],
    ],
)
def test_doc_key_refuses_malformed_documents(raw: object) -> None:
    with pytest.raises(InvalidDocument):
        DocKey.of(raw)  # type: ignore[arg-type]


def test_doc_keys_sort_by_kind_then_provider_first_then_name() -> None:
    keys = [
        DocKey("Policy", "acme", "a"),
        DocKey("Group", "acme", "b"),
        DocKey("Policy", None, "z"),
    ]
    assert sorted_keys(keys) == (keys[1], keys[2], keys[0])
    assert str(keys[0]) == "Policy acme/a" and str(keys[2]) == "Policy z"


def test_token_records_hold_only_a_sha256_hash() -> None:
    digest = sha256_hex("s3cret")
    assert len(digest) == 64
    TokenRecord("t1", digest, "agent", None, "hv1", 0.0)
    with pytest.raises(ValueError, match="never the token"):
        TokenRecord("t1", "s3cret", "agent", None, "hv1", 0.0)
    with pytest.raises(ValueError):
        TokenRecord("", digest, "agent", None, "hv1", 0.0)
