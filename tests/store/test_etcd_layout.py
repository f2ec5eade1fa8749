"""etcd key layout and record encoding (pure)."""

from __future__ import annotations

from hyperwall.store import DocChange, DocKey, TokenRecord, sha256_hex
from hyperwall.store.changes import BodyChange, canonical
from hyperwall.store.etcd_layout import (
    Layout,
    decode_record,
    decode_token,
    encode_record,
    encode_token,
    prefix_end,
)


def test_document_keys_round_trip_whatever_the_names() -> None:
    layout = Layout("hyperwall")
    assert layout.prefix == "/hyperwall/"
    for key in (
        DocKey("Policy", None, "web"),
        DocKey("Policy", "acme", "web"),
        DocKey("Odd/Kind", "ten/ant", "na me%2F"),
    ):
        raw = layout.doc(key)
        assert raw.startswith(layout.docs) and raw.count(b"/") == layout.docs.count(b"/") + 2
        assert layout.doc_key(raw) == key
    assert layout.doc(DocKey("Policy", None, "web")) == b"/hyperwall/doc/Policy//web"


def test_log_keys_sort_like_their_numbers() -> None:
    layout = Layout("/p/")
    numbers = [1, 2, 9, 10, 11, 99, 100, 12345678901]
    assert sorted(numbers, key=layout.log) == numbers
    assert prefix_end(b"/p/log/") == b"/p/log0"


def test_records_and_tokens_round_trip() -> None:
    a = {"kind": "Group", "metadata": {"name": "a"}, "spec": {}}
    key = DocKey.of(a)
    raw = encode_record(7, "alice", 1.5, "msg", (BodyChange(key, None, canonical(a)),))
    record = decode_record(raw)
    assert record.number == 7 and record.info.added == (key,)
    assert record.changes == (DocChange(key, None, a),)
    token = TokenRecord("t", sha256_hex("x"), "admin", "acme", None, 3.25)
    assert decode_token(encode_token(token)) == token
