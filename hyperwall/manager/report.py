"""The compliance report's content, assembled by the manager for `GET /v1/report`: the
assertions and the reachability matrix over the current catalog (`manager.compliance`), the
ledger's history of every document the verdicts rest on, and the ledger's verification.
Rendering to HTML/PDF is the client's (`hyperwall.report`).

Who may ask: provider-admins and auditors for any tenant or the whole fleet; a tenant-admin
for its own tenant only (history filtered as `GET /v1/audit` filters it).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from hyperwall.manager import audit
from hyperwall.manager.auth import TENANT_ADMIN, Principal, Refused
from hyperwall.manager.compliance import compliance
from hyperwall.manager.service import Manager
from hyperwall.store import DocKey

HISTORY_PER_DOCUMENT = 20  # newest records listed per document


async def build_report(
    manager: Manager, who: Principal, tenant: str | None, with_lint: bool = True
) -> dict[str, Any]:
    if who.role == TENANT_ADMIN:
        if tenant not in (None, who.tenant):
            raise Refused(403, f"tenant-admin of {who.tenant!r} may not report on {tenant!r}")
        tenant = who.tenant
    revision, _, catalog = await manager.current_catalog()
    if tenant is not None and tenant not in catalog.config.tenants:
        raise Refused(404, f"no tenant {tenant!r}")
    found = await asyncio.to_thread(compliance, catalog, tenant, with_lint)
    wanted = {DocKey(kind, t, name) for kind, t, name in found.documents}
    history = await _history(manager, who, wanted)
    return {
        "tenant": tenant,
        "revision": revision,
        "generated": time.time(),
        "ledger": await audit.verification(manager.store, who),
        "assertions": found.assertions,
        "groups": found.groups,
        "matrix": found.matrix,
        "groupsLeftOut": found.groups_left_out,
        "history": history,
        "lint": found.lint if with_lint else None,
    }


async def _history(manager: Manager, who: Principal, wanted: set[DocKey]) -> list[dict[str, Any]]:
    """For each wanted document, the ledger records that changed it, newest first."""
    by_key: dict[DocKey, list[dict[str, Any]]] = {k: [] for k in wanted}
    for stored in reversed(await manager.store.ledger()):
        shown = audit.record_json(stored, who)
        if shown is None:
            continue
        for change in shown["changes"]:
            key = DocKey(change["kind"], change["tenant"], change["name"])
            records = by_key.get(key)
            if records is not None and len(records) < HISTORY_PER_DOCUMENT:
                records.append(
                    {
                        "revision": shown["revision"],
                        "time": shown["time"],
                        "actor": shown["actor"],
                        "author": shown["author"],
                        "message": shown["message"],
                        "action": change["action"],
                    }
                )
    return [
        {"kind": k.kind, "tenant": k.tenant, "name": k.name, "records": by_key[k]}
        for k in sorted(by_key, key=DocKey.sort_key)
    ]
