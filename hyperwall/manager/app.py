"""The FastAPI application: routes for people and tools (`/v1/...`) and for agents
(`/v1/agent/{host}/...`). Every route but `/healthz` needs a bearer token."""

from __future__ import annotations

import logging
import os
import pathlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Path, Query
from fastapi.responses import JSONResponse

from hyperwall.manager import errors
from hyperwall.manager.agent_routes import router as agent_router
from hyperwall.manager.audit_routes import router as audit_router
from hyperwall.manager.auth import (
    AUDITOR,
    PROVIDER_ADMIN,
    TENANT_ADMIN,
    Principal,
    Refused,
    create_token,
)
from hyperwall.manager.deps import Mgr, Who
from hyperwall.manager.documents import key_json, matches, normalize_kind, request_error
from hyperwall.manager.drain import Drain, LongPollDrain
from hyperwall.manager.flow_routes import router as flow_router
from hyperwall.manager.flow_store import FlowsConfig, open_flows
from hyperwall.manager.limits import Limits, RequestGuard
from hyperwall.manager.metrics import ManagerMetrics
from hyperwall.manager.metrics import router as metrics_router
from hyperwall.manager.migration_routes import router as migration_router
from hyperwall.manager.reach_routes import router as reach_router
from hyperwall.manager.service import Manager, revision_json
from hyperwall.manager.stats_routes import agent_router as stats_agent_router
from hyperwall.manager.stats_routes import router as stats_router
from hyperwall.manager.token_routes import router as token_router
from hyperwall.manager.trace_routes import agent_router as trace_agent_router
from hyperwall.manager.trace_routes import router as trace_router
from hyperwall.manager_api import (
    MAX_MESSAGE,
    ApplyRequest,
    ApplyResult,
    DiffRequest,
    DiffResult,
    DocumentsBody,
    ErrorBody,
    IssuesBody,
    RevisionDetail,
    RevisionHeader,
    RollbackRequest,
    RollbackResult,
    StatusBody,
)
from hyperwall.policy.selector import MAX_LENGTH as MAX_SELECTOR
from hyperwall.store import DocKey, Store, open_store

log = logging.getLogger("hyperwall.manager")

READERS = (PROVIDER_ADMIN, TENANT_ADMIN, AUDITOR)
KindPath = Annotated[str, Path(max_length=64)]
NamePath = Annotated[str, Path(max_length=63)]
TenantQuery = Annotated[str | None, Query(max_length=63)]
MAX_REVISION = 2**62

ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "no, unknown, revoked or expired token"},
    403: {"model": ErrorBody, "description": "the token's role may not do this"},
    408: {"model": ErrorBody, "description": "the body was not received in time"},
    413: {"model": ErrorBody, "description": "the body is too large"},
    422: {"model": IssuesBody, "description": "invalid input; every issue listed"},
    503: {"model": ErrorBody, "description": "the store is unreachable"},
}


NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorBody, "description": "no such document or revision"}
}
CONFLICT: dict[int | str, dict[str, Any]] = {
    409: {"model": ErrorBody, "description": "a concurrent revision changed these documents"}
}
GONE: dict[int | str, dict[str, Any]] = {
    410: {"model": ErrorBody, "description": "the revision was compacted"}
}


async def bootstrap_token(store: Store, path: pathlib.Path) -> bool:
    """Write a provider-admin token to `path` (mode 0600) if the store has no tokens."""
    if await store.has_tokens():
        return False
    _, secret = await create_token(store, PROVIDER_ADMIN)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, (secret + "\n").encode())
    finally:
        os.close(fd)
    log.warning("bootstrap: wrote a provider-admin token to %s", path)
    return True


