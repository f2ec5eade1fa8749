"""A small synchronous httpx client of the manager API; answers are the `hyperwall.manager_api`
models, each failure is a typed error the CLI maps to an exit code (Invalid 2, NotAllowed 3,
Unreachable 4 (also StoreUnavailable, a 503: the manager is up but its store is not),
others 1)."""

from __future__ import annotations

import ssl
from typing import Any

import httpx
from pydantic import TypeAdapter

from hyperwall.manager_api import (
    ApplyResult,
    AuditRecord,
    AuditVerification,
    DiffResult,
    DocumentsBody,
    ReportBody,
    RevisionHeader,
    RollbackResult,
    StatusBody,
    TokenCreated,
    TokenInfo,
)


class ClientError(Exception):
    """A request that did not succeed."""


class Unreachable(ClientError):
    """No answer from the server (connection refused, DNS, timeout, TLS, 503)."""


class StoreUnavailable(Unreachable):
    """503: the manager answers but cannot reach its store (etcd down). A write may or may
    not have been committed if the store failed mid-request: re-running an apply is safe."""


class NotAllowed(ClientError):
    """401 or 403; the message is the server's reason."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


class Invalid(ClientError):
    """422: `errors` lists every issue as the server sent it."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__(f"{len(errors)} error(s)")
        self.errors = errors


class AssertionsFailed(ClientError):
    """409 from the assertion gate: the change would make these assertions fail; each
    entry is `{"name", "holds", "counterexample"}` as `hyperwall verify --json` prints."""

    def __init__(self, reason: str, assertions: list[dict[str, Any]]) -> None:
        super().__init__(reason)
        self.assertions = assertions


class NotFound(ClientError):
    """404."""


class ServerError(ClientError):
    """Any other failure status."""


def _reason(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text or response.reason_phrase
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return str(body["error"])
    return str(body)


def _raise_broken(response: httpx.Response) -> None:
    """Raise `AssertionsFailed` if a 409 is the assertion gate's (it lists assertions)."""
    try:
        body = response.json()
    except ValueError:
        return
    if isinstance(body, dict) and isinstance(body.get("assertions"), list):
        raise AssertionsFailed(str(body.get("error", "")), body["assertions"])


_DOCUMENT = TypeAdapter(dict[str, Any])
_HISTORY = TypeAdapter(list[RevisionHeader])
_TOKENS = TypeAdapter(list[TokenInfo])
_AUDIT = TypeAdapter(list[AuditRecord])


class ManagerClient:
    """One method per endpoint the CLI, the demo and the benchmarks use; each returns the
    answer as its `manager_api` model."""

    def __init__(
        self, server: str, token: str | None, timeout: float = 30.0, verify: bool | str = True
    ) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        tls: bool | ssl.SSLContext = (
            ssl.create_default_context(cafile=verify) if isinstance(verify, str) else verify
        )
        self.http = httpx.Client(
            base_url=server.rstrip("/"), headers=headers, timeout=timeout, verify=tls
        )

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> ManagerClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, method: str, path: str, **kwargs: Any) -> object:
        """The decoded JSON answer (None for an empty one); a failure raises its error."""
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise Unreachable(f"{self.http.base_url}: {exc or type(exc).__name__}") from None
        status = response.status_code
        if status in (401, 403):
            raise NotAllowed(status, _reason(response))
        if status == 422:
            body = response.json()
            errors = body.get("errors") if isinstance(body, dict) else None
            raise Invalid(errors if isinstance(errors, list) else [{"message": str(body)}])
        if status == 404:
            raise NotFound(_reason(response))
        if status == 503:
            raise StoreUnavailable(_reason(response))
        if status == 409:
            _raise_broken(response)
        if status >= 400:
            raise ServerError(f"HTTP {status}: {_reason(response)}")
        return None if status == 204 or not response.content else response.json()

    # -- operations -----------------------------------------------------------------------

    def apply(
        self, documents: list[dict[str, Any]], message: str = "", dry_run: bool = False
    ) -> ApplyResult:
        body = {"documents": documents, "message": message, "dryRun": dry_run}
        return ApplyResult.model_validate(self.request("POST", "/v1/apply", json=body))

    def diff(self, documents: list[dict[str, Any]]) -> DiffResult:
        body = {"documents": documents}
        return DiffResult.model_validate(self.request("POST", "/v1/diff", json=body))

    def documents(
        self, kind: str | None = None, tenant: str | None = None, selector: str | None = None
    ) -> DocumentsBody:
        pairs = (("kind", kind), ("tenant", tenant), ("selector", selector))
        params = {k: v for k, v in pairs if v}
        return DocumentsBody.model_validate(self.request("GET", "/v1/documents", params=params))

    def document(self, kind: str, name: str, tenant: str | None = None) -> dict[str, Any]:
        """One document, shaped as docs/policy.md."""
        params = {"tenant": tenant} if tenant else {}
        return _DOCUMENT.validate_python(
            self.request("GET", f"/v1/documents/{kind}/{name}", params=params)
        )

    def delete(
        self, kind: str, name: str, tenant: str | None = None, message: str = ""
    ) -> ApplyResult:
        params = {k: v for k, v in (("tenant", tenant), ("message", message)) if v}
        answer = self.request("DELETE", f"/v1/documents/{kind}/{name}", params=params)
        return ApplyResult.model_validate(answer)

    def history(self, limit: int = 50) -> list[RevisionHeader]:
        answer = self.request("GET", "/v1/history", params={"limit": limit})
        return _HISTORY.validate_python(answer)

    def audit(self, limit: int = 50, before: int | None = None) -> list[AuditRecord]:
        params = {"limit": limit, **({"before": before} if before else {})}
        return _AUDIT.validate_python(self.request("GET", "/v1/audit", params=params))

    def audit_verify(self) -> AuditVerification:
        return AuditVerification.model_validate(self.request("GET", "/v1/audit/verify"))

    def report(self, tenant: str | None = None, lint: bool = True) -> ReportBody:
        params: dict[str, str] = {"tenant": tenant} if tenant else {}
        if not lint:
            params["lint"] = "false"
        return ReportBody.model_validate(self.request("GET", "/v1/audit/report", params=params))

    def reach(self, params: dict[str, Any]) -> dict[str, Any]:
        """`GET /v1/reach` (`manager.reach_routes`): params from, to (lists), service,
        tenant, workloads, revision, between (two revisions)."""
        answer = self.request("GET", "/v1/reach", params=params)
        assert isinstance(answer, dict)
        return answer

    def rollback(self, number: int, message: str | None = None) -> RollbackResult:
        answer = self.request("POST", f"/v1/rollback/{number}", json={"message": message})
        return RollbackResult.model_validate(answer)

    def status(self) -> StatusBody:
        return StatusBody.model_validate(self.request("GET", "/v1/status"))

    def create_token(
        self,
        role: str,
        tenant: str | None = None,
        host: str | None = None,
        expires_in: int | None = None,
    ) -> TokenCreated:
        body = {"role": role, "tenant": tenant, "host": host, "expiresIn": expires_in}
        return TokenCreated.model_validate(self.request("POST", "/v1/tokens", json=body))

    def tokens(self) -> list[TokenInfo]:
        return _TOKENS.validate_python(self.request("GET", "/v1/tokens"))

    def revoke_token(self, token_id: str) -> None:
        self.request("DELETE", f"/v1/tokens/{token_id}")
