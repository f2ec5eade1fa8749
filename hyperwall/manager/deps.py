"""FastAPI dependencies: the running `Manager` and the authenticated caller."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from hyperwall.manager.auth import Principal, authenticate
from hyperwall.manager.limits import PRINCIPAL
from hyperwall.manager.service import Manager

_bearer = HTTPBearer(auto_error=False, description="an API token (hyperwall token create)")


def manager_of(request: Request) -> Manager:
    manager = request.app.state.manager
    assert isinstance(manager, Manager)
    return manager


async def principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    known = request.scope.get("state", {}).get(PRINCIPAL)
    if isinstance(known, Principal):  # authenticated by the request guard (limits.py)
        return known
    header = f"Bearer {credentials.credentials}" if credentials else None
    return await authenticate(manager_of(request).store, header)


Who = Annotated[Principal, Depends(principal)]
Mgr = Annotated[Manager, Depends(manager_of)]
