"""Findings 1 and 2 of issue 12: what a request may cost. Oversized bodies are refused
(413) before they are read, the token is checked before the body, slow headers and
bodies are cut off, every string is bounded (selectors at 1,024 characters), and the
manager answers other requests while it validates a large one."""

from __future__ import annotations

import threading
from typing import Any

import httpx

from hyperwall.manager_api import MAX_MESSAGE
from hyperwall.policy.selector import MAX_LENGTH
from tests.security.conftest import LIMITS, Fleet, read_response, rss, workload

MB = 1024 * 1024


def _head(path: str, length: int | None, token: str | None, chunked: bool = False) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: manager", "Content-Type: application/json"]
    if token:
        lines.append(f"Authorization: Bearer {token}")
    if chunked:
        lines.append("Transfer-Encoding: chunked")
    elif length is not None:
        lines.append(f"Content-Length: {length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def test_a_48_mb_body_is_refused_unread_with_or_without_a_token(fleet: Fleet) -> None:
    before = rss()
    for token in (None, fleet.tokens["auditor"]):
        with fleet.connect() as sock:
            sock.sendall(_head("/v1/diff", 48 * MB, token) + b'{"documents": [')
            status, answer = read_response(sock)
        assert status == 413 and b"request body over" in answer
    assert rss() - before < 16 * MB


def test_a_chunked_body_is_counted_and_refused_at_the_limit(fleet: Fleet) -> None:
    before = rss()
    chunk = b"x" * MB
    with fleet.connect() as sock:
        sock.sendall(_head("/v1/diff", None, fleet.tokens["auditor"], chunked=True))
        try:
            for _ in range(48):
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        except OSError:
            pass  # the server answered and closed: it stopped reading
        status, _ = read_response(sock)
    assert status == 413
    assert rss() - before < LIMITS.max_body * 4 + 16 * MB


def test_the_token_is_checked_before_the_body_is_read(fleet: Fleet) -> None:
    with fleet.connect() as sock:  # a body is announced and never sent
        sock.sendall(_head("/v1/apply", MB, "hw_not-a-token"))
        status, answer = read_response(sock)
    assert status == 401 and b"www-authenticate: Bearer" in answer.lower().replace(
        b"bearer", b"Bearer"
    )


def test_slow_bodies_and_slow_headers_are_cut_off(fleet: Fleet) -> None:
    bodies = [fleet.connect() for _ in range(40)]
    heads = [fleet.connect() for _ in range(40)]
    try:
        for sock in bodies:
            sock.sendall(_head("/v1/diff", 1000, fleet.tokens["auditor"]) + b'{"docu')
        for sock in heads:
            sock.sendall(b"GET /v1/status HTTP/1.1\r\nHost: x\r\n")  # never ends
        health = httpx.get(fleet.url + "/v1/healthz", timeout=30)
        assert health.status_code == 200  # answered while they hang
        for sock in bodies:
            status, answer = read_response(sock)
            assert status == 408 and b"not received within" in answer
        for sock in heads:
            assert sock.recv(100) == b""  # closed without an answer
    finally:
        for sock in bodies + heads:
            sock.close()


def test_a_megabyte_selector_is_refused_naming_the_field_and_nothing_grows(
    fleet: Fleet,
) -> None:
    before = rss()
    huge = "a == 'b' || " * (MB // 12)
    doc = {
        "apiVersion": "hyperwall.io/v1",
        "kind": "Group",
        "metadata": {"name": "big", "tenant": "acme"},
        "spec": {"selector": huge},
    }
    r = fleet.call("auditor", "POST", "/v1/diff", {"documents": [doc]})
    assert r.status_code == 422
    [error] = r.json()["errors"]
    assert (error["document"], error["path"]) == (1, "spec.selector")
    assert "too long" in error["message"] and len(r.text) < 2000
    assert rss() - before < 64 * MB


def test_selectors_are_bounded_in_documents_and_queries(fleet: Fleet) -> None:
    over = "a in {" + ",".join(["'x'"] * 400) + "}"
    assert MAX_LENGTH < len(over) < 4096
    doc = {
        "apiVersion": "hyperwall.io/v1",
        "kind": "Group",
        "metadata": {"name": "long", "tenant": "acme"},
        "spec": {"selector": over},
    }
    revision = fleet.revision()
    r = fleet.call("acme", "POST", "/v1/apply", {"documents": [doc]})
    assert r.status_code == 422
    assert r.json()["errors"][0]["path"] == "spec.selector"
    assert f"at most {MAX_LENGTH} characters" in r.json()["errors"][0]["message"]
    r = fleet.call("auditor", "GET", "/v1/documents", selector=over)
    assert r.status_code == 422 and r.json()["errors"][0]["path"] == "query.selector"
    fits = "a in {" + ",".join(["'x'"] * 200) + "}"
    assert len(fits) <= MAX_LENGTH
    ok = fleet.call(
        "auditor", "POST", "/v1/diff", {"documents": [{**doc, "spec": {"selector": fits}}]}
    )
    assert ok.status_code == 200, ok.text
    assert fleet.revision() == revision


def test_messages_and_documents_are_bounded(fleet: Fleet) -> None:
    revision = fleet.revision()
    r = fleet.call(
        "acme", "POST", "/v1/apply", {"documents": [], "message": "m" * (MAX_MESSAGE + 1)}
    )
    assert r.status_code == 422 and r.json()["errors"][0]["path"] == "body.message"
    r = fleet.call(
        "provider", "DELETE", "/v1/documents/Group/web", tenant="acme", message="m" * 5000
    )
    assert r.status_code == 422
    assert fleet.revision() == revision


def test_health_and_reads_answer_while_a_large_set_is_validated(fleet: Fleet) -> None:
    docs = [
        workload(
            f"bulk-{i}",
            "acme",
            f"10.77.{i // 250}.{i % 250 + 1}",
            f"52:54:01:{i // 65536:02x}:{i // 256 % 256:02x}:{i % 256:02x}",
        )
        for i in range(6000)
    ]
    answers: list[int] = []
    done = threading.Event()
    result: dict[str, Any] = {}

    def diff() -> None:
        result["r"] = fleet.call("auditor", "POST", "/v1/diff", {"documents": docs})
        done.set()

    worker = threading.Thread(target=diff)
    worker.start()
    while not done.is_set():
        r = httpx.get(fleet.url + "/v1/healthz", timeout=30)
        if not done.is_set():
            answers.append(r.status_code)
    worker.join()
    assert result["r"].status_code == 200, result["r"].text[:500]
    assert len(result["r"].json()["changes"]) == 6000
    assert answers and set(answers) == {200}


def _raw(fleet: Fleet, body: bytes) -> httpx.Response:
    headers = {
        "Authorization": f"Bearer {fleet.tokens['provider']}",
        "Content-Type": "application/json",
    }
    return httpx.post(fleet.url + "/v1/diff", content=body, headers=headers, timeout=30)


def test_unparseable_bodies_get_the_documented_422(fleet: Fleet) -> None:
    cases = {
        "integer": b'{"documents": [], "x": ' + b"9" * 5000 + b"}",
        "nesting": b'{"documents": [' + b"[" * 1000 + b"]" * 1000 + b"]}",
        "utf-8": b'{"documents": [], "message": "\xff\xfe"}',
        "nan": b'{"documents": [{"kind": NaN}]}',
        "syntax": b'{"documents": [',
    }
    for what, body in cases.items():
        r = _raw(fleet, body)
        assert r.status_code == 422, (what, r.status_code, r.text)
        assert set(r.json()) == {"errors"}, what
        assert {"file", "document", "path", "message", "expected"} <= set(r.json()["errors"][0])


def test_no_coercion_of_types(fleet: Fleet) -> None:
    revision = fleet.revision()
    r = fleet.call("provider", "POST", "/v1/apply", {"documents": [], "dryRun": 0})
    assert r.status_code == 422 and r.json()["errors"][0]["path"] == "body.dryRun"
    status = {"revision": 1, "converged": True, "endpoints": False}
    r = fleet.call("agent", "PUT", "/v1/agent/hv1/status", status)
    assert r.status_code == 422 and r.json()["errors"][0]["path"] == "body.endpoints"
    assert fleet.revision() == revision


def test_405_names_the_allowed_methods(fleet: Fleet) -> None:
    r = fleet.call("provider", "PUT", "/v1/history")
    assert r.status_code == 405 and "GET" in r.headers["allow"]
    r = fleet.call("provider", "PATCH", "/v1/tokens")
    assert r.status_code == 405 and {"GET", "POST"} <= set(
        r.headers["allow"].replace(" ", "").split(",")
    )
