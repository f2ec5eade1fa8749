"""Bearer tokens and roles: who is calling, and may they do this.

Tokens are random secrets shown once; the store keeps only their SHA-256. Roles:
provider-admin (everything), tenant-admin (its tenant's documents; provider documents
read-only), auditor (read-only), agent (only `/v1/agent/{its host}/*`).
"""

from __future__ import annotations

import logging
import secrets
import time
from dataclasses import dataclass

from hyperwall.policy.documents import check_name, shown
from hyperwall.store import Store, TokenRecord, sha256_hex

log = logging.getLogger("hyperwall.manager.auth")

PROVIDER_ADMIN = "provider-admin"
TENANT_ADMIN = "tenant-admin"
AUDITOR = "auditor"
AGENT = "agent"
ROLES = (PROVIDER_ADMIN, TENANT_ADMIN, AUDITOR, AGENT)


class Refused(Exception):
    """A request the caller may not make: 401 (who are you) or 403 (not allowed)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Principal:
    token_id: str
    role: str
    tenant: str | None
    host: str | None

    @property
    def identity(self) -> str:
        scope = self.tenant or self.host
        return f"{self.role}{'@' + scope if scope else ''}:{self.token_id}"

    # -- documents ------------------------------------------------------------------------

    def can_read_documents(self) -> bool:
        return self.role in (PROVIDER_ADMIN, TENANT_ADMIN, AUDITOR)

    def can_see(self, tenant: str | None) -> bool:
        """May read a document of `tenant` (None = provider scope)."""
        if self.role in (PROVIDER_ADMIN, AUDITOR):
            return True
        return self.role == TENANT_ADMIN and (tenant is None or tenant == self.tenant)

    def write_refusal(self, tenant: str | None) -> str | None:
        """Why this caller may not write a document of `tenant`; None if it may."""
        if self.role == PROVIDER_ADMIN:
            return None
        if self.role != TENANT_ADMIN:
            return f"role {self.role} may not change documents"
        if tenant is None:
            return "provider-scope documents are read-only for tenant-admin"
        if tenant != self.tenant:
            return f"tenant-admin of {self.tenant!r} may not change documents of tenant {tenant!r}"
        return None

    def require(self, allowed: tuple[str, ...], what: str) -> None:
        if self.role not in allowed:
            raise Refused(403, f"role {self.role} may not {what}")

    def require_agent_of(self, host: str) -> None:
        if self.role == PROVIDER_ADMIN:
            return
        if self.role != AGENT:
            raise Refused(403, f"role {self.role} may not use agent endpoints")
        if self.host != host:
            raise Refused(403, f"agent token of host {self.host!r} may not act for host {host!r}")


def principal_of(record: TokenRecord) -> Principal:
    return Principal(record.id, record.role, record.tenant, record.host)


async def authenticate(store: Store, authorization: str | None) -> Principal:
    if not authorization:
        raise Refused(401, "missing bearer token (Authorization: Bearer TOKEN)")
    scheme, _, secret = authorization.partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        raise Refused(401, "malformed Authorization header; expected 'Bearer TOKEN'")
    record = await store.token_by_hash(sha256_hex(secret.strip()))
    if record is None:
        raise Refused(401, "unknown or revoked token")
    if record.expires is not None and record.expires <= time.time():
        raise Refused(401, "expired token")
    return principal_of(record)


def check_token_request(role: str, tenant: str | None, host: str | None) -> tuple[str, str] | None:
    """(field, why) if a token with these attributes cannot exist; None if it can. The
    tenant and host must be valid names (as in documents); whether the tenant exists is
    the caller's check."""
    if role not in ROLES:
        return "role", f"unknown role {shown(role)}; one of {', '.join(ROLES)}"
    for what, value in (("tenant", tenant), ("host", host)):
        if value is not None:
            try:
                check_name(value)
            except ValueError as exc:
                return what, str(exc)
    if role == TENANT_ADMIN and not tenant:
        return "tenant", "a tenant-admin token needs a tenant"
    if role == AGENT and not host:
        return "host", "an agent token needs a host"
    if role != TENANT_ADMIN and tenant:
        return "tenant", f"role {role} takes no tenant"
    if role != AGENT and host:
        return "host", f"role {role} takes no host"
    return None


async def create_token(
    store: Store,
    role: str,
    tenant: str | None = None,
    host: str | None = None,
    expires_in: float | None = None,
) -> tuple[TokenRecord, str]:
    """A new token: the stored record and the secret (shown once, never stored); it is
    refused like a revoked one from `expires_in` seconds on (None: never)."""
    secret = "hw_" + secrets.token_urlsafe(32)
    now = time.time()
    expires = None if expires_in is None else now + expires_in
    record = TokenRecord(secrets.token_hex(8), sha256_hex(secret), role, tenant, host, now, expires)
    await store.put_token(record)
    return record, secret
