"""Token endpoints: create, list and revoke API tokens (provider-admin only).

A token's secret exists only in the answer to its creation; the store keeps its SHA-256,
and a listing shows neither. Every request authenticates against the store (no cache), so
a revoked token is refused (401) from the next request on. The last provider-admin token
cannot be revoked: without one nobody could create tokens again.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Response
from fastapi.responses import JSONResponse

from hyperwall.manager.auth import PROVIDER_ADMIN, check_token_request, create_token
from hyperwall.manager.deps import Mgr, Who
from hyperwall.manager.documents import request_error
from hyperwall.manager_api import ErrorBody, TokenCreated, TokenInfo, TokenRequest
from hyperwall.store import DocKey, TokenRecord

router = APIRouter(prefix="/v1/tokens", tags=["tokens"])

TokenId = Annotated[str, Path(min_length=1, max_length=64, description="the token's id")]


def token_info(record: TokenRecord) -> dict[str, Any]:
    """What may be shown of a stored token: never its secret nor its hash."""
    return {
        "id": record.id,
        "role": record.role,
        "tenant": record.tenant,
        "host": record.host,
        "created": record.created,
        "expires": record.expires,
    }


@router.post("", response_model=TokenCreated, status_code=201)
async def create(body: TokenRequest, who: Who, manager: Mgr) -> dict[str, Any]:
    """Create a token; the secret is in this answer only."""
    who.require((PROVIDER_ADMIN,), "create tokens")
    problem = check_token_request(body.role, body.tenant, body.host)
    if problem:
        raise request_error(problem[1], problem[0])
    if body.tenant is not None:
        _, docs = await manager.visible_documents(who)
        if DocKey("Tenant", None, body.tenant) not in docs:
            raise request_error(f"no Tenant {body.tenant!r}", "tenant", "an existing Tenant")
    record, secret = await create_token(
        manager.store, body.role, body.tenant, body.host, body.expiresIn
    )
    return {**token_info(record), "token": secret}


@router.get("", response_model=list[TokenInfo])
async def list_tokens(who: Who, manager: Mgr) -> list[dict[str, Any]]:
    """Every token (id, role, scope, creation time), sorted by id; no secrets or hashes."""
    who.require((PROVIDER_ADMIN,), "list tokens")
    return [token_info(r) for r in await manager.store.list_tokens()]


@router.delete(
    "/{token_id}",
    status_code=204,
    response_class=Response,
    responses={
        404: {"model": ErrorBody, "description": "no token with this id"},
        409: {"model": ErrorBody, "description": "the last provider-admin token"},
    },
)
async def revoke(token_id: TokenId, who: Who, manager: Mgr) -> Response:
    """Revoke a token: from the next request on it is refused with 401."""
    who.require((PROVIDER_ADMIN,), "revoke tokens")
    tokens = await manager.store.list_tokens()
    found = [t for t in tokens if t.id == token_id]
    if not found:
        return JSONResponse({"error": f"no token {token_id!r}"}, status_code=404)
    admins = [t for t in tokens if t.role == PROVIDER_ADMIN]
    if found[0].role == PROVIDER_ADMIN and len(admins) == 1:
        message = "the last provider-admin token cannot be revoked"
        return JSONResponse({"error": message}, status_code=409)
    if not await manager.store.delete_token(token_id):
        return JSONResponse({"error": f"no token {token_id!r}"}, status_code=404)
    return Response(status_code=204)