def create_app(
    store_url: str,
    bootstrap_token_file: pathlib.Path | None = None,
    limits: Limits = Limits(),
    flows: FlowsConfig | None = None,
) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        store = await open_store(store_url)
        if bootstrap_token_file is not None:
            await bootstrap_token(store, bootstrap_token_file)
        manager = Manager(store)
        await manager.start()
        app.state.manager = manager
        app.state.flows = await open_flows(flows, store_url)
        try:
            yield
        finally:
            await manager.stop()
            if app.state.flows is not None:
                await app.state.flows.close()

    app = FastAPI(
        title="hyperwall manager",
        version="1",
        description="Control plane of hyperwall: versioned policy documents, host status, "
        "tokens. See docs/design/manager.md.",
        lifespan=lifespan,
        responses=ERRORS,
    )
    errors.install(app)
    drain = Drain()
    app.state.drain = drain
    app.state.metrics = ManagerMetrics()
    app.add_middleware(RequestGuard, limits=limits)
    app.add_middleware(LongPollDrain, drain=drain)
    app.include_router(router)
    app.include_router(token_router)
    app.include_router(agent_router)
    app.include_router(stats_router)
    app.include_router(stats_agent_router)
    app.include_router(flow_router)
    app.include_router(metrics_router)
    app.include_router(audit_router)
    app.include_router(reach_router)
    app.include_router(migration_router)
    app.include_router(trace_router)
    app.include_router(trace_agent_router)
    return app


router = APIRouter(prefix="/v1")


@router.get("/healthz", tags=["meta"])
async def healthz(manager: Mgr) -> dict[str, int]:
    """Liveness, and the last revision the manager has processed; no token needed."""
    return {"revision": max(manager.fleet.revision, 0)}


@router.post("/apply", response_model=ApplyResult, tags=["documents"], responses=CONFLICT)
async def apply(body: ApplyRequest, who: Who, manager: Mgr) -> dict[str, Any]:
    """Upsert documents by (kind, tenant, name), all or nothing: the whole resulting set must
    validate. One new revision, or none (`created: false`) if nothing changes."""
    who.require((PROVIDER_ADMIN, TENANT_ADMIN), "change documents")
    if body.dryRun:
        plan = await manager.plan(who, body.documents, [])
        return {"revision": plan.base, "created": False, "dryRun": True, **plan.to_json()}
    plan, info = await manager.change(who, body.documents, [], body.message)
    revision = info.number if info else plan.base
    return {"revision": revision, "created": info is not None, **plan.to_json()}


@router.post("/diff", response_model=DiffResult, tags=["documents"])
async def diff(body: DiffRequest, who: Who, manager: Mgr) -> dict[str, Any]:
    """What applying these documents would change, and which hosts' programs."""
    who.require(READERS, "compute diffs")
    plan = await manager.plan(_as_writer(who), body.documents, [])
    return plan.to_json()


def _as_writer(who: Principal) -> Principal:
    """Diff is read-only: an auditor may see what a change would do (as provider-admin
    would), a tenant-admin only within its own write scope."""
    if who.role == AUDITOR:
        return Principal(who.token_id, PROVIDER_ADMIN, None, None)
    return who


@router.get("/documents", response_model=DocumentsBody, tags=["documents"])
async def list_documents(
    who: Who,
    manager: Mgr,
    kind: Annotated[str | None, Query(max_length=64)] = None,
    tenant: Annotated[
        str | None, Query(max_length=63, description="tenant name; '-' = provider")
    ] = None,
    selector: Annotated[
        str | None, Query(max_length=MAX_SELECTOR, description="label selector")
    ] = None,
) -> dict[str, Any]:
    """Documents the caller may see, filtered by kind, tenant and label selector."""
    who.require(READERS, "read documents")
    wanted = normalize_kind(kind) if kind else None
    revision, docs = await manager.visible_documents(who)
    out = [
        doc
        for key, doc in sorted(docs.items(), key=lambda kv: kv[0].sort_key())
        if matches(key, doc, wanted, tenant, selector)
    ]
    return {"revision": revision, "documents": out}


def _key(kind: str, name: str, tenant: str | None) -> DocKey:
    try:
        return DocKey(normalize_kind(kind), tenant or None, name)
    except ValueError as exc:
        raise request_error(str(exc)) from None


@router.get("/documents/{kind}/{name}", tags=["documents"], responses=NOT_FOUND)
async def get_document(
    kind: KindPath, name: NamePath, who: Who, manager: Mgr, tenant: TenantQuery = None
) -> Any:
    """One document."""
    who.require(READERS, "read documents")
    key = _key(kind, name, tenant)
    _, docs = await manager.visible_documents(who)
    if key not in docs:
        return _not_found(key)
    return docs[key]


