"""Client of the manager's HTTP API (`client.api.ManagerClient`)."""

from hyperwall.client.api import (
    AssertionsFailed,
    ClientError,
    Invalid,
    ManagerClient,
    NotAllowed,
    NotFound,
    ServerError,
    StoreUnavailable,
    Unreachable,
)

__all__ = [
    "AssertionsFailed",
    "ClientError",
    "Invalid",
    "ManagerClient",
    "NotAllowed",
    "NotFound",
    "ServerError",
    "StoreUnavailable",
    "Unreachable",
]
