"""The agent-to-agent state transfer on loopback: only the key's holders talk, both ways."""

from __future__ import annotations

import secrets
import socket
from collections.abc import Iterator

import pytest

from hyperwall.agent.handover import (
    HandoverError,
    HandoverReceiver,
    _json,
    _mac,
    _send_json,
    send_state,
)


@pytest.fixture
def receiver() -> Iterator[tuple[HandoverReceiver, list[tuple[str, str, bytes]]]]:
    got: list[tuple[str, str, bytes]] = []

    def apply(vm: str, phase: str, state: bytes) -> int:
        if state == b"explode":
            raise RuntimeError("kernel said no")
        got.append((vm, phase, state))
        return len(state)

    r = HandoverReceiver("127.0.0.1:0", apply)
    r.start()
    try:
        yield r, got
    finally:
        r.stop()


def test_state_reaches_the_destination_with_the_right_key(receiver) -> None:
    r, got = receiver
    key = secrets.token_hex(32)
    r.expect("acme/web-1", key)
    state = secrets.token_bytes(200_000)
    sent = send_state(r.address, "acme/web-1", key, "precopy", state)
    assert sent.applied == len(state) and sent.size == len(state)
    assert got == [("acme/web-1", "precopy", state)]


def test_a_wrong_key_is_refused_both_ways(receiver) -> None:
    r, got = receiver
    r.expect("acme/web-1", secrets.token_hex(32))
    with pytest.raises(HandoverError, match="did not prove"):
        send_state(r.address, "acme/web-1", secrets.token_hex(32), "precopy", b"x")
    assert got == []


def test_a_vm_not_announced_is_refused(receiver) -> None:
    r, got = receiver
    key = secrets.token_hex(32)
    r.expect("acme/web-1", key)
    with pytest.raises(HandoverError, match="no incoming migration of 'acme/db-1'"):
        send_state(r.address, "acme/db-1", key, "precopy", b"x")
    r.forget("acme/web-1")
    with pytest.raises(HandoverError, match="no incoming migration"):
        send_state(r.address, "acme/web-1", key, "precopy", b"x")
    assert got == []


def test_an_impostor_source_without_the_key_gets_nothing_applied(receiver) -> None:
    """A client that skips the proof (or fakes it) is refused before any state is read."""
    r, got = receiver
    r.expect("acme/web-1", secrets.token_hex(32))
    host, port = r.address.split(":")
    with socket.create_connection((host, int(port))) as sock:
        _send_json(sock, {"vm": "acme/web-1", "phase": "precopy", "nonce": "00"})
        _json(sock)
        _send_json(sock, {"proof": "0" * 64})
        _send_json(sock, {"size": 1, "mac": "0" * 64})
        sock.sendall(b"x")
        assert "did not prove" in _json(sock)["error"]
    assert got == []


def test_state_in_chunks_is_applied_chunk_by_chunk(receiver) -> None:
    r, got = receiver
    key = secrets.token_hex(32)
    r.expect("acme/web-1", key)
    chunks = [secrets.token_bytes(n) for n in (10, 70_000, 3)]
    sent = send_state(r.address, "acme/web-1", key, "precopy", iter(chunks))
    assert sent.applied == sent.size == 70_013
    assert got == [("acme/web-1", "precopy", c) for c in chunks]


def test_a_chunk_that_fails_its_proof_is_not_applied(receiver) -> None:
    r, got = receiver
    key = secrets.token_hex(32)
    r.expect("acme/web-1", key)
    host, port = r.address.split(":")
    with socket.create_connection((host, int(port))) as sock:
        _send_json(sock, {"vm": "acme/web-1", "phase": "precopy", "nonce": "00"})
        hello = _json(sock)
        _send_json(sock, {"proof": _mac(key, "src", "acme/web-1", "precopy", "00", hello["nonce"])})
        _send_json(sock, {"size": 1, "mac": "0" * 64})  # a chunk whose proof is wrong
        sock.sendall(b"x")
        assert "does not match its digest" in _json(sock)["error"]
    assert got == []


def test_a_failure_to_apply_is_reported_to_the_source(receiver) -> None:
    r, _ = receiver
    key = secrets.token_hex(32)
    r.expect("acme/web-1", key)
    with pytest.raises(HandoverError, match="kernel said no"):
        send_state(r.address, "acme/web-1", key, "switchover", b"explode")
    big = [b"explode", *(secrets.token_bytes(1 << 20) for _ in range(8))]  # after a refusal
    with pytest.raises(HandoverError, match="kernel said no"):
        send_state(r.address, "acme/web-1", key, "precopy", iter(big))


def test_an_unreachable_destination(receiver) -> None:
    r, _ = receiver
    address = r.address
    r.stop()
    with pytest.raises(HandoverError, match="destination agent"):
        send_state(address, "acme/web-1", secrets.token_hex(32), "precopy", b"x")