def _not_found(key: DocKey) -> Any:
    return JSONResponse({"error": f"no {key}"}, status_code=404)


@router.delete(
    "/documents/{kind}/{name}",
    response_model=ApplyResult,
    tags=["documents"],
    responses={**NOT_FOUND, **CONFLICT},
)
async def delete_document(
    kind: KindPath,
    name: NamePath,
    who: Who,
    manager: Mgr,
    tenant: TenantQuery = None,
    message: Annotated[str, Query(max_length=MAX_MESSAGE)] = "",
) -> Any:
    """Delete one document as a new revision; the remaining set must still validate."""
    who.require((PROVIDER_ADMIN, TENANT_ADMIN), "change documents")
    key = _key(kind, name, tenant)
    reason = who.write_refusal(key.tenant)
    if reason is not None:
        raise Refused(403, f"{key}: {reason}")
    _, docs = await manager.visible_documents(who)
    if key not in docs:
        return _not_found(key)
    plan, info = await manager.change(who, [], [key], message or f"delete {key}")
    revision = info.number if info else plan.base
    return {"revision": revision, "created": info is not None, **plan.to_json()}


@router.get("/history", response_model=list[RevisionHeader], tags=["revisions"])
async def history(
    who: Who,
    manager: Mgr,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    before: Annotated[int | None, Query(ge=1, le=MAX_REVISION)] = None,
) -> list[dict[str, Any]]:
    """Revisions newest first."""
    who.require(READERS, "read history")
    infos = await manager.store.history(limit, before)
    return [_visible(who, revision_json(i)) for i in infos]


HIDDEN_AUTHOR = "another tenant"


def _visible(who: Principal, entry: dict[str, Any]) -> dict[str, Any]:
    """A revision as `who` may see it: the keys it may read; the author and message only
    if it may read every key the revision changed (a message names what it changed)."""
    hidden = 0
    for field in ("added", "changed", "removed"):
        keys = entry[field]
        entry[field] = [k for k in keys if who.can_see(k["tenant"])]
        hidden += len(keys) - len(entry[field])
    if hidden:
        shown = sum(len(entry[f]) for f in ("added", "changed", "removed"))
        entry["author"] = HIDDEN_AUTHOR
        entry["message"] = (
            "a revision that also changed other tenants' documents"
            if shown
            else "a revision by another tenant"
        )
    return entry


@router.get(
    "/revisions/{number}",
    response_model=RevisionDetail,
    tags=["revisions"],
    responses={**NOT_FOUND, **GONE},
)
async def revision(
    number: Annotated[int, Path(ge=1, le=MAX_REVISION)], who: Who, manager: Mgr
) -> dict[str, Any]:
    """One revision with the before/after of every document it changed."""
    who.require(READERS, "read history")
    rev = await manager.store.revision_info(number)
    changes = [
        {**key_json(c.key), "before": c.before, "after": c.after}
        for c in rev.changes
        if who.can_see(c.key.tenant)
    ]
    return {**_visible(who, revision_json(rev.info)), "changes": changes}


@router.post(
    "/rollback/{number}",
    response_model=RollbackResult,
    tags=["revisions"],
    responses={**NOT_FOUND, **CONFLICT, **GONE},
)
async def rollback(
    number: Annotated[int, Path(ge=0, le=MAX_REVISION)],
    who: Who,
    manager: Mgr,
    body: RollbackRequest | None = None,
) -> dict[str, Any]:
    """Commit the documents of revision `number` as a new revision."""
    who.require((PROVIDER_ADMIN,), "roll back")
    return await manager.rollback(who, number, body.message if body else None)


@router.get("/status", response_model=StatusBody, tags=["hosts"])
async def status(who: Who, manager: Mgr) -> dict[str, Any]:
    """Per host: what it reported (revision, program hash, errors, when) and its state."""
    who.require(READERS, "read status")
    return await manager.status()


def drain_of(app: FastAPI) -> Drain:
    """The app's shutdown signal for open long-polls (`drain.py`)."""
    drain = app.state.drain
    assert isinstance(drain, Drain)
    return drain


__all__ = ["bootstrap_token", "create_app", "drain_of"]
