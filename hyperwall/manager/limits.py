"""The manager's request edge: what a request may cost before anyone looks at it.

`RequestGuard` (ASGI middleware) runs before routing, for every `/v1/` path but
`/v1/healthz`, in this order, so that an anonymous or oversized request costs almost
nothing:

1. a declared `Content-Length` over `Limits.max_body` is refused (413) unread;
2. the bearer token is checked (401, or the principal is kept for the routes) before one
   byte of the body is read;
3. the body is read within `Limits.body_timeout` seconds (else 408) and at most
   `Limits.max_body` bytes (else 413: a chunked body is counted as it arrives);
4. a JSON body is decoded strictly (`policy.values`: no NaN, no lone surrogates, no string
   over `MAX_STRING`, no huge integers or deep nesting), off the event loop when large;
   a problem is a 422 naming the field, in the shape of every other 422.

`guarded_h11` is uvicorn's h11 protocol with a deadline for the request head: a
connection that has not sent its complete headers within `Limits.header_timeout` seconds
is closed (uvicorn itself has none; slow-header connections would stay open forever).
Counterparts: `errors.py` (the same error shapes), docs/design/manager.md "Limits and
abuse" (every value and why).
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from typing import Any

import h11
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.config import Config
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.server import ServerState

from hyperwall.manager.auth import Refused, authenticate
from hyperwall.policy.values import Problem, strict_loads, value_problems
from hyperwall.store.base import Unavailable

log = logging.getLogger("hyperwall.manager.auth")

MAX_BODY = 16 * 1024 * 1024  # bytes; the 10,000-workload benchmark fleet is 5.2 MB
HEADER_TIMEOUT = 10.0  # seconds to send the request line and headers
BODY_TIMEOUT = 60.0  # seconds to send the whole body (16 MB at ~280 kB/s)
THREAD_DECODE = 64 * 1024  # bodies larger than this are decoded on a worker thread
PRINCIPAL = "hyperwall.principal"  # where the guard leaves the caller, in scope["state"]


@dataclass(frozen=True, slots=True)
class Limits:
    """The request limits of one manager (tests pass small timeouts)."""

    max_body: int = MAX_BODY
    header_timeout: float = HEADER_TIMEOUT
    body_timeout: float = BODY_TIMEOUT


def is_guarded(scope: Scope) -> bool:
    path: str = scope.get("path", "")
    return scope["type"] == "http" and path.startswith("/v1/") and path != "/v1/healthz"


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


async def _answer(
    send: Send, status: int, body: dict[str, Any], headers: tuple[tuple[bytes, bytes], ...] = ()
) -> None:
    content = json.dumps(body).encode()
    head = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(content))]
    if status in (408, 413):  # the rest of the body is not read: the connection cannot go on
        head.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": [*head, *headers]})
    await send({"type": "http.response.body", "body": content})


def issues_json(problems: list[Problem]) -> list[dict[str, object]]:
    """The 422 `errors` of a request body's problems; `documents[i]...` names the document
    (1-based, as policy issues do) and the path inside it."""
    out: list[dict[str, object]] = []
    for p in problems:
        document, path = 0, p.path
        head, _, rest = p.path.partition("].")
        if head.startswith("documents[") and head[10:].isdigit():
            document, path = int(head[10:]) + 1, rest
        out.append(
            {
                "file": "request",
                "document": document,
                "path": path,
                "message": p.message,
                "expected": p.expected,
            }
        )
    return out


def _decode(body: bytes) -> tuple[Any, list[Problem]]:
    try:
        value = strict_loads(body)
    except ValueError as exc:
        return None, [Problem("", str(exc), "a JSON document")]
    return value, value_problems(value)


class RequestGuard:
    """ASGI middleware: size, token, read deadline and strict decoding of every request."""

    def __init__(self, app: ASGIApp, limits: Limits) -> None:
        self.app = app
        self.limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not is_guarded(scope):
            await self.app(scope, receive, send)
            return
        limit = self.limits.max_body
        declared = _header(scope, b"content-length")
        if declared is not None and declared.strip().isdigit() and int(declared) > limit:
            await _answer(send, 413, {"error": f"request body over {limit} bytes"})
            return
        try:
            manager = scope["app"].state.manager
            who = await authenticate(manager.store, _header(scope, b"authorization"))
        except Refused as exc:
            client = scope.get("client") or ("?",)
            method, path = scope.get("method"), scope.get("path")
            log.warning("refused %s %s from %s: %s", method, path, client[0], exc)
            headers = ((b"www-authenticate", b"Bearer"),) if exc.status == 401 else ()
            await _answer(send, exc.status, {"error": exc.reason}, headers)
            return
        except Unavailable as exc:  # the token cannot be checked: the store is away (exit 4)
            await _answer(send, 503, {"error": f"store unavailable: {exc}"})
            return
        scope.setdefault("state", {})[PRINCIPAL] = who
        try:
            body = await asyncio.wait_for(self._read(receive, limit), self.limits.body_timeout)
        except TimeoutError:
            timeout = self.limits.body_timeout
            await _answer(send, 408, {"error": f"request body not received within {timeout} s"})
            return
        if body is None:
            await _answer(send, 413, {"error": f"request body over {limit} bytes"})
            return
        if body and "json" in (_header(scope, b"content-type") or "application/json"):
            small = len(body) <= THREAD_DECODE
            _, problems = _decode(body) if small else await asyncio.to_thread(_decode, body)
            if problems:
                await _answer(send, 422, {"errors": issues_json(problems)})
                return
        await self.app(scope, _replay(body, receive), send)

    @staticmethod
    async def _read(receive: Receive, limit: int) -> bytes | None:
        """The whole body; None as soon as it is over `limit` bytes."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return b"".join(chunks)  # disconnected: the app will see it too
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A `receive` that gives the body read once, then waits on the real one (for
    `http.disconnect`)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def guarded_h11(header_timeout: float) -> type[H11Protocol]:
    """uvicorn's h11 protocol that closes a connection whose request head (request line
    and headers) is not complete within `header_timeout` seconds of its first byte or of
    the connection."""

    class GuardedH11(H11Protocol):
        def __init__(
            self,
            config: Config,
            server_state: ServerState,
            app_state: dict[str, Any],
            _loop: asyncio.AbstractEventLoop | None = None,
        ) -> None:
            super().__init__(config, server_state, app_state, _loop)
            self.head_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def data_received(self, data: bytes) -> None:
            if self.conn.their_state is h11.IDLE:
                self._arm()  # a new request begins on a kept-alive connection
            super().data_received(data)
            if self.conn.their_state is not h11.IDLE:  # the head is complete
                self._disarm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            if self.head_timer is None:
                self.head_timer = self.loop.call_later(header_timeout, self._expired)

        def _disarm(self) -> None:
            if self.head_timer is not None:
                self.head_timer.cancel()
                self.head_timer = None

        def _expired(self) -> None:
            self.head_timer = None
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                self.transport.close()

    return GuardedH11
