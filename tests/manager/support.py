"""Small documents and HTTP helpers for the manager tests."""

from __future__ import annotations

from typing import Any

import httpx


def group(name: str, tenant: str | None = "acme", **spec: Any) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name}
    if tenant is not None:
        metadata["tenant"] = tenant
    return {
        "apiVersion": "hyperwall.io/v1",
        "kind": "Group",
        "metadata": metadata,
        "spec": spec or {"cidrs": ["192.0.2.0/24"]},
    }


def call(
    url: str, token: str | None, method: str, path: str, json: Any = None, **params: Any
) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.request(
        method, url + path, headers=headers, json=json, params=params or None, timeout=30
    )


def assertion(
    name: str, source: str, destination: str, service: str, expect: str, description: str = ""
) -> dict[str, Any]:
    """An acme Assertion from one group to another on one service."""
    return {
        "apiVersion": "hyperwall.io/v1",
        "kind": "Assertion",
        "metadata": {"name": name, "tenant": "acme"},
        "spec": {
            "description": description or f"{source} to {destination} on {service}: {expect}",
            "from": [{"group": source}],
            "to": [{"group": destination}],
            "services": [service],
            "expect": expect,
        },
    }
