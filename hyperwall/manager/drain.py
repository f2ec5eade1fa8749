"""Answer open long-polls when the manager shuts down, so it stops at once.

An agent's long-poll (`GET /v1/agent/{host}/desired?wait=...`) may be open for up to 60 s;
uvicorn's graceful shutdown waits for open requests, so without this a `SIGTERM` would take
as long as the longest poll (or the grace timeout). `LongPollDrain` runs each such request
in its own task; when `Drain` is set (by `server.ManagerServer` as shutdown begins) every
long-poll that has not started its answer is cancelled and answered 204, "nothing newer
yet", which agents already treat as "ask again" (they then find the manager gone and retry
with backoff). Only these reads are cut short: they change nothing, so cancelling them is
safe; every other request runs to its end (within uvicorn's grace timeout).
"""

from __future__ import annotations

import asyncio

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class Drain:
    """Set once, when the server starts shutting down."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def set(self) -> None:
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()

    async def wait(self) -> None:
        await self._event.wait()


def is_long_poll(scope: Scope) -> bool:
    path: str = scope.get("path", "")
    return (
        scope["type"] == "http"
        and scope.get("method") == "GET"
        and path.startswith("/v1/agent/")
        and path.endswith("/desired")
    )


class LongPollDrain:
    """ASGI middleware: long-polls end with 204 as soon as `drain` is set."""

    def __init__(self, app: ASGIApp, drain: Drain) -> None:
        self.app = app
        self.drain = drain

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not is_long_poll(scope):
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        request = asyncio.ensure_future(self.app(scope, receive, tracking_send))
        stopping = asyncio.ensure_future(self.drain.wait())
        try:
            await asyncio.wait({request, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if not request.done() and not started:
                request.cancel()
            await asyncio.wait({request})  # its outcome is read below; ours propagates
        finally:
            stopping.cancel()
            request.cancel()  # if we were cancelled ourselves (uvicorn's grace timeout)
        if request.cancelled() and not started:
            await send({"type": "http.response.start", "status": 204, "headers": []})
            await send({"type": "http.response.body", "body": b""})
        else:
            request.result()  # re-raise what the application raised
