"""A small synchronous httpx client of the manager API; each failure is a typed error the
CLI maps to an exit code (Invalid 2, NotAllowed 3, Unreachable 4 (also StoreUnavailable, a
503: the manager is up but its store is not), others 1)."""

from __future__ import annotations

import ssl
from typing import Any

import httpx


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


class ManagerClient:
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

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
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
        if status >= 400:
            raise ServerError(f"HTTP {status}: {_reason(response)}")
        return None if status == 204 or not response.content else response.json()

    # -- operations -----------------------------------------------------------------------

    def apply(self, documents: list[Any], message: str = "", dry_run: bool = False) -> Any:
        body = {"documents": documents, "message": message, "dryRun": dry_run}
        return self.request("POST", "/v1/apply", json=body)

    def diff(self, documents: list[Any]) -> Any:
        return self.request("POST", "/v1/diff", json={"documents": documents})

    def documents(
        self, kind: str | None = None, tenant: str | None = None, selector: str | None = None
    ) -> Any:
        pairs = (("kind", kind), ("tenant", tenant), ("selector", selector))
        return self.request("GET", "/v1/documents", params={k: v for k, v in pairs if v})

    def document(self, kind: str, name: str, tenant: str | None = None) -> Any:
        params = {"tenant": tenant} if tenant else {}
        return self.request("GET", f"/v1/documents/{kind}/{name}", params=params)

    def delete(self, kind: str, name: str, tenant: str | None = None, message: str = "") -> Any:
        params = {k: v for k, v in (("tenant", tenant), ("message", message)) if v}
        return self.request("DELETE", f"/v1/documents/{kind}/{name}", params=params)

    def history(self, limit: int = 50, before: int | None = None) -> Any:
        params: dict[str, int] = {"limit": limit}
        if before is not None:
            params["before"] = before
        return self.request("GET", "/v1/history", params=params)

    def revision(self, number: int) -> Any:
        return self.request("GET", f"/v1/revisions/{number}")

    def rollback(self, number: int, message: str | None = None) -> Any:
        return self.request("POST", f"/v1/rollback/{number}", json={"message": message})

    def status(self) -> Any:
        return self.request("GET", "/v1/status")

    def create_token(self, role: str, tenant: str | None = None, host: str | None = None) -> Any:
        body = {"role": role, "tenant": tenant, "host": host}
        return self.request("POST", "/v1/tokens", json=body)

    def tokens(self) -> Any:
        return self.request("GET", "/v1/tokens")

    def revoke_token(self, token_id: str) -> None:
        self.request("DELETE", f"/v1/tokens/{token_id}")

    # -- agent side (used by tests and tools) ----------------------------------------------

    def desired(self, host: str, after: int = 0, wait: float = 0) -> Any:
        params = {"after": after, "wait": wait}
        return self.request("GET", f"/v1/agent/{host}/desired", params=params)

    def report(self, host: str, body: dict[str, Any]) -> None:
        self.request("PUT", f"/v1/agent/{host}/status", json=body)

    def report_inventory(self, host: str, workloads: list[dict[str, Any]]) -> None:
        self.request("PUT", f"/v1/agent/{host}/inventory", json={"workloads": workloads})
