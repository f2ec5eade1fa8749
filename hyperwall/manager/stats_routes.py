"""Hit counter endpoints: agents report their per-rule totals (`PUT /v1/agent/H/hits`),
readers ask for the fleet's sums (`GET /v1/stats`, what `hyperwall stats` prints).

RBAC as for documents, narrower: provider-admin and auditor see every rule; a tenant-admin
sees its tenant's rules and default only (a provider rule's hits count every tenant's
traffic, so they are not shown to one tenant). An agent token of host H may report only
for H. See `manager.stats` for how reports are kept and summed.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from hyperwall.manager.auth import AUDITOR, PROVIDER_ADMIN, TENANT_ADMIN
from hyperwall.manager.deps import Mgr, Who
from hyperwall.manager.stats import HitBoard, HostHits, rows

MAX_RULES = 250_000  # rules in one report
MAX_KEY = 1024  # characters of a rule key


class RuleHitsReport(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")
    packets: int = Field(ge=0, le=2**63)
    bytes: int = Field(ge=0, le=2**63)
    lastHit: float | None = Field(None, ge=0, allow_inf_nan=False)


class HitsReport(BaseModel):
    """A host's totals per rule key (`agent.hits.HitTracker.report`): only rules ever hit."""

    model_config = ConfigDict(strict=True, extra="forbid")
    read: float = Field(ge=0, allow_inf_nan=False, description="when the host read its counters")
    rules: dict[Annotated[str, Field(max_length=MAX_KEY)], RuleHitsReport] = Field(
        max_length=MAX_RULES
    )


class StatsRow(BaseModel):
    rule: str
    tenant: str | None
    policy: str | None
    packets: int
    bytes: int
    lastHit: float | None
    hosts: int


class StatsBody(BaseModel):
    revision: int
    hosts: dict[str, float] = Field(description="reporting host -> when it read its counters")
    rules: list[StatsRow]


agent_router = APIRouter(prefix="/v1/agent/{host}", tags=["agent"])
router = APIRouter(prefix="/v1", tags=["stats"])


def board_of(manager: Any) -> HitBoard:
    """The manager's hit board (made on first use)."""
    board = getattr(manager, "hits", None)
    if not isinstance(board, HitBoard):
        board = manager.hits = HitBoard()
    return board


@agent_router.put("/hits", status_code=204, response_class=Response)
async def put_hits(host: str, body: HitsReport, who: Who, manager: Mgr) -> None:
    """The host's per-rule hit totals (replaces its previous report)."""
    who.require_agent_of(host)
    rules = {k: (v.packets, v.bytes, v.lastHit) for k, v in body.rules.items()}
    board_of(manager).put(host, HostHits(body.read, rules))


@router.get("/stats", response_model=StatsBody)
async def stats(
    who: Who,
    manager: Mgr,
    tenant: Annotated[str | None, Query(max_length=255)] = None,
    policy: Annotated[
        str | None, Query(max_length=512, description="tenant/name, or a name with tenant")
    ] = None,
    unused: Annotated[
        float | None,
        Query(ge=0, le=36500, allow_inf_nan=False, description="only rules not hit in DAYS"),
    ] = None,
) -> dict[str, Any]:
    """Hits per rule of the current policy, summed over the hosts."""
    who.require((PROVIDER_ADMIN, TENANT_ADMIN, AUDITOR), "read hit counters")

    def visible(owner: str | None) -> bool:
        return who.role in (PROVIDER_ADMIN, AUDITOR) or (owner is not None and owner == who.tenant)

    if policy is not None and "/" not in policy and tenant is not None:
        policy = f"{tenant}/{policy}"
    view = manager.fleet.tracker.view
    board = board_of(manager).hosts
    found = rows(
        board,
        view.catalog if view is not None else None,
        visible=visible,
        tenant=tenant,
        policy=policy,
        unused_days=unused,
        now=time.time(),
    )
    return {
        "revision": view.revision if view is not None else -1,
        "hosts": {h: r.read for h, r in sorted(board.items())},
        "rules": [r.to_json() for r in found],
    }
