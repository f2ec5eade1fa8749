"""Store failures map to clear JSON answers, and the client maps those to its errors."""

from __future__ import annotations

import pytest
from fastapi import FastAPI

from hyperwall.client import ManagerClient, NotFound, ServerError, StoreUnavailable, Unreachable
from hyperwall.manager import errors
from hyperwall.store import Compacted, Conflict, Unavailable, UnknownRevision

pytestmark = pytest.mark.filterwarnings("ignore:Using .httpx. with .starlette.testclient.")


def failing_app() -> FastAPI:
    app = FastAPI()
    errors.install(app)
    raised = {
        "down": Unavailable("etcd is down"),
        "conflict": Conflict(1, 2),
        "compacted": Compacted(1, 5),
        "unknown": UnknownRevision("no revision 9"),
    }

    @app.get("/{what}")
    async def fail(what: str) -> None:
        raise raised[what]

    return app


@pytest.mark.parametrize(
    ("what", "status", "error"),
    [
        ("down", 503, StoreUnavailable),
        ("conflict", 409, ServerError),
        ("compacted", 410, ServerError),
        ("unknown", 404, NotFound),
    ],
)
def test_store_errors(what: str, status: int, error: type[Exception]) -> None:
    from fastapi.testclient import TestClient  # here: its deprecation warning is filtered

    client = ManagerClient("http://manager", "t")
    client.http = TestClient(failing_app(), base_url="http://manager")
    with pytest.raises(error):
        client.request("GET", f"/{what}")
    if error is StoreUnavailable:  # a kind of Unreachable: the CLI exits 4
        assert issubclass(error, Unreachable)
    response = client.http.get(f"/{what}")
    assert response.status_code == status and response.json()["error"]
