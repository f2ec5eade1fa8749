"""Every refused or failed request answers JSON: 401/403 {"error"}, 422 {"errors": [...]}."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from hyperwall.manager.auth import Refused
from hyperwall.manager.documents import BadRequest
from hyperwall.manager.gate import AssertionsBroken
from hyperwall.manager.service import Overlap
from hyperwall.store import (
    Compacted,
    Conflict,
    InvalidDocument,
    TooLarge,
    Unavailable,
    UnknownRevision,
)

log = logging.getLogger("hyperwall.manager.auth")


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def install(app: FastAPI) -> None:
    @app.exception_handler(Refused)
    async def refused(request: Request, exc: Refused) -> JSONResponse:
        client = request.client.host if request.client else "?"
        log.warning("refused %s %s from %s: %s", request.method, request.url.path, client, exc)
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return JSONResponse({"error": exc.reason}, status_code=exc.status, headers=headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        """Starlette's own answers (404, 405) as `{"error"}`; a 405 names every method
        the path takes (Starlette names only the first matching route's)."""
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            headers["Allow"] = ", ".join(sorted(allowed_methods(request)))
        return JSONResponse({"error": str(exc.detail)}, exc.status_code, headers=headers)

    @app.exception_handler(AssertionsBroken)
    async def broken(request: Request, exc: AssertionsBroken) -> JSONResponse:
        return JSONResponse(exc.to_json(), status_code=409)

    @app.exception_handler(BadRequest)
    async def bad(request: Request, exc: BadRequest) -> JSONResponse:
        return JSONResponse({"errors": exc.errors}, status_code=422)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {
                "file": "request",
                "document": 0,
                "path": ".".join(str(p) for p in e.get("loc", ())),
                "message": str(e.get("msg", "")),
                "expected": "",
            }
            for e in exc.errors()
        ]
        return JSONResponse({"errors": errors}, status_code=422)

    statuses: list[tuple[type[Exception], int]] = [
        (Unavailable, 503),
        (Conflict, 409),
        (Overlap, 409),
        (Compacted, 410),
        (UnknownRevision, 404),
        (InvalidDocument, 422),
        (TooLarge, 413),
    ]
    for cls, status in statuses:
        app.add_exception_handler(cls, _handler(status))


def allowed_methods(request: Request) -> set[str]:
    """The methods some route of the app answers for this path."""
    methods: set[str] = set()
    for method in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"):
        scope = {**request.scope, "method": method}
        if any(route.matches(scope)[0] is Match.FULL for route in request.app.router.routes):
            methods.add(method)
    return methods


def _handler(status: int) -> Callable[[Request, Exception], Awaitable[JSONResponse]]:
    async def handle(request: Request, exc: Exception) -> JSONResponse:
        if status == 422:
            return JSONResponse(
                {
                    "errors": [
                        {
                            "file": "request",
                            "document": 0,
                            "path": "",
                            "message": str(exc),
                            "expected": "",
                        }
                    ]
                },
                status_code=422,
            )
        return _error(status, str(exc))

    return handle
